#!/usr/bin/env bash
# The order's SQL alone, shape by shape: each shape below is one way of placing an order, the
# statements the api sends for it (statements/, with the values filled in) put together into one
# pgbench script, run with 16 clients on prepared statements, in alternating rounds so the
# machine's drift hits every shape alike. No api, no Redis: what PostgreSQL itself can do with
# each shape on this machine.
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

# name: the statements, in the order one client sends them.
shapes=(
  "1-before: begin order deliveries claim outbox commit stock-read outbox-mark response-store"
  "2-after: begin order deliveries claim-with-response outbox commit stock-read outbox-delete"
  "3-after-without-a-read-per-order: begin order deliveries claim-with-response outbox commit outbox-delete"
  "4-deliveries-outside-the-order: begin order claim-with-response outbox commit stock-read outbox-delete"
  "5-one-statement: one-statement stock-read outbox-delete"
  "6-as-sent-now: order-as-sent stock-read outbox-delete"
)
scripts=$(mktemp -d)
trap 'rm -rf "$scripts"; psql -q "$server/postgres" -c "drop database if exists orderly_sql_shapes"' EXIT
for entry in "${shapes[@]}"; do
  name=${entry%%:*}
  for statement in variables ${entry#*:}; do
    cat "statements/$statement.sql"
  done >"$scripts/$name.sql"
done

for round in $(seq "$rounds"); do
  for entry in "${shapes[@]}"; do
    name=${entry%%:*}
    # Every run starts from the same empty tables and a flushed checkpoint.
    psql -q "$db" -c "truncate orders, order_items, idempotency_keys, outbox, webhook_deliveries cascade" -c checkpoint
    tps=$(pgbench -n -M prepared -c 16 -j 2 -T "$seconds" -f "$scripts/$name.sql" "$db" | awk '/^tps/ {print $3}')
    echo "round $round  $name  $tps tps"
  done
done
