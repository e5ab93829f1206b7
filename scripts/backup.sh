#!/usr/bin/env bash
# Back up a production Salon: the Postgres database (pg_dump, custom format),
# the local media folder (tar.gz) and a manifest with checksums and row counts.
#
#   SALON_DATABASE_URL=postgresql://salon:...@db/salon \
#     scripts/backup.sh --out /var/backups/salon [--keep 14] [--s3 s3://bucket/prefix]
#
# The database is dumped from one consistent snapshot while Salon keeps running;
# the row counts in the manifest are read from that same snapshot, so
# scripts/restore.sh can check a restore against them. docs/backup.md has the
# whole procedure (restore, drill, retention, S3, what is not covered).
#
# Environment:
#   SALON_DATABASE_URL   the database (postgresql://, postgres:// or postgresql+asyncpg://)
#   SALON_MEDIA_STORAGE  local (default): archive SALON_MEDIA_DIR; s3: media are in the
#                        bucket already (its versioning/replication is their backup)
#   SALON_MEDIA_DIR      the media folder (default: $SALON_DATA_DIR/media, SALON_DATA_DIR=.salon)
#   PG_BIN               folder holding pg_dump, pg_restore and psql (default: from PATH)
#   PYTHON               python3 used for the manifest (default: python3)
#   AWS_CLI              the AWS CLI for --s3 (default: aws); AWS_ENDPOINT_URL for
#                        S3-compatible stores (MinIO, R2, Ceph), credentials as the CLI reads them
#
# Prints the backup's folder on stdout; progress and errors go to stderr. Any
# failure exits non-zero with a message and leaves no half-written backup behind.
set -euo pipefail

PROG=backup.sh
FORMAT_VERSION=1

# die, say, pg_tool, libpq_url: shared with the other script.
# shellcheck source=scripts/pg-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/pg-lib.sh"

