//! The job handlers, one file per job type, and [`register_all`], the one place that says which
//! handler runs which job type (one typed [`Registrar::handle`] call each; the queue and time
//! limit come from the type's declaration in the shop's library).
//!
//! Handlers receive ids, reload what they need, and are idempotent: a job that runs twice
//! (at-least-once delivery) does no harm, and a row that is gone is treated as done.

pub mod email;
pub mod maintenance;
pub mod report;
pub mod upload;
pub mod webhook;

pub use crate::context::JobContext;
use crate::registrar::Registrar;

/// Registers the handler of every shop job type; the registrar starts those whose queue this
/// process serves.
pub fn register_all(workers: Registrar) -> Registrar {
    workers
        .handle(email::handle)
        .handle(webhook::handle)
        .handle(report::handle)
        .handle(upload::handle)
        .handle(maintenance::handle)
}
