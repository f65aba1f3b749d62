#!/bin/sh
# One-shot (the `temporal-schema` service, image temporalio/admin-tools): create and migrate Temporal's two
# databases with temporal-sql-tool, the approach of temporalio/samples-server compose/scripts/setup-postgres.sh.
#
# Safe on every `docker compose up`, and the upgrade path when the Temporal version is bumped:
#   create          ignores "database already exists";
#   setup-schema    only writes the 0.0 baseline when the recorded version is not newer;
#   update-schema   applies just the versioned steps shipped in this admin-tools image that are not yet applied.
# So bump temporalio/admin-tools together with temporalio/server (same version), one minor at a time.
#
# Environment (docker-compose.yml): POSTGRES_SEEDS, DB_PORT, POSTGRES_USER, and SQL_PASSWORD, which
# temporal-sql-tool reads itself, so the password never appears on a command line.
set -eu

: "${POSTGRES_SEEDS:?POSTGRES_SEEDS must be set}"
: "${POSTGRES_USER:?POSTGRES_USER must be set}"
: "${SQL_PASSWORD:?SQL_PASSWORD must be set}"
DB_PORT="${DB_PORT:-5432}"
SCHEMA_DIR=/etc/temporal/schema/postgresql/v12

echo "waiting for PostgreSQL at ${POSTGRES_SEEDS}:${DB_PORT}"
attempt=1
until nc -z -w 2 "$POSTGRES_SEEDS" "$DB_PORT"; do
    if [ "$attempt" -ge 60 ]; then
        echo "PostgreSQL did not accept connections" >&2
        exit 1
    fi
    attempt=$((attempt + 1))
    sleep 2
done

sql_tool() {
    temporal-sql-tool --plugin postgres12 --ep "$POSTGRES_SEEDS" -p "$DB_PORT" -u "$POSTGRES_USER" "$@"
}

# database name, then the directory of its versioned schema
for pair in "temporal:temporal" "temporal_visibility:visibility"; do
    db="${pair%%:*}"
    schema="${pair#*:}"
    echo "schema for ${db}"
    sql_tool --db "$db" create
    sql_tool --db "$db" setup-schema -v 0.0
    sql_tool --db "$db" update-schema -d "${SCHEMA_DIR}/${schema}/versioned"
done

echo "Temporal schemas are up to date"
