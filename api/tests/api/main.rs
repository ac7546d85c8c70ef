//! Integration tests of the api: real HTTP against a real server on port 0, a fresh PostgreSQL
//! database per test (`#[sqlx::test]`) and a unique Redis key prefix per test.

mod helpers;

mod errors;
mod events;
mod health;
mod idempotency;
mod migrations;
mod openapi;
mod orders;
mod products;
mod rate_limit;
mod request_id;
mod startup;
mod uploads;
mod users;
