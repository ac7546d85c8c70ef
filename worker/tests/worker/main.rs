//! Integration tests of the worker process.

mod startup;
