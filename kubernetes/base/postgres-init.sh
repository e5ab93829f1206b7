#!/bin/sh
# Runs once, when the Postgres volume is empty (the image's initdb hook).
# Salon's app role must not be a superuser (row-level security does not apply
# to superusers, docs/postgres.md), so: an ordinary role that owns its
# database, and the one extension it cannot create itself.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    --set=app_password="$SALON_DB_PASSWORD" <<'SQL'
CREATE ROLE salon LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE PASSWORD :'app_password';
CREATE DATABASE salon OWNER salon;
\connect salon
CREATE EXTENSION IF NOT EXISTS vector;
SQL
