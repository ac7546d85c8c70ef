//! Products: the catalogue, its prices and its stock.
//!
//! Other domains use [`ProductService`] (orders reserve stock through it), never the repository.
//! Catalogue reads go through a Redis read-through cache wrapped around the repository.

pub mod model;
pub mod repository;
pub mod service;

pub use model::{NewProduct, Product, ProductPatch, ProductQuery};
pub use service::{PricedLine, ProductService, Reservation, StockChange, StockRequest};
