//! Integration tests of the api: real HTTP against a real server on port 0, a fresh PostgreSQL
//! database per test (`#[sqlx::test]`) and a unique Redis key prefix per test.

mod browser;
mod helpers;

mod cluster;
mod dashboard_auth;
mod dashboard_browser;
mod dashboard_groups;
mod dashboard_live;
mod dashboard_partitions;
mod dashboard_schedules;
mod dashboard_triage;
mod database_restart;
mod deploy;
mod errors;
mod events;
mod health;
mod idempotency;
mod login_throttle;
mod metrics;
mod migrations;
mod openapi;
mod orders;
mod pgbouncer;
mod products;
mod rate_limit;
mod report_lifecycle;
mod report_schedules;
mod request_id;
mod schemathesis;
mod slow_clients;
mod startup;
mod trust;
mod two_instances;
mod uploads;
mod users;
mod webhooks;
