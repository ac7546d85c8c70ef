//! Integration tests of the api: real HTTP against a real server on port 0, a fresh PostgreSQL
//! database per test (`#[sqlx::test]`) and a unique Redis key prefix per test.

mod helpers;

mod health;
mod webhooks;
