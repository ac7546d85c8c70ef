//! Products: the catalogue, its prices and its stock.
//!
//! Other domains use [`ProductService`] (orders are priced through it, and learn from it why a
//! commit refused their stock), never the repository. An order's stock is taken by the commit of
//! the transaction that inserted it, under the rule `take_stock_of_order` (migration 0021) holds;
//! orders for one product wait for that in a fair line in the api ([`stock_queue`]), a few at a
//! time in PostgreSQL.
//! Catalogue reads go through a Redis read-through cache wrapped around the repository.

pub mod model;
pub mod repository;
pub mod service;
pub mod stock_queue;

pub use model::{NewProduct, Product, ProductPatch, ProductQuery};
pub use repository::StockRefusal;
pub use service::{PricedLine, ProductService, StockChange, StockRequest};
pub use stock_queue::{StockQueue, StockTurn};
