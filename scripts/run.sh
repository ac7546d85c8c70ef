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
source scripts/build-release.sh
build_release
export PATH="$CARGO_TARGET_DIR/release:$PATH"

# Local configuration: .env is created from .env.example on the first run (and never
# overwritten), with the PostgreSQL user this machine has and webhooks allowed to loopback
# receivers (development only: production delivers to public addresses alone).
if [ ! -f .env ]; then
  user=$(pg_user)
  sed -e "s#^DATABASE_URL=.*#DATABASE_URL=postgres://${user}@127.0.0.1:5432/orderly#" \
    -e "s#^WEBHOOK_ALLOWLIST=.*#WEBHOOK_ALLOWLIST=127.0.0.0/8#" .env.example > .env
  echo "created .env from .env.example (WEBHOOK_ALLOWLIST=127.0.0.0/8 for local receivers)"
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
# A PORT given on the command line wins over the one in .env.
requested_port="${PORT:-}"
set -a
# shellcheck disable=SC1091
source .env
set +a
if [ -n "$requested_port" ]; then export PORT="$requested_port"; fi
db_name="${DATABASE_URL##*/}"
db_name="${db_name%%\?*}"
if ! psql "${DATABASE_URL%/*}/postgres" -tAc "select 1 from pg_database where datname = '${db_name}'" | grep -q 1; then
  psql "${DATABASE_URL%/*}/postgres" -qc "create database \"${db_name}\""
  echo "created database ${db_name}"
fi
orderly-api migrate

# Two deployments on one Redis with the same REDIS_PREFIX see (and run) each other's jobs. The
# prefix remembers the database it serves; another database's jobs under it are worth a warning.
prefix="${REDIS_PREFIX:-orderly}"
owner="${DATABASE_URL#*://}"   # host:port/database, without the user and password
owner="${owner#*@}"
redis_url="${REDIS_URL:-redis://127.0.0.1:6379}"
previous="$(redis-cli -u "$redis_url" --no-auth-warning SET "${prefix}:owner" "$owner" NX GET 2>/dev/null || true)"
if [ -n "$previous" ] && [ "$previous" != "$owner" ]; then
  echo "warning: Redis prefix '${prefix}' already holds the jobs of another database (${previous})." >&2
  echo "         The dashboard will show them and these workers will run them; set REDIS_PREFIX" >&2
  echo "         in .env to a prefix of this deployment's own." >&2
fi

# honcho runs the Procfile; installed once for this user, quietly, when it is missing.
if ! command -v honcho >/dev/null 2>&1; then
  export PATH="$HOME/.local/bin:$PATH"
  if ! command -v honcho >/dev/null 2>&1; then
    echo "installing honcho (a Procfile runner, from PyPI) for this user" >&2
    PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --user --no-warn-script-location \
      --disable-pip-version-check honcho
  fi
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
