#!/usr/bin/env bash
# Runs the whole system on this machine: builds the release binaries, starts PostgreSQL and
# Redis if they are down, creates and migrates the database, then starts the Procfile's
# processes (the api and two workers) with honcho, a Procfile runner from PyPI. Ctrl-C stops
# them all (SIGTERM first: running jobs finish, in-flight requests complete).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh
ensure_postgres
ensure_redis

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/orderly-target}"
cargo build --release --locked -p orderly-api -p orderly-worker
export PATH="$CARGO_TARGET_DIR/release:$PATH"

# Local configuration: .env is created from .env.example on the first run (and never
# overwritten), with the PostgreSQL user this machine has.
if [ ! -f .env ]; then
  user=$(pg_user)
  sed "s#^DATABASE_URL=.*#DATABASE_URL=postgres://${user}@127.0.0.1:5432/orderly#" .env.example > .env
  echo "created .env from .env.example"
fi
# A random signing secret of this machine's own where .env has none (the api and workers refuse
# to start without one, and refuse any published example).
if grep -qE '^JWT_SECRET=$' .env || ! grep -q '^JWT_SECRET=' .env; then
  secret=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
  if grep -q '^JWT_SECRET=' .env; then
    sed -i "s#^JWT_SECRET=.*#JWT_SECRET=${secret}#" .env
  else
    echo "JWT_SECRET=${secret}" >> .env
  fi
  echo "wrote a random JWT_SECRET into .env"
fi
set -a
# shellcheck disable=SC1091
source .env
set +a
db_name="${DATABASE_URL##*/}"
db_name="${db_name%%\?*}"
if ! psql "${DATABASE_URL%/*}/postgres" -tAc "select 1 from pg_database where datname = '${db_name}'" | grep -q 1; then
  psql "${DATABASE_URL%/*}/postgres" -qc "create database \"${db_name}\""
  echo "created database ${db_name}"
fi
orderly-api migrate

if ! command -v honcho >/dev/null 2>&1; then
  python3 -m pip install --quiet --user honcho
  export PATH="$HOME/.local/bin:$PATH"
fi

port="${PORT:-8080}"
cat <<EOT

Orderly is starting (api + 2 workers):
  API             http://127.0.0.1:${port}/api/v1
  Swagger UI      http://127.0.0.1:${port}/docs
  Queue dashboard http://127.0.0.1:${port}/admin/queues   (log in as an admin)
  Health          http://127.0.0.1:${port}/health
  Metrics         http://127.0.0.1:${port}/metrics
  Emails          ${MAIL_DIR:-var/mail}/*.eml (no SMTP_URL set) or your SMTP server
Create an admin in another terminal:
  echo 'a-long-password' | $CARGO_TARGET_DIR/release/orderly-api create-admin --email admin@example.com
Ctrl-C stops everything.

EOT
exec honcho start --procfile Procfile --port "${port}" --concurrency web=1,worker=2 web worker
