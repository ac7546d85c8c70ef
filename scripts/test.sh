#!/usr/bin/env bash
# The whole test suite against the real PostgreSQL and Redis on this machine.
# Each test gets a fresh database (sqlx::test creates it from DATABASE_URL) and its own Redis
# key prefix, so tests run in parallel without seeing each other.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh
ensure_postgres
ensure_redis
ensure_browser
ensure_infra_tools
ensure_schemathesis
ensure_pgbouncer
# .sqlx/ must match the queries and the migrations (builds check the SQL against it, offline).
# Before the tests, so their summary stays the last thing printed.
bash scripts/sqlx-check.sh

export DATABASE_URL="${TEST_DATABASE_URL:-postgres://$(pg_user)@127.0.0.1:5432/postgres}"
export REDIS_URL="${TEST_REDIS_URL:-redis://127.0.0.1:6379}"
# Builds live outside the clone so a fresh clone (CI) rebuilds incrementally.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/orderly-target}"

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi
