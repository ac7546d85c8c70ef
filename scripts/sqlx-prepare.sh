#!/usr/bin/env bash
# Regenerates .sqlx/, the query data every build checks the SQL against without a database:
# run it after changing a query or a migration, and commit .sqlx/ with the change. Checks each
# query against a scratch database migrated with migrations/.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh
source scripts/sqlx-common.sh
prepare_sqlx_run

(cd "$SQLX_COPY" && cargo sqlx prepare --workspace)
rm -rf .sqlx
cp -a "$SQLX_COPY/.sqlx" .sqlx
echo "wrote $(ls .sqlx | wc -l) queries to .sqlx/; commit them with the change" >&2
