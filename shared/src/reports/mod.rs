//! Reports: sales exports built by a worker, stored, downloaded by their owner.

pub mod events;
