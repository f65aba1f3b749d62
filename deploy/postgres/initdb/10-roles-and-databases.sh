#!/bin/sh
# Roles and databases for the one Postgres instance of the compose stack.
#
# Why one instance for Temporal and the app: a single-host deployment has one disk and one backup job either way;
# separate *roles* and *databases* keep the blast radius apart (the app role cannot touch Temporal's history,
# Temporal's role cannot read the ledger). Point ECOMDREAM_DATABASE_URL at a managed Postgres to split them later.
#
#   temporal   owns `temporal` and `temporal_visibility`; CREATEDB because temporal-sql-tool's `create` step
#              (kept from the samples-server script) issues CREATE DATABASE, which Postgres checks before it
#              notices the database already exists.
#   ecomdream  owns `ecomdream`; Alembic creates its tables (the `migrate` service).
#
# The postgres image runs this file only when the data volume is empty (first start). Changing a password in
# `.env` later does not change it here: run `ALTER ROLE ... PASSWORD ...` as the postgres superuser as well.
#
# The image may source this file instead of executing it (when the execute bit is lost), so no `set -u` that
# would leak into its entrypoint; required variables are checked explicitly instead.
set -e

: "${TEMPORAL_DB_PASSWORD:?TEMPORAL_DB_PASSWORD must be set}"
: "${APP_DB_PASSWORD:?APP_DB_PASSWORD must be set}"

# Passwords travel as psql variables (:'name' quotes them as SQL literals), never spliced into the SQL text.
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    -v temporal_password="$TEMPORAL_DB_PASSWORD" \
    -v app_password="$APP_DB_PASSWORD" <<'SQL'
CREATE ROLE temporal LOGIN CREATEDB PASSWORD :'temporal_password';
CREATE DATABASE temporal OWNER temporal;
CREATE DATABASE temporal_visibility OWNER temporal;

CREATE ROLE ecomdream LOGIN PASSWORD :'app_password';
CREATE DATABASE ecomdream OWNER ecomdream;
-- Nobody else connects to the app's database.
REVOKE CONNECT ON DATABASE ecomdream FROM PUBLIC;
REVOKE CONNECT ON DATABASE temporal FROM PUBLIC;
REVOKE CONNECT ON DATABASE temporal_visibility FROM PUBLIC;
SQL
