"""Backup and restore of the embedded store: ``salon backup`` / ``salon restore``.

A backup is a folder ``<out>/salon-<UTC time>/`` holding

- ``database.sqlite3``: a copy of the SQLite database made with SQLite's online
  backup API (``sqlite3.Connection.backup``), which reads one consistent
  snapshot while ``salon serve`` keeps reading and writing (WAL mode);
- ``media.tar.gz``: the local media folder (absent when media live in S3);
- ``manifest.json``: the same format as ``scripts/backup.sh`` writes for
  Postgres (kind, time, Salon version, migration revision, every file's
  SHA-256 and size, the row count of every table).

A restore verifies every checksum before it touches anything, refuses to
replace an existing database or a non-empty media folder unless forced (and
refuses even then while another process has the database open), checks the
copy (``PRAGMA integrity_check``, row counts against the manifest) and only
then moves it into place. docs/backup.md is the operator's guide.

The logic here knows nothing of the terminal: progress goes through a
callback; :func:`rich_progress` adapts it to a rich progress display for the CLI.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import shutil
import sqlite3
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from server.config import Settings

MANIFEST = "manifest.json"
FORMAT = "salon-backup"
FORMAT_VERSION = 1
DATABASE_FILE = "database.sqlite3"
MEDIA_ARCHIVE = "media.tar.gz"
PREFIX = "salon-"
S3_MEDIA_NOTE = "media live in the S3 bucket; bucket versioning/replication is their backup"

#: ``progress(stage, done, total)``: ``total`` is None while it is unknown.
Progress = Callable[[str, int, int | None], None]


class BackupError(Exception):
    """A backup or restore that cannot go on; the message says why and what to do.

    ``exit_code`` is what the CLI exits with: 2 for a configuration these
    commands do not handle (Postgres), 1 for everything else.
    """

    def __init__(self, message: str, *, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class EmbeddedLocation:
    """Where the embedded store keeps its data."""

    database: Path
    #: The local media folder; None when ``SALON_MEDIA_STORAGE=s3``.
    media_dir: Path | None
    media_storage: str = "local"


@dataclass
class BackupResult:
    path: Path
    manifest: dict[str, Any]
    pruned: list[Path] = field(default_factory=list)


@dataclass
class RestoreResult:
    database: Path
    media_dir: Path | None
    manifest: dict[str, Any]
    row_counts: dict[str, int]
    media_files: int | None
    notes: list[str] = field(default_factory=list)


def _no_progress(stage: str, done: int, total: int | None) -> None:
    return None


def embedded_location(settings: Settings) -> EmbeddedLocation:
    """The SQLite file and media folder ``settings`` point at.

    A Postgres ``SALON_DATABASE_URL`` is refused: that database is backed up
    with ``scripts/backup.sh`` (pg_dump), not by copying files.
    """
    from sqlalchemy.engine import make_url

    from media.media_config import MediaConfig
    from memory.db import is_sqlite, normalize_database_url

    url = normalize_database_url(settings.database_url, settings.data_dir)
    if not is_sqlite(url):
        raise BackupError(
            "SALON_DATABASE_URL points at Postgres: back it up with scripts/backup.sh and "
            "restore with scripts/restore.sh (pg_dump/pg_restore; docs/backup.md)",
            exit_code=2,
        )
    database = make_url(url).database
    if not database or database == ":memory:":
        raise BackupError("an in-memory SQLite database cannot be backed up")
    storage = MediaConfig().media_storage
    media_dir = None if storage == "s3" else (settings.media_dir or settings.data_dir / "media")
    return EmbeddedLocation(Path(database), media_dir, storage)


# -- small helpers ---------------------------------------------------------------


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sqlite_row_counts(path: Path) -> dict[str, int]:
    """``{table: rows}`` for every table of the SQLite file (SQLite's own excluded)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' "
                "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name"
            )
        ]
        counts = {}
        for table in tables:
            quoted = '"' + table.replace('"', '""') + '"'
            # Names come from sqlite_master and are quoted as identifiers.
            counts[table] = int(conn.execute(f"SELECT count(*) FROM {quoted}").fetchone()[0])  # noqa: S608
        return counts
    finally:
        conn.close()


