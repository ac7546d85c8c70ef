#!/usr/bin/env bash
# The benchmark, from a fresh clone: makes sure PostgreSQL, Redis, wrk and pgbench are there,
# builds the release binaries, then runs every phase (queue, pgbench, orders, system), starting
# and stopping the api and workers it measures. Figures go to standard output (JSON lines and a
# summary) and to bench/results/latest.json. Extra arguments go to orderly-bench
# (`--only queue`, `--runs 5`, `--duration 20`; see `--help`).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh
ensure_postgres
ensure_redis
ensure_command wrk wrk
ensure_command pgbench postgresql-contrib

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/orderly-target}"
# The three binaries only (not the drills' test worker).
source scripts/build-release.sh
build_release

export BENCH_PG_SERVER_URL="${BENCH_PG_SERVER_URL:-postgres://$(pg_user)@127.0.0.1:5432}"
export REDIS_URL="${BENCH_REDIS_URL:-redis://127.0.0.1:6379}"
exec "$CARGO_TARGET_DIR/release/orderly-bench" --bin-dir "$CARGO_TARGET_DIR/release" "$@"