usage() {
    cat <<'EOF'
usage: backup.sh --out DIR [--keep N] [--s3 s3://bucket/prefix]

  --out DIR    where backups go; each one is a folder DIR/salon-<UTC time>
  --keep N     keep only the newest N backups in DIR (default: keep all)
  --s3 URL     also upload the backup to s3://bucket/prefix/salon-<UTC time>/ (AWS CLI)

Environment: SALON_DATABASE_URL (required), SALON_MEDIA_STORAGE, SALON_MEDIA_DIR,
SALON_DATA_DIR, PG_BIN, PYTHON, AWS_CLI, AWS_ENDPOINT_URL. See docs/backup.md.
EOF
}

out_dir=""
keep=""
s3_url=""
while (($#)); do
    case "$1" in
    --out)
        (($# >= 2)) || die "--out needs a folder"
        out_dir=$2
        shift 2
        ;;
    --out=*)
        out_dir=${1#--out=}
        shift
        ;;
    --keep)
        (($# >= 2)) || die "--keep needs a number"
        keep=$2
        shift 2
        ;;
    --keep=*)
        keep=${1#--keep=}
        shift
        ;;
    --s3)
        (($# >= 2)) || die "--s3 needs s3://bucket/prefix"
        s3_url=$2
        shift 2
        ;;
    --s3=*)
        s3_url=${1#--s3=}
        shift
        ;;
    -h | --help)
        usage
        exit 0
        ;;
    *)
        usage >&2
        die "unknown argument: $1"
        ;;
    esac
done

[[ -n $out_dir ]] || {
    usage >&2
    die "--out DIR is required"
}
if [[ -n $keep && ! $keep =~ ^[1-9][0-9]*$ ]]; then
    die "--keep must be a whole number of at least 1, not '$keep'"
fi
if [[ -n $s3_url && ! $s3_url =~ ^s3://[^/]+ ]]; then
    die "--s3 must look like s3://bucket/prefix, not '$s3_url'"
fi
s3_url=${s3_url%/}

# -- tools: all checked before anything is written ------------------------------

PYTHON=${PYTHON:-python3}
command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found (needed to write the manifest); install python3 or set PYTHON"
command -v tar >/dev/null 2>&1 || die "tar not found"
command -v gzip >/dev/null 2>&1 || die "gzip not found (tar needs it for the media archive)"

PG_DUMP=$(pg_tool pg_dump "same major version as the server or newer")
PG_RESTORE=$(pg_tool pg_restore "same major version as the server or newer")
PSQL=$(pg_tool psql "same major version as the server or newer")

AWS_CLI=${AWS_CLI:-aws}
if [[ -n $s3_url ]]; then
    command -v "$AWS_CLI" >/dev/null 2>&1 || die "--s3 needs the AWS CLI ($AWS_CLI not found): pip install awscli, or set AWS_CLI"
fi

# -- the database URL -----------------------------------------------------------

[[ -n ${SALON_DATABASE_URL:-} ]] || die "SALON_DATABASE_URL is not set (the embedded SQLite store is backed up with 'salon backup' instead)"

libpq_url "back up"  # sets DB_URL and DB_SHOWN (password hidden)

# Salon's tables have FORCE ROW LEVEL SECURITY (docs/postgres.md): the app role
# sees every tenant's rows only with salon.scope = 'system', and pg_dump needs
# --enable-row-security to read through the policies at all.
export PGOPTIONS="${PGOPTIONS:+$PGOPTIONS }-c salon.scope=system"
export PGAPPNAME=salon-backup

# -- media ----------------------------------------------------------------------

media_storage=${SALON_MEDIA_STORAGE:-local}
case "$media_storage" in
local)
    media_dir=${SALON_MEDIA_DIR:-${SALON_DATA_DIR:-.salon}/media}
    ;;
s3)
    media_dir=""
    ;;
*)
    die "SALON_MEDIA_STORAGE must be local or s3, not '$media_storage'"
    ;;
esac

# -- the backup folder ------------------------------------------------------------

mkdir -p "$out_dir" || die "cannot create $out_dir"
out_dir=$(cd "$out_dir" && pwd) || die "cannot enter $out_dir"
[[ -w $out_dir ]] || die "$out_dir is not writable"

for _ in 1 2 3; do
    stamp=$(date -u +%Y%m%dT%H%M%SZ)
    name="salon-$stamp"
    [[ -e $out_dir/$name || -e $out_dir/.$name.partial ]] || break
    sleep 1 # one backup per second and name
done
[[ ! -e $out_dir/$name ]] || die "$out_dir/$name already exists"
work="$out_dir/.$name.partial"
final="$out_dir/$name"

PSQL_PID=""
done_ok=0
cleanup() {
    if [[ -n $PSQL_PID ]]; then
        kill "$PSQL_PID" 2>/dev/null || true
        wait "$PSQL_PID" 2>/dev/null || true
    fi
    if ((done_ok == 0)) && [[ -d $work ]]; then
        rm -rf "$work"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mkdir "$work" || die "cannot create $work"

# -- one snapshot: row counts, revision and pg_dump all see the same data ---------

say "database: $DB_SHOWN"
coproc PSQLPROC { exec "$PSQL" -X -q -A -t -v ON_ERROR_STOP=1 -d "$DB_URL" 2>"$work/psql.err"; }
PSQL_PID=$PSQLPROC_PID
# Our own copies of the pipes: bash drops the coproc's variables when it exits.
exec {psql_in}>&"${PSQLPROC[1]}" {psql_out}<&"${PSQLPROC[0]}"

sql() {
    # Run SQL in the snapshot session; print its output (tuples only, unaligned).
    local line result=""
    printf '%s\n\\echo __salon_done__\n' "$1" 1>&"$psql_in" 2>/dev/null || return 1
    while IFS= read -r -t 120 line <&"$psql_out"; do
        if [[ $line == __salon_done__ ]]; then
            printf '%s' "$result"
            return 0
        fi
        result+="$line"$'\n'
    done
    return 1
}

psql_failed() {
    local detail
    detail=$(tr '\n' ' ' <"$work/psql.err" 2>/dev/null || true)
    die "$1: ${detail:-psql ended without a message}"
}

snapshot=$(sql "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; SELECT pg_export_snapshot();") ||
    psql_failed "cannot connect to the database"
snapshot=${snapshot%$'\n'}
[[ -n $snapshot ]] || psql_failed "cannot export a snapshot"

has_alembic=$(sql "SELECT to_regclass('alembic_version') IS NOT NULL;") || psql_failed "query failed"
[[ ${has_alembic%$'\n'} == t ]] || die "the database has no alembic_version table: is SALON_DATABASE_URL a Salon database?"
revision=$(sql "SELECT coalesce(string_agg(version_num, ','), '') FROM alembic_version;") || psql_failed "query failed"
revision=${revision%$'\n'}
server_version=$(sql "SHOW server_version;") || psql_failed "query failed"
server_version=${server_version%$'\n'}
# Every table, counted in the snapshot pg_dump exports (COUNT_ROWS_SQL: pg-lib.sh).
row_counts=$(sql "$COUNT_ROWS_SQL") || psql_failed "counting rows failed"
row_counts=${row_counts%$'\n'}

pg_dump_version=$("$PG_DUMP" --version)
say "dumping ($pg_dump_version, server $server_version, revision $revision)"
if ! "$PG_DUMP" --format=custom --no-owner --enable-row-security --snapshot="$snapshot" \
    --lock-wait-timeout=120s --file="$work/database.dump" --dbname="$DB_URL"; then
    die "pg_dump failed (see its message above); nothing was kept"
fi
sql "COMMIT;" >/dev/null || psql_failed "closing the snapshot failed"
printf '\\q\n' 1>&"$psql_in" 2>/dev/null || true
exec {psql_in}>&- {psql_out}<&-
wait "$PSQL_PID" 2>/dev/null || true
PSQL_PID=""
rm -f "$work/psql.err"

# The archive must at least list: a truncated file fails here, not at restore time.
"$PG_RESTORE" --list "$work/database.dump" >/dev/null || die "the dump cannot be read back by pg_restore"

# -- media ----------------------------------------------------------------------

media_files=0
if [[ $media_storage == local ]]; then
    if [[ -d $media_dir ]]; then
        say "media: $media_dir"
        rc=0
        tar -C "$media_dir" -czf "$work/media.tar.gz" . || rc=$?
        # GNU tar: 1 = a file changed or vanished while it was read (the server is
        # running); the archive is complete otherwise. 2 = a fatal error.
        if ((rc == 1)); then
            say "warning: files changed while the media were archived (a file added meanwhile may be missing; the next backup has it)"
        elif ((rc != 0)); then
            die "archiving $media_dir failed (tar exit $rc)"
        fi
        # What the archive holds, not what the folder held a moment ago.
        media_files=$(tar -tvzf "$work/media.tar.gz" | grep -c '^-' || true)
    else
        say "warning: the media folder $media_dir does not exist (no media yet?); the archive is empty. Set SALON_MEDIA_DIR if the media live elsewhere"
        empty=$(mktemp -d)
        tar -C "$empty" -czf "$work/media.tar.gz" . || die "writing an empty media archive failed"
        rmdir "$empty"
    fi
else
    say "media: SALON_MEDIA_STORAGE=s3, the files live in the bucket; its versioning/replication is their backup (docs/backup.md)"
fi

# -- manifest -------------------------------------------------------------------

salon_version=${SALON_VERSION:-}
if [[ -z $salon_version ]]; then
    salon_version=$("$PYTHON" -c 'import importlib.metadata as m; print(m.version("salon"))' 2>/dev/null) ||
        salon_version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$(dirname "$0")/../pyproject.toml" 2>/dev/null | head -n 1) ||
        true
fi

MANIFEST_DIR=$work FORMAT_VERSION=$FORMAT_VERSION SALON_VERSION_FOUND=${salon_version:-unknown} \
    REVISION=$revision SERVER_VERSION=$server_version PG_DUMP_VERSION=$pg_dump_version \
    ROW_COUNTS=$row_counts MEDIA_STORAGE=$media_storage MEDIA_DIR=$media_dir \
    MEDIA_FILES=$media_files DB_SHOWN=$DB_SHOWN \
    "$PYTHON" - <<'PY' || die "writing the manifest failed"
import datetime
import hashlib
import json
import os
from pathlib import Path

env = os.environ
folder = Path(env["MANIFEST_DIR"])


def digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


names = ["database.dump"] + (["media.tar.gz"] if env["MEDIA_STORAGE"] == "local" else [])
files = [
    {"name": n, "sha256": digest(folder / n), "bytes": (folder / n).stat().st_size} for n in names
]
if env["MEDIA_STORAGE"] == "local":
    media = {
        "storage": "local",
        "archive": "media.tar.gz",
        "files": int(env["MEDIA_FILES"]),
        "source": env["MEDIA_DIR"],
    }
else:
    media = {
        "storage": "s3",
        "archive": None,
        "files": None,
        "note": "media live in the S3 bucket; bucket versioning/replication is their backup",
    }
manifest = {
    "format": "salon-backup",
    "format_version": int(env["FORMAT_VERSION"]),
    "kind": "postgres",
    "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "salon_version": env["SALON_VERSION_FOUND"],
    "migration_revision": env["REVISION"] or None,
    "database": {
        "engine": "postgresql",
        "file": "database.dump",
        "format": "pg_dump custom",
        "server_version": env["SERVER_VERSION"],
        "pg_dump_version": env["PG_DUMP_VERSION"],
        "source": env["DB_SHOWN"],
    },
    "media": media,
    "files": files,
    "row_counts": json.loads(env["ROW_COUNTS"]),
}
tmp = folder / "manifest.json.tmp"
tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
tmp.replace(folder / "manifest.json")
PY

mv "$work" "$final" || die "cannot move the finished backup to $final"
done_ok=1
total_rows=$("$PYTHON" -c 'import json,sys; print(sum(json.loads(sys.argv[1]).values()))' "$row_counts")
say "done: $final ($total_rows rows, $media_files media files, $(du -sh "$final" | cut -f1))"

# -- retention --------------------------------------------------------------------

if [[ -n $keep ]]; then
    # Only finished backups count (a manifest is written last); names sort by time.
    backups=()
    for manifest in "$out_dir"/salon-*/manifest.json; do
        if [[ -f $manifest ]]; then
            backups+=("${manifest%/manifest.json}")
        fi
    done
    excess=$((${#backups[@]} - keep))
    for ((i = 0; i < excess; i++)); do
        say "retention (--keep $keep): removing ${backups[i]}"
        rm -rf -- "${backups[i]}" || die "cannot remove old backup ${backups[i]}"
    done
fi

# -- upload -----------------------------------------------------------------------

if [[ -n $s3_url ]]; then
    aws_args=()
    if [[ -n ${AWS_ENDPOINT_URL:-} ]]; then
        aws_args+=(--endpoint-url "$AWS_ENDPOINT_URL")
    fi
    target="$s3_url/$name"
    say "uploading to $target/"
    # The manifest goes last: a prefix with a manifest holds a complete backup.
    "$AWS_CLI" "${aws_args[@]}" s3 cp --recursive --only-show-errors --exclude manifest.json "$final" "$target/" ||
        die "upload to $target failed (the local backup $final is complete)"
    "$AWS_CLI" "${aws_args[@]}" s3 cp --only-show-errors "$final/manifest.json" "$target/manifest.json" ||
        die "upload of the manifest to $target failed (the local backup $final is complete)"
    say "uploaded: $target/"
fi

printf '%s\n' "$final"
