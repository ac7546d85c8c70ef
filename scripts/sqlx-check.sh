#!/usr/bin/env bash
# Checks that .sqlx/ (what every build checks the SQL against, without a database) matches the
# queries in the code and the schema the migrations make: `cargo sqlx prepare --check` against a
# scratch database. Run by scripts/test.sh before the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh
source scripts/sqlx-common.sh
prepare_sqlx_run

echo "checking .sqlx/ against the queries and the migrations" >&2
if ! (cd "$SQLX_COPY" && cargo sqlx prepare --workspace --check 2>&1 | tee "$SQLX_WORK/check.log" >&2) \
  || grep -q "potentially unused queries" "$SQLX_WORK/check.log"; then
  echo >&2
  echo ".sqlx/ is out of date with the queries or the migrations (or a query does not compile," >&2
  echo "see above). Regenerate it with: bash scripts/sqlx-prepare.sh" >&2
  exit 1
fi
