#!/usr/bin/env bash
# Restore a backup made by scripts/backup.sh into an EMPTY Postgres database and
# the media folder, then check it against the backup's manifest.
#
#   SALON_DATABASE_URL=postgresql://salon:...@db/salon_restored \
#     scripts/restore.sh /var/backups/salon/salon-20261101T020000Z
#
# In order, stopping at the first problem with a message and a non-zero exit:
#  1. every file's size and SHA-256 against the manifest (a damaged backup is refused
#     before anything is touched);
#  2. the target database must hold no tables, the media folder must be empty
#     (or --force);
#  3. pg_restore --no-owner --exit-on-error (one transaction unless --jobs);
#  4. the vector (HNSW/IVFFlat) indexes are rebuilt and every table ANALYZEd
#     (statistics are not in a dump), every index must be valid;
#  5. the row count of every table must equal the manifest's;
#  6. the media archive is unpacked into the media folder.
# docs/backup.md has the whole procedure.
#
# Environment: SALON_DATABASE_URL (the empty target), SALON_MEDIA_STORAGE,
# SALON_MEDIA_DIR / SALON_DATA_DIR (as for salon serve), PG_BIN, PYTHON.
set -euo pipefail

PROG=restore.sh
started=$SECONDS

# die, say, pg_tool, libpq_url: shared with the other script.
# shellcheck source=scripts/pg-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/pg-lib.sh"

usage() {
    cat <<'EOF'
usage: restore.sh [--force] [--jobs N] [--skip-reindex] BACKUP_DIR

  BACKUP_DIR      a folder made by backup.sh (with manifest.json)
  --force         replace a media folder that is not empty (the database must be empty regardless)
  --jobs N        pg_restore with N parallel jobs (faster on big databases; not one transaction)
  --skip-reindex  do not rebuild the vector indexes after the restore (pg_restore built them)

Environment: SALON_DATABASE_URL (an empty database, required), SALON_MEDIA_STORAGE,
SALON_MEDIA_DIR, SALON_DATA_DIR, PG_BIN, PYTHON. See docs/backup.md.
EOF
}

force=0
jobs=1
reindex=1
backup_dir=""
while (($#)); do
    case "$1" in
    --force)
        force=1
        shift
        ;;
    --jobs)
        (($# >= 2)) || die "--jobs needs a number"
        jobs=$2
        shift 2
        ;;
    --jobs=*)
        jobs=${1#--jobs=}
        shift
        ;;
    --skip-reindex)
        reindex=0
        shift
        ;;
    -h | --help)
        usage
        exit 0
        ;;
    -*)
        usage >&2
        die "unknown option: $1"
        ;;
    *)
        [[ -z $backup_dir ]] || die "one BACKUP_DIR only (got '$backup_dir' and '$1')"
        backup_dir=$1
        shift
        ;;
    esac
done
[[ -n $backup_dir ]] || {
    usage >&2
    die "BACKUP_DIR is required"
}
[[ $jobs =~ ^[1-9][0-9]*$ ]] || die "--jobs must be a whole number of at least 1, not '$jobs'"
[[ -d $backup_dir ]] || die "$backup_dir is not a folder"
backup_dir=$(cd "$backup_dir" && pwd)
[[ -f $backup_dir/manifest.json ]] || die "$backup_dir has no manifest.json: not a finished Salon backup"

# -- tools ------------------------------------------------------------------------

PYTHON=${PYTHON:-python3}
command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found (needed to read the manifest); install python3 or set PYTHON"
command -v tar >/dev/null 2>&1 || die "tar not found"

PG_RESTORE=$(pg_tool pg_restore "the version that made the dump or newer")
PSQL=$(pg_tool psql "the version that made the dump or newer")

# -- 1. the manifest and every checksum, before anything is touched -----------------