def _revision(conn: sqlite3.Connection) -> str | None:
    try:
        rows = conn.execute("SELECT version_num FROM alembic_version").fetchall()
    except sqlite3.DatabaseError:
        return None
    return ",".join(r[0] for r in rows) or None


def _salon_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("salon")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


def _new_backup_name(out_dir: Path, now: dt.datetime | None) -> str:
    moment = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    name = PREFIX + moment.strftime("%Y%m%dT%H%M%SZ")
    # Two backups in one second: a suffix keeps names unique and in time order.
    candidate, n = name, 1
    while (out_dir / candidate).exists() or (out_dir / f".{candidate}.partial").exists():
        n += 1
        candidate = f"{name}-{n}"
    return candidate


def list_backups(out_dir: Path) -> list[Path]:
    """Finished backups (those with a manifest) in ``out_dir``, oldest first."""
    if not out_dir.is_dir():
        return []
    return sorted(
        p for p in out_dir.iterdir() if p.name.startswith(PREFIX) and (p / MANIFEST).is_file()
    )


def prune_backups(out_dir: Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` finished backups; return what was deleted."""
    if keep < 1:
        raise ValueError("keep must be at least 1")
    backups = list_backups(out_dir)
    doomed = backups[: max(0, len(backups) - keep)]
    for path in doomed:
        shutil.rmtree(path)
    return doomed


# -- backup ----------------------------------------------------------------------


def _copy_database(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` with SQLite's online backup API.

    One step (``pages=-1``) is one read transaction: the copy is a consistent
    snapshot, and in WAL mode the server's writers are not blocked meanwhile.
    (Copying in several steps would restart whenever the server writes between
    them.) The copy is then made a single self-contained file (journal mode
    DELETE) and checked.
    """
    src = sqlite3.connect(str(source), timeout=30)
    try:
        dst = sqlite3.connect(str(target))
        try:
            src.backup(dst, pages=-1)
            dst.execute("PRAGMA journal_mode=DELETE")
            check = dst.execute("PRAGMA integrity_check").fetchone()[0]
        finally:
            dst.close()
    finally:
        src.close()
    if check != "ok":
        raise BackupError(f"the copy of {source} fails SQLite's integrity check: {check}")


def _media_files(media_dir: Path) -> list[Path]:
    return sorted(p for p in media_dir.rglob("*") if p.is_file() and not p.is_symlink())


def _archive_media(media_dir: Path, archive: Path, progress: Progress) -> tuple[int, int, int]:
    """Write ``media_dir`` into a tar.gz; return (files, bytes, vanished).

    Files removed while the server runs are skipped (counted as vanished); they
    were being deleted anyway.
    """
    files = _media_files(media_dir) if media_dir.is_dir() else []
    count = size = vanished = 0
    progress("media", 0, len(files))
    # Level 1: images, videos and GLBs are compressed already; more costs CPU for nothing.
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        for i, path in enumerate(files, 1):
            try:
                info = tar.gettarinfo(str(path), arcname=path.relative_to(media_dir).as_posix())
                with path.open("rb") as f:
                    tar.addfile(info, f)
            except FileNotFoundError:
                vanished += 1
            else:
                count += 1
                size += info.size
            progress("media", i, len(files))
    return count, size, vanished


def create_backup(
    location: EmbeddedLocation,
    out_dir: Path,
    *,
    keep: int | None = None,
    progress: Progress | None = None,
    now: dt.datetime | None = None,
) -> BackupResult:
    """Back up the embedded store into a new folder under ``out_dir``.

    Safe while ``salon serve`` runs. The folder is written as
    ``.<name>.partial`` and renamed when complete, so a failure leaves no
    half backup that looks finished. With ``keep`` only the newest ``keep``
    backups stay in ``out_dir``.
    """
    report = progress or _no_progress
    if keep is not None and keep < 1:
        raise BackupError("--keep must be at least 1")
    if not location.database.is_file():
        raise BackupError(
            f"there is no database at {location.database}: nothing to back up "
            "(is SALON_DATA_DIR / --data-dir right?)"
        )
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BackupError(f"cannot create {out_dir}: {exc}") from exc
    name = _new_backup_name(out_dir, now)
    work = out_dir / f".{name}.partial"
    final = out_dir / name
    try:
        work.mkdir()
        report("database", 0, 1)
        _copy_database(location.database, work / DATABASE_FILE)
        report("database", 1, 1)
        conn = sqlite3.connect(f"file:{work / DATABASE_FILE}?mode=ro", uri=True)
        try:
            revision = _revision(conn)
        finally:
            conn.close()
        if revision is None:
            raise BackupError(
                f"{location.database} has no alembic_version table: is it a Salon database?"
            )
        row_counts = sqlite_row_counts(work / DATABASE_FILE)

        media: dict[str, Any]
        names = [DATABASE_FILE]
        if location.media_dir is None:
            media = {"storage": "s3", "archive": None, "files": None, "note": S3_MEDIA_NOTE}
        else:
            files, size, vanished = _archive_media(location.media_dir, work / MEDIA_ARCHIVE, report)
            media = {
                "storage": "local",
                "archive": MEDIA_ARCHIVE,
                "files": files,
                "bytes": size,
                "source": str(location.media_dir),
            }
            if vanished:
                media["vanished_while_archiving"] = vanished
            names.append(MEDIA_ARCHIVE)

        entries = []
        for i, n in enumerate(names):
            report("checksums", i, len(names))
            entries.append(
                {"name": n, "sha256": sha256_file(work / n), "bytes": (work / n).stat().st_size}
            )
        report("checksums", len(names), len(names))
        manifest: dict[str, Any] = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "kind": "sqlite",
            "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "salon_version": _salon_version(),
            "migration_revision": revision,
            "database": {
                "engine": "sqlite",
                "file": DATABASE_FILE,
                "sqlite_version": sqlite3.sqlite_version,
                "source": str(location.database),
            },
            "media": media,
            "files": entries,
            "row_counts": row_counts,
        }
        (work / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        work.rename(final)
    except BaseException as exc:
        shutil.rmtree(work, ignore_errors=True)
        if isinstance(exc, OSError):
            raise BackupError(f"backup failed: {exc}") from exc
        if isinstance(exc, sqlite3.Error):
            raise BackupError(f"backup failed: SQLite: {exc}") from exc
        raise
    pruned = prune_backups(out_dir, keep) if keep is not None else []
    return BackupResult(final, manifest, pruned)


# -- verify and restore -----------------------------------------------------------


def read_manifest(backup: Path) -> dict[str, Any]:
    """The manifest of ``backup`` (a backup folder), checked for shape only."""
    path = backup / MANIFEST
    if not path.is_file():
        raise BackupError(f"{backup} has no {MANIFEST}: not a finished Salon backup")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BackupError(f"{path} cannot be read: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError(f"{path} is not a Salon backup manifest")
    if int(manifest.get("format_version", 0)) > FORMAT_VERSION:
        raise BackupError(
            f"backup format {manifest['format_version']} is newer than this Salon understands"
        )
    return manifest


def verify_backup(backup: Path, progress: Progress | None = None) -> dict[str, Any]:
    """Check every file of ``backup`` against the manifest's size and SHA-256.

    Returns the manifest; raises :class:`BackupError` naming every damaged or
    missing file.
    """
    report = progress or _no_progress
    manifest = read_manifest(backup)
    entries = manifest.get("files") or []
    problems = []
    for i, entry in enumerate(entries):
        report("checksums", i, len(entries))
        path = backup / entry["name"]
        if not path.is_file():
            problems.append(f"{entry['name']}: missing")
            continue
        size = path.stat().st_size
        if size != entry["bytes"]:
            problems.append(f"{entry['name']}: {size} bytes, the manifest says {entry['bytes']}")
            continue
        digest = sha256_file(path)
        if digest != entry["sha256"]:
            problems.append(
                f"{entry['name']}: checksum mismatch (sha256 {digest}, "
                f"the manifest says {entry['sha256']})"
            )
    report("checksums", len(entries), len(entries))
    listed = {e["name"] for e in entries}
    if manifest.get("database", {}).get("file") not in listed:
        problems.append("the manifest lists no database file")
    archive = (manifest.get("media") or {}).get("archive")
    if archive and archive not in listed:
        problems.append(f"the manifest lists no checksum for {archive}")
    if problems:
        raise BackupError(
            f"the backup {backup} is damaged, nothing was restored:\n  " + "\n  ".join(problems)
        )
    return manifest


def _known_revision(revision: str | None) -> bool:
    from alembic.script import ScriptDirectory

    from memory.migrate import alembic_config

    if not revision:
        return False
    scripts = ScriptDirectory.from_config(alembic_config())
    try:
        return all(scripts.get_revision(r) is not None for r in revision.split(","))
    except Exception:  # alembic raises several kinds for an unknown id
        return False


def _ensure_not_in_use(database: Path) -> None:
    """Refuse while another process has ``database`` open.

    Leaving WAL mode needs the only connection to the file: SQLite answers
    "database is locked" while ``salon serve`` (or anything else) holds one.
    It also checkpoints and removes the ``-wal`` file, so nothing stale is left
    to be replayed onto the restored database.
    """
    try:
        conn = sqlite3.connect(str(database), timeout=1)
        try:
            mode = conn.execute("PRAGMA journal_mode=DELETE").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.OperationalError as exc:
        raise BackupError(
            f"{database} is in use ({exc}): stop salon serve on this data folder first"
        ) from exc
    except sqlite3.DatabaseError:
        return  # a damaged file: it is being replaced, which is the point
    if str(mode).lower() != "delete":
        raise BackupError(f"{database} is in use: stop salon serve on this data folder first")


def _umask() -> int:
    current = os.umask(0o022)
    os.umask(current)
    return current


def _non_empty(folder: Path) -> bool:
    return folder.is_dir() and any(folder.iterdir())


def _check_member(member: tarfile.TarInfo) -> None:
    """Only plain files and folders with relative paths inside the archive's root."""
    parts = Path(member.name).parts
    if member.name.startswith("/") or ".." in parts or not (member.isfile() or member.isdir()):
        raise BackupError(f"the media archive holds an unsafe entry {member.name!r}; refusing it")


def _extract_media(archive: Path, target: Path, progress: Progress) -> int:
    with tarfile.open(archive, "r:gz") as tar:
        members = tar.getmembers()
        files = sum(1 for m in members if m.isfile())
        progress("media", 0, len(members))
        for i, member in enumerate(members, 1):
            _check_member(member)
            if hasattr(tarfile, "data_filter"):
                # The "data" filter also refuses links out of the folder and device files.
                tar.extract(member, target, filter="data")
            else:  # pragma: no cover - Python 3.11 before 3.11.4
                tar.extract(member, target)
            progress("media", i, len(members))
    return files


def restore_backup(
    backup: Path,
    location: EmbeddedLocation,
    *,
    force: bool = False,
    progress: Progress | None = None,
) -> RestoreResult:
    """Restore an embedded backup into ``location``.

    Checks first, changes last: the checksums, the revision (this Salon must
    know it), the target (no database and an empty media folder, unless
    ``force``; never while the database is open elsewhere); then the copy is
    staged beside its destination, checked (integrity, row counts against the
    manifest) and moved into place; the media likewise.
    """
    report = progress or _no_progress
    manifest = verify_backup(backup, report)
    if manifest.get("kind") == "postgres":
        raise BackupError(
            "this is a Postgres backup (scripts/backup.sh): restore it with scripts/restore.sh"
        )
    if manifest.get("kind") != "sqlite":
        raise BackupError(f"unknown backup kind {manifest.get('kind')!r}")
    revision = manifest.get("migration_revision")
    if not _known_revision(revision):
        raise BackupError(
            f"the backup is at database revision {revision!r}, which this Salon "
            f"({_salon_version()}) does not know: restore it with the Salon version that made it "
            f"({manifest.get('salon_version')}) or a newer one"
        )

    database = location.database
    exists = database.is_file() and database.stat().st_size > 0
    if exists and not force:
        raise BackupError(
            f"{database} already holds a database: restore into an empty data folder, or stop "
            "the server and use --force to replace it"
        )
    media_meta = manifest.get("media") or {}
    archive = media_meta.get("archive")
    media_dir = location.media_dir if archive else None
    notes: list[str] = []
    if archive and location.media_dir is None:
        notes.append(
            "SALON_MEDIA_STORAGE=s3 here: the backup's media archive was not unpacked "
            "(upload its files under the bucket's prefix to use them)"
        )
    if not archive and media_meta.get("storage") == "s3":
        notes.append("the media were in S3 when this backup was made: they are not in it")
    if media_dir is not None and _non_empty(media_dir) and not force:
        raise BackupError(
            f"the media folder {media_dir} is not empty: use --force to replace it, or set "
            "SALON_MEDIA_DIR to an empty folder"
        )
    if exists:
        _ensure_not_in_use(database)

    database.parent.mkdir(parents=True, exist_ok=True)
    staged_db = Path(
        tempfile.mkstemp(prefix=f".{database.name}.", suffix=".restoring", dir=database.parent)[1]
    )
    staged_media: Path | None = None
    try:
        report("database", 0, 1)
        shutil.copyfile(backup / manifest["database"]["file"], staged_db)
        conn = sqlite3.connect(str(staged_db))
        try:
            check = conn.execute("PRAGMA integrity_check").fetchone()[0]
        finally:
            conn.close()
        if check != "ok":
            raise BackupError(f"the backed-up database fails SQLite's integrity check: {check}")
        counts = sqlite_row_counts(staged_db)
        expected = manifest.get("row_counts") or {}
        wrong = [
            f"{t}: {counts.get(t, 'missing')} rows, the backup had {n}"
            for t, n in sorted(expected.items())
            if counts.get(t) != n
        ]
        if wrong:
            raise BackupError("row counts differ from the manifest:\n  " + "\n  ".join(wrong))
        report("database", 1, 1)

        media_files = None
        if media_dir is not None:
            media_dir.parent.mkdir(parents=True, exist_ok=True)
            staged_media = Path(
                tempfile.mkdtemp(
                    prefix=f".{media_dir.name}.", suffix=".restoring", dir=media_dir.parent
                )
            )
            media_files = _extract_media(backup / str(archive), staged_media, report)
            if media_meta.get("files") is not None and media_files != media_meta["files"]:
                raise BackupError(
                    f"the media archive holds {media_files} files, the manifest says "
                    f"{media_meta['files']}"
                )

        # Everything checked: put it in place. A stale -wal/-shm beside the new
        # file would be replayed onto it, so they go first.
        for suffix in ("-wal", "-shm", "-journal"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(f"{database}{suffix}")
        # mkstemp/mkdtemp make private (0600/0700) files; give what SQLite and
        # mkdir would have made, or keep the mode of the database being replaced.
        umask = _umask()
        os.chmod(staged_db, database.stat().st_mode & 0o777 if exists else 0o666 & ~umask)
        os.replace(staged_db, database)
        if media_dir is not None and staged_media is not None:
            if media_dir.exists():
                old = media_dir.with_name(f".{media_dir.name}.old-{os.getpid()}")
                media_dir.rename(old)
                staged_media.rename(media_dir)
                shutil.rmtree(old, ignore_errors=True)
            else:
                staged_media.rename(media_dir)
            os.chmod(media_dir, 0o777 & ~umask)
            staged_media = None
    except OSError as exc:
        raise BackupError(f"restore failed: {exc}") from exc
    except sqlite3.Error as exc:
        raise BackupError(f"restore failed: SQLite: {exc}") from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            staged_db.unlink()
        if staged_media is not None:
            shutil.rmtree(staged_media, ignore_errors=True)
    return RestoreResult(database, media_dir, manifest, counts, media_files, notes)


# -- the terminal ----------------------------------------------------------------


@contextlib.contextmanager
def rich_progress(*, transient: bool = False) -> Iterator[Progress]:
    """A :data:`Progress` callback drawing one rich bar per stage (on stderr)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
    from rich.progress import Progress as RichProgress

    labels = {
        "database": "database (SQLite backup API)",
        "media": "media files",
        "checksums": "checksums",
    }
    with RichProgress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=transient,
    ) as bar:
        tasks: dict[str, Any] = {}

        def update(stage: str, done: int, total: int | None) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(labels.get(stage, stage), total=total)
            bar.update(tasks[stage], completed=done, total=total)

        yield update
