//! Orders: placing (stock, prices, idempotency, events in one transaction), reading, cancelling
//! and moving through the fulfilment states.
//!
//! Prices and stock come from `ProductService`; the orders domain never touches the products
//! repository.

pub mod events;
pub mod model;
pub mod repository;
pub mod service;

pub use model::{NewOrderLine, Order, OrderItem, OrderStatus};
pub use service::OrderService;