say "verifying $backup_dir"
manifest_lines=$(
    "$PYTHON" - "$backup_dir" <<'PY'
import hashlib
import json
import sys
from pathlib import Path

folder = Path(sys.argv[1])
try:
    manifest = json.loads((folder / "manifest.json").read_text())
except (OSError, ValueError) as exc:
    sys.exit(f"manifest.json cannot be read: {exc}")
if not isinstance(manifest, dict) or manifest.get("format") != "salon-backup":
    sys.exit("manifest.json is not a Salon backup manifest")
if int(manifest.get("format_version", 0)) > 1:
    sys.exit(f"backup format {manifest['format_version']} is newer than this script understands")
if manifest.get("kind") == "sqlite":
    sys.exit("this is a backup of the embedded SQLite store: restore it with 'salon restore'")
if manifest.get("kind") != "postgres":
    sys.exit(f"unknown backup kind {manifest.get('kind')!r}")
problems = []
for entry in manifest.get("files", []):
    path = folder / entry["name"]
    if not path.is_file():
        problems.append(f"{entry['name']}: missing")
        continue
    size = path.stat().st_size
    if size != entry["bytes"]:
        problems.append(f"{entry['name']}: {size} bytes, the manifest says {entry['bytes']}")
        continue
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    if h.hexdigest() != entry["sha256"]:
        problems.append(
            f"{entry['name']}: checksum mismatch (sha256 {h.hexdigest()}, "
            f"the manifest says {entry['sha256']})"
        )
names = {e["name"] for e in manifest.get("files", [])}
database = manifest.get("database", {})
if database.get("file") not in names:
    problems.append("the manifest lists no database dump")
media = manifest.get("media", {})
if media.get("archive") and media["archive"] not in names:
    problems.append(f"the manifest lists no checksum for {media['archive']}")
if problems:
    sys.exit("the backup is damaged, nothing was restored:\n  " + "\n  ".join(problems))
print(f"dump={database['file']}")
print(f"pg_dump_version={database.get('pg_dump_version', '')}")
print(f"revision={manifest.get('migration_revision') or ''}")
print(f"created_at={manifest.get('created_at', '')}")
print(f"media_storage={media.get('storage', '')}")
print(f"media_archive={media.get('archive') or ''}")
print(f"media_files={media.get('files') if media.get('files') is not None else ''}")
PY
) || die "refusing to restore $backup_dir (see above)"

dump="" pg_dump_version="" revision="" created_at="" media_storage="" media_archive="" media_files=""
while IFS='=' read -r key value; do
    case "$key" in
    dump) dump=$value ;;
    pg_dump_version) pg_dump_version=$value ;;
    revision) revision=$value ;;
    created_at) created_at=$value ;;
    media_storage) media_storage=$value ;;
    media_archive) media_archive=$value ;;
    media_files) media_files=$value ;;
    esac
done <<<"$manifest_lines"
say "checksums ok: backup of $created_at, revision ${revision:-unknown}"

major() { sed -n 's/.* \([0-9][0-9]*\)\.[0-9].*/\1/p' <<<"$1" | head -n 1; }
dump_major=$(major "$pg_dump_version")
restore_version=$("$PG_RESTORE" --version)
restore_major=$(major "$restore_version")
if [[ -n $dump_major && -n $restore_major ]] && ((restore_major < dump_major)); then
    die "the dump was made by $pg_dump_version; $restore_version cannot read it: use pg_restore $dump_major or newer (PG_BIN)"
fi

# -- the target database -------------------------------------------------------------

[[ -n ${SALON_DATABASE_URL:-} ]] || die "SALON_DATABASE_URL is not set: point it at the EMPTY database to restore into"
libpq_url "restore"
# Salon's tables have FORCE ROW LEVEL SECURITY: counting every tenant's rows as the
# app role needs the system scope (docs/postgres.md).
export PGOPTIONS="${PGOPTIONS:+$PGOPTIONS }-c salon.scope=system"
export PGAPPNAME=salon-restore

