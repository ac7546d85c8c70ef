//! Tests of the queue engine against the real Redis: every guarantee ARCHITECTURE.md lists,
//! what the dashboard reads and does through the inspection API (`inspection`),
//! plus a model-based test that runs random operation sequences against an in-memory model.
//! Each test uses its own key prefix; tests that restart Redis start a private server.

mod helpers;

mod cluster;
mod engine;
mod group_commit;
mod groups;
mod inspection;
mod lifecycle;
mod limits;
mod model;
mod outbox;
mod partitions;
mod producer;
mod schedule;
mod sentinel;
mod unique;
mod writes;
