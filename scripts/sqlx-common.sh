#!/usr/bin/env bash
# What scripts/sqlx-prepare.sh and scripts/sqlx-check.sh share: the pinned sqlx-cli, a scratch
# database migrated with migrations/ (dropped when the script exits), and a copy of the
# workspace to run `cargo sqlx prepare` in. Sourced after scripts/services.sh.
set -euo pipefail

SQLX_CLI_VERSION=0.8.6
SQLX_CLI_ROOT="$HOME/.cache/orderly-tools/sqlx-cli-$SQLX_CLI_VERSION"
# The copy sits at the same path every run and its build in a target directory of its own (not
# the tests'), so a run checks the workspace crates again and reuses every dependency.
SQLX_WORK="$HOME/.cache/orderly-sqlx"
export CARGO_TARGET_DIR="${SQLX_TARGET_DIR:-$HOME/.cache/orderly-target-sqlx-check}"

# Puts `cargo sqlx` (the version the workspace's sqlx is) on PATH, installing it when missing.
ensure_sqlx_cli() {
  if [ ! -x "$SQLX_CLI_ROOT/bin/cargo-sqlx" ]; then
    echo "installing sqlx-cli $SQLX_CLI_VERSION into $SQLX_CLI_ROOT" >&2
    # Without CARGO_TARGET_DIR, cargo install builds in a directory it removes afterwards.
    env -u CARGO_TARGET_DIR cargo install sqlx-cli --version "$SQLX_CLI_VERSION" --no-default-features \
      --features postgres,rustls --locked --root "$SQLX_CLI_ROOT"
  fi
  export PATH="$SQLX_CLI_ROOT/bin:$PATH"
}

SCRATCH_DATABASE=""
SCRATCH_USER=""

drop_scratch_database() {
  if [ -n "$SCRATCH_DATABASE" ]; then
    dropdb -h 127.0.0.1 -p 5432 -U "$SCRATCH_USER" --if-exists "$SCRATCH_DATABASE" || true
  fi
}

# Creates a database of its own on the local PostgreSQL, migrates it and exports its URL as
# DATABASE_URL; it is dropped when the script exits, however it exits.
scratch_database() {
  SCRATCH_USER=$(pg_user)
  SCRATCH_DATABASE="orderly_sqlx_$(date +%s)_$$"
  trap drop_scratch_database EXIT
  createdb -h 127.0.0.1 -p 5432 -U "$SCRATCH_USER" "$SCRATCH_DATABASE"
  export DATABASE_URL="postgres://$SCRATCH_USER@127.0.0.1:5432/$SCRATCH_DATABASE"
  sqlx migrate run --source migrations --database-url "$DATABASE_URL" >/dev/null
}

# Copies the workspace (sources, manifests, migrations, .sqlx; no .git, no builds) to
# $SQLX_WORK/workspace and sets SQLX_COPY to that path. `cargo sqlx prepare` marks every workspace
# crate's sources as modified to make their macros run again; in the copy, that leaves the
# sources here, and every build of them (the tests'), untouched. Holds a lock on $SQLX_WORK
# until the script exits, so two runs never share the copy.
SQLX_COPY="$SQLX_WORK/workspace"
copy_workspace() {
  local copy="$SQLX_COPY"
  mkdir -p "$SQLX_WORK"
  exec 9>"$SQLX_WORK/lock"
  flock 9
  rm -rf "$copy"
  mkdir -p "$copy"
  tar -cf - --exclude=./.git --exclude=./target --exclude=./var --exclude=./artifacts \
    --exclude=node_modules --exclude=./.env . | tar -xf - -C "$copy"
}

# Everything both scripts need before they run `cargo sqlx prepare` in $SQLX_COPY: PostgreSQL
# up, the pinned sqlx-cli, a migrated scratch database and a fresh copy of the workspace.
prepare_sqlx_run() {
  ensure_postgres
  ensure_sqlx_cli
  scratch_database
  copy_workspace
}