tmp=$(mktemp -d)
media_tmp=""
cleanup() {
    rm -rf "$tmp"
    if [[ -n $media_tmp && -d $media_tmp ]]; then
        rm -rf "$media_tmp"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

sql() {
    # Run SQL (psql meta-commands such as \gexec allowed); print tuples only.
    "$PSQL" -X -q -A -t -v ON_ERROR_STOP=1 -d "$DB_URL" -f - <<<"$1" 2>"$tmp/psql.err"
}
sql_failed() {
    die "$1: $(tr '\n' ' ' <"$tmp/psql.err")"
}

say "target: $DB_SHOWN"
sql "SELECT 1;" >/dev/null || sql_failed "cannot connect to the target database"

# Empty = no table, view or sequence of its own; an extension's objects (vector) do not count.
EXISTING_SQL=$(
    cat <<'SQL'
SELECT count(*) || ' ' || coalesce(array_to_string((array_agg(n.nspname || '.' || c.relname ORDER BY c.relname) FILTER (WHERE c.relkind IN ('r', 'p')))[1:5], ', '), '')
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp%'
  AND NOT EXISTS (
    SELECT 1 FROM pg_depend d
    WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e');
SQL
)
existing=$(sql "$EXISTING_SQL") || sql_failed "cannot inspect the target database"
if [[ ${existing%% *} != 0 ]]; then
    names=${existing#* }
    die "the target database is not empty (${existing%% *} tables, sequences or views, e.g. $names); restore needs an EMPTY database: create one (CREATE DATABASE salon_restored OWNER <app role>) and point SALON_DATABASE_URL at it"
fi

# -- the media folder (checked before the database is touched) ------------------------

media_dir=""
if [[ -n $media_archive ]]; then
    case "${SALON_MEDIA_STORAGE:-local}" in
    local)
        media_dir=${SALON_MEDIA_DIR:-${SALON_DATA_DIR:-.salon}/media}
        if [[ -d $media_dir ]] && [[ -n $(find "$media_dir" -mindepth 1 -print -quit) ]] && ((force == 0)); then
            die "the media folder $media_dir is not empty: use --force to replace it, or set SALON_MEDIA_DIR to an empty folder"
        fi
        if [[ -e $media_dir && ! -d $media_dir ]]; then
            die "$media_dir is not a folder"
        fi
        ;;
    s3)
        say "warning: SALON_MEDIA_STORAGE=s3 here but the backup holds a local media archive: it is not unpacked (upload its files under the bucket's prefix to use them)"
        ;;
    *)
        die "SALON_MEDIA_STORAGE must be local or s3, not '${SALON_MEDIA_STORAGE}'"
        ;;
    esac
elif [[ $media_storage == s3 ]]; then
    say "media: the backup was made with SALON_MEDIA_STORAGE=s3; the files are in the bucket (restore them from its versions or replica if needed)"
fi

# -- 3. the database ---------------------------------------------------------------------

# The dump's COMMENT ON EXTENSION needs the extension's owner (a superuser), which
# the app role is not; the comment is the only thing skipped.
"$PG_RESTORE" --list "$backup_dir/$dump" >"$tmp/toc.full" || die "pg_restore cannot read $dump"
grep -v ' COMMENT - EXTENSION ' "$tmp/toc.full" >"$tmp/toc.list" || true

if grep -q ' EXTENSION - vector' "$tmp/toc.list"; then
    has_vector=$(sql "SELECT count(*) FROM pg_extension WHERE extname = 'vector';") || sql_failed "query failed"
    if [[ $has_vector == 0 ]]; then
        sql "CREATE EXTENSION IF NOT EXISTS vector;" >/dev/null ||
            die "the target database has no 'vector' extension and this role cannot create it: as a superuser, run CREATE EXTENSION vector; in it, then restore again ($(tr '\n' ' ' <"$tmp/psql.err"))"
    fi
fi

restore_args=(--no-owner --no-privileges --exit-on-error --use-list="$tmp/toc.list" --dbname="$DB_URL")
if ((jobs > 1)); then
    restore_args+=(--jobs="$jobs")
else
    restore_args+=(--single-transaction) # an error leaves the database as empty as it was
fi
say "restoring the database ($restore_version, $jobs job(s))"
if ! "$PG_RESTORE" "${restore_args[@]}" "$backup_dir/$dump"; then
    if ((jobs > 1)); then
        die "pg_restore failed (see above); the database holds a partial restore: drop and recreate it before trying again"
    fi
    die "pg_restore failed (see above); nothing was committed, the database is still empty"
fi

# -- 4. indexes and statistics -------------------------------------------------------------

