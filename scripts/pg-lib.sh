# shellcheck shell=bash
# Shared by scripts/backup.sh and scripts/restore.sh (sourced, not run): error and
# progress messages, finding the PostgreSQL client programs, and turning
# SALON_DATABASE_URL into a URL libpq reads. The caller sets PROG and PYTHON.

die() {
    printf '%s: error: %s\n' "$PROG" "$*" >&2
    exit 1
}

say() {
    printf '%s: %s\n' "$PROG" "$*" >&2
}

# pg_tool NAME HINT: the PostgreSQL client program NAME, from PG_BIN when set (no
# fallback, so a wrong PG_BIN is an error rather than a silently different version),
# else from PATH. HINT says which version is needed when it is missing.
pg_tool() {
    if [[ -n ${PG_BIN:-} ]]; then
        [[ -x $PG_BIN/$1 ]] || die "PG_BIN=$PG_BIN has no executable $1"
        printf '%s\n' "$PG_BIN/$1"
    else
        command -v "$1" 2>/dev/null || die "$1 not found: install the PostgreSQL client ($2) or set PG_BIN to the folder holding it"
    fi
}

# libpq_url ACTION: sets DB_URL (for libpq) and DB_SHOWN (the same, password hidden)
# from SALON_DATABASE_URL. Salon's URL forms (postgresql+asyncpg://, asyncpg's ssl=)
# become what libpq reads. ACTION ("back up" or "restore") words the SQLite refusal.
libpq_url() {
    local lines
    lines=$(
        "$PYTHON" - "$SALON_DATABASE_URL" "$1" <<'PY'
import sys
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

url, action = sys.argv[1], sys.argv[2]
parts = urlsplit(url)
scheme = parts.scheme.lower()
if scheme.startswith("sqlite"):
    command = "backup" if action == "back up" else "restore"
    sys.exit(f"SALON_DATABASE_URL is SQLite: {action} the embedded store with 'salon {command}'")
if scheme.split("+")[0] not in ("postgresql", "postgres"):
    sys.exit(f"SALON_DATABASE_URL must be a postgresql:// URL, not {scheme}://")
# asyncpg and SQLAlchemy options that libpq would reject as unknown.
drop = {
    "prepared_statement_cache_size", "statement_cache_size", "command_timeout", "timeout",
    "max_cached_statement_lifetime", "max_cacheable_statement_size", "server_settings",
    "async_fallback",
}
query = []
keys = {k for k, _ in parse_qsl(parts.query, keep_blank_values=True)}
for key, value in parse_qsl(parts.query, keep_blank_values=True):
    if key == "ssl":
        if "sslmode" not in keys:
            query.append(("sslmode", value))
    elif key not in drop:
        query.append((key, value))
if "connect_timeout" not in keys:
    query.append(("connect_timeout", "15"))  # an unreachable host fails, it does not hang
clean = urlunsplit(("postgresql", parts.netloc, parts.path, urlencode(query, safe="/"), ""))
shown = clean
if parts.password:
    shown = clean.replace(":" + parts.password + "@", ":***@", 1)
print(clean)
print(shown)
PY
    ) || die "cannot use SALON_DATABASE_URL (see above)"
    # Both are read by the scripts that source this file.
    # shellcheck disable=SC2034
    DB_URL=$(sed -n 1p <<<"$lines")
    # shellcheck disable=SC2034
    DB_SHOWN=$(sed -n 2p <<<"$lines")
}

# Every table of Salon's schema with its row count, as one JSON object: psql builds
# one query (a UNION of counts) and runs it with \gexec. backup.sh records it in the
# manifest; restore.sh compares against it.
# shellcheck disable=SC2034
COUNT_ROWS_SQL=$(
    cat <<'SQL'
SELECT 'SELECT ' || coalesce(
    'json_object_agg(t, n ORDER BY t) FROM ('
    || string_agg(format('SELECT %L AS t, count(*) AS n FROM %I.%I', c.relname, n.nspname, c.relname), ' UNION ALL ')
    || ') s',
    '''{}''::json')
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND n.nspname = current_schema()
\gexec
SQL
)
