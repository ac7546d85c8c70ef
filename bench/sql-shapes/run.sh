#!/usr/bin/env bash
# The order's SQL alone, shape by shape: each script in this folder is one way of placing an
# order (what the api sends for it, with the values filled in), run by pgbench with 16 clients
# on prepared statements, in alternating rounds so the machine's drift hits every shape alike.
# No api, no Redis: what PostgreSQL itself can do with each shape on this machine.
#
#   bash bench/sql-shapes/run.sh [seconds per run, default 15] [rounds, default 2]
#
# Uses PG_SERVER_URL (default postgres://postgres@127.0.0.1:5432) and a database of its own,
# orderly_sql_shapes, dropped at the end.
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-15}
rounds=${2:-2}
server=${PG_SERVER_URL:-postgres://postgres@127.0.0.1:5432}
db="$server/orderly_sql_shapes"
export PGOPTIONS="-c client_min_messages=warning"
psql -q "$server/postgres" -c "drop database if exists orderly_sql_shapes" -c "create database orderly_sql_shapes"
trap 'psql -q "$server/postgres" -c "drop database if exists orderly_sql_shapes"' EXIT
for migration in ../../migrations/*.up.sql; do
  psql -q -v ON_ERROR_STOP=1 "$db" -f "$migration" >/dev/null
done
psql -q -v ON_ERROR_STOP=1 "$db" -f seed.sql
for round in $(seq "$rounds"); do
  for shape in [0-9]-*.sql; do
    # Every run starts from the same empty tables and a flushed checkpoint.
    psql -q "$db" -c "truncate orders, order_items, idempotency_keys, outbox, webhook_deliveries cascade" -c checkpoint
    tps=$(pgbench -n -M prepared -c 16 -j 2 -T "$seconds" -f "$shape" "$db" | awk '/^tps/ {print $3}')
    echo "round $round  ${shape%.sql}  $tps tps"
  done
done