if ((reindex)); then
    vector_indexes=$(sql "SELECT string_agg(ic.relname, ' ' ORDER BY ic.relname) FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_am am ON am.oid = ic.relam JOIN pg_namespace n ON n.oid = ic.relnamespace WHERE am.amname IN ('hnsw', 'ivfflat') AND n.nspname = current_schema();") ||
        sql_failed "listing the vector indexes failed"
    if [[ -n $vector_indexes ]]; then
        say "reindexing: $vector_indexes"
        sql "SELECT format('REINDEX INDEX %I.%I', n.nspname, ic.relname) FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_am am ON am.oid = ic.relam JOIN pg_namespace n ON n.oid = ic.relnamespace WHERE am.amname IN ('hnsw', 'ivfflat') AND n.nspname = current_schema() \\gexec" >/dev/null ||
            sql_failed "REINDEX failed"
    fi
fi
say "analyzing"
sql "SELECT format('ANALYZE %I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p') AND n.nspname = current_schema() \\gexec" >/dev/null ||
    sql_failed "ANALYZE failed"
invalid=$(sql "SELECT coalesce(string_agg(ic.relname, ', '), '') FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_namespace n ON n.oid = ic.relnamespace WHERE n.nspname = current_schema() AND NOT (i.indisvalid AND i.indisready);") ||
    sql_failed "checking the indexes failed"
[[ -z $invalid ]] || die "invalid indexes after the restore: $invalid"
index_count=$(sql "SELECT count(*) FROM pg_indexes WHERE schemaname = current_schema();") || sql_failed "query failed"

# -- 5. row counts against the manifest -------------------------------------------------------

counts=$(sql "$COUNT_ROWS_SQL") || sql_failed "counting rows failed"
summary=$(
    "$PYTHON" - "$backup_dir/manifest.json" "$counts" <<'PY'
import json
import sys

expected = json.loads(open(sys.argv[1]).read()).get("row_counts", {})
actual = json.loads(sys.argv[2])
wrong = [
    f"{t}: {actual.get(t, 'missing')} rows, the backup had {n}"
    for t, n in sorted(expected.items())
    if actual.get(t) != n
]
if wrong:
    sys.exit("row counts differ from the manifest:\n  " + "\n  ".join(wrong))
print(f"{len(expected)} tables, {sum(expected.values())} rows")
PY
) || die "the restored database does not match the backup (see above)"
say "row counts match the manifest: $summary"

# -- 6. media ------------------------------------------------------------------------------------

restored_media="not restored"
if [[ -n $media_dir ]]; then
    parent=$(dirname "$media_dir")
    mkdir -p "$parent" || die "cannot create $parent"
    media_tmp=$(mktemp -d "$parent/.salon-media-restore.XXXXXX")
    tar -xzf "$backup_dir/$media_archive" -C "$media_tmp" --no-same-owner ||
        die "unpacking $media_archive failed; the media folder was not changed"
    got=$(find "$media_tmp" -type f | wc -l)
    if [[ -n $media_files && $got != "$media_files" ]]; then
        die "the media archive held $got files, the manifest says $media_files; the media folder was not changed"
    fi
    if [[ -d $media_dir ]]; then
        old="$parent/.salon-media-old.$$"
        mv "$media_dir" "$old" || die "cannot move the old media folder aside"
        mv "$media_tmp" "$media_dir" || die "cannot put the restored media in place (the old ones are in $old)"
        rm -rf "$old"
    else
        mv "$media_tmp" "$media_dir" || die "cannot put the restored media in place"
    fi
    media_tmp=""
    restored_media="$got files in $media_dir"
fi

is_super=$(sql "SELECT rolsuper FROM pg_roles WHERE rolname = current_user;") || sql_failed "query failed"
if [[ $is_super == t ]]; then
    say "warning: restored as a superuser, so the tables belong to it: connect salon as this role, or ALTER ... OWNER TO the app role (docs/backup.md)"
fi

say "restored in $((SECONDS - started)) s: revision ${revision:-unknown}, $summary, $index_count indexes, media: $restored_media"
say "next: start salon serve (or salon migrate) against this database; it upgrades an older revision"
