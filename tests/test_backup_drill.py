"""Backup and restore drills (docs/backup.md).

Each drill is what an operator would rehearse: create real data through a
running ``salon serve`` (a persona, a chat that leaves memories, a generated
image), back up WHILE it runs, stop it, wipe or switch the store, restore,
compare row counts and content hashes with what was there, and start the
server again: the persona still remembers the person, the image is still served.

- Embedded: ``salon backup`` / ``salon restore`` (SQLite online backup API + media folder).
- Postgres: ``scripts/backup.sh`` / ``scripts/restore.sh`` against the test
  Postgres of tests/services_pg.py (pg_dump/pg_restore from the same pgserver
  wheel), into a fresh empty database: the HNSW index is back, checksums are
  verified (a flipped byte is refused), retention keeps N, the upload reaches
  an S3-compatible store (moto's S3 server on loopback, the real AWS CLI).
- The scripts fail clearly: missing tools, bad URLs, a non-empty target.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import SALON_BIN, ServerProcess, connect, server_env
from tests.fakes.embeddings_server import FakeEmbeddings
from tests.fakes.openai_server import FakeOpenAI
from tests.services_pg import PgServer, _import_pgserver

ROOT = Path(__file__).resolve().parents[1]
BACKUP_SH = ROOT / "scripts" / "backup.sh"
RESTORE_SH = ROOT / "scripts" / "restore.sh"
# The tables whose content the drills hash, row by row.
HASHED = ("personas", "messages", "memories")
QUESTION = "What is my dog called?"
FACT = "rob's dog is Rex"


# -- driving a server ---------------------------------------------------------------


async def _say(
    srv: ServerProcess, persona: str, user: str, text: str, conversation: str | None = None
) -> str:
    """One message in a (new or given) conversation; returns the conversation id."""
    c = await connect(srv)
    try:
        extra = {"conversation_id": conversation} if conversation else {}
        ready = await c.start(persona, user=user, **extra)
        assert ready["type"] == "session.ready", ready
        await c.send({"type": "message.create", "id": uuid.uuid4().hex[:12], "text": text})
        done = await c.until(("response.done", "error"), timeout=30)
        assert done["type"] == "response.done", done
        return str(ready["conversation_id"])
    finally:
        await c.close()


async def _wait_for_memory(srv: ServerProcess, persona: str, user: str, text: str) -> None:
    found: list[str] = []
    for _ in range(200):
        r = httpx.get(
            f"{srv.url}/v1/memories",
            params={"persona": persona, "user": user},
            headers=srv.auth,
            timeout=10,
        )
        assert r.status_code == 200, r.text
        found = [m["text"] for m in r.json()["data"]]
        if text in found:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{text!r} was never remembered: {found}")


async def _make_image(srv: ServerProcess, persona: str) -> dict[str, Any]:
    r = httpx.post(
        srv.url + "/v1/media",
        headers=srv.auth,
        json={"kind": "image", "prompt": "a red boat at dawn", "persona": persona, "user": "rob"},
        timeout=10,
    )
    assert r.status_code == 202, r.text
    item: dict[str, Any] = r.json()
    for _ in range(600):
        item = httpx.get(f"{srv.url}/v1/media/{item['id']}", headers=srv.auth, timeout=10).json()
        if item["state"] in ("done", "failed", "cancelled"):
            break
        await asyncio.sleep(0.1)
    assert item["state"] == "done", item
    return item


def _media_bytes(srv: ServerProcess, media_id: str) -> bytes:
    item = httpx.get(f"{srv.url}/v1/media/{media_id}", headers=srv.auth, timeout=10).json()
    assert item["state"] == "done" and item["url"], item
    r = httpx.get(srv.url + item["url"], timeout=10)
    assert r.status_code == 200, r.text
    return r.content


async def _create_data(srv: ServerProcess) -> dict[str, Any]:
    """A persona, two turns that leave memories, a second conversation, an image."""
    persona = srv.create_persona(name="Ada", description="a sea captain with a red coat")["id"]
    conversation = await _say(srv, persona, "rob", "Hi! My dog is called Rex.")
    await _say(srv, persona, "rob", "I live in Lyon.", conversation)
    await _say(srv, persona, "eve", "I love sailing.")
    await _wait_for_memory(srv, persona, "rob", FACT)
    await _wait_for_memory(srv, persona, "rob", "rob lives in Lyon")
    await _wait_for_memory(srv, persona, "eve", "eve likes sailing")
    image = await _make_image(srv, persona)
    return {
        "persona": persona,
        "conversation": conversation,
        "image": image["id"],
        "image_bytes": _media_bytes(srv, image["id"]),
    }


def _prompt_for(fake: FakeOpenAI, text: str) -> list[dict[str, Any]]:
    """The messages of the last chat request whose final message is ``text``."""
    for request in reversed(fake.requests):
        messages = request.get("messages") or []
        if messages and messages[-1].get("content") == text:
            return list(messages)
    raise AssertionError(f"the model was never asked {text!r}")


async def _still_remembers(
    srv: ServerProcess, fake: FakeOpenAI, data: dict[str, Any], media_bytes: bytes
) -> None:
    """After the restore: memory recall, the old conversation's history, the image."""
    # A brand-new conversation: the fact comes from long-term memory.
    await _say(srv, data["persona"], "rob", QUESTION)
    system = _prompt_for(fake, QUESTION)[0]["content"]
    assert FACT in system, system
    # The old conversation continues with its history.
    follow_up = "And where do I live? " + uuid.uuid4().hex[:6]
    assert (
        await _say(srv, data["persona"], "rob", follow_up, data["conversation"])
        == (data["conversation"])
    )
    history = [m["content"] for m in _prompt_for(fake, follow_up)]
    assert "Hi! My dog is called Rex." in history and "I live in Lyon." in history
    # The image is served again, byte for byte.
    assert _media_bytes(srv, data["image"]) == media_bytes


# -- what was there ---------------------------------------------------------------------


def _sqlite_state(db: Path) -> dict[str, Any]:
    """Row counts of every table and a content hash of the HASHED tables."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        counts = {t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}
        hashes = {
            t: hashlib.sha256(
                repr(conn.execute(f"SELECT * FROM {t} ORDER BY id").fetchall()).encode()
            ).hexdigest()
            for t in HASHED
        }
    finally:
        conn.close()
    return {"counts": counts, "hashes": hashes}


def _pg_state(pg: PgServer, database: str) -> dict[str, Any]:
    """The same for a Postgres database, read as the superuser (no row-level security)."""
    tables = [
        r[0]
        for r in pg.sql(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename",
            database=database,
        )
    ]
    counts = {
        t: int(pg.sql(f'SELECT count(*) FROM "{t}"', database=database)[0][0]) for t in tables
    }
    hashes = {
        t: pg.sql(
            f"SELECT md5(coalesce(string_agg(x::text, '|' ORDER BY x.id), '')) FROM {t} x",
            database=database,
        )[0][0]
        for t in HASHED
    }
    return {"counts": counts, "hashes": hashes}


def _files(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` by relative path (temporary files left out)."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and ".tmp" not in p.name
    }


def _settled(read: Any) -> Any:
    """Read the state until two reads 0.3 s apart agree (background jobs done)."""
    last = read()
    for _ in range(50):
        time.sleep(0.3)
        now = read()
        if now == last:
            return now
        last = now
    raise AssertionError("the data never settled")


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _run(
    cmd: list[str], env: dict[str, str], timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT, check=False
    )


def _backups(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.startswith("salon-"))


# -- embedded: salon backup / salon restore ------------------------------------------------


async def test_embedded_drill_backup_while_serving_wipe_restore_and_chat_on(
    make_server: Any, fake_llm: FakeOpenAI, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    overrides = {"SALON_MEDIA_NSFW_CHECK": "false", "SALON_MEDIA_REQUESTS_PER_MINUTE": "100"}
    srv: ServerProcess = make_server(data_dir, **overrides)
    data = await _create_data(srv)
    db = data_dir / "salon.db"
    before = _settled(lambda: _sqlite_state(db))
    assert before["counts"]["memories"] >= 3 and before["counts"]["messages"] >= 6
    assert before["counts"]["media_items"] == 1
    media_before = _files(data_dir / "media")
    assert media_before, "the image left no file in the media folder"
    # The server holds the database open in WAL mode: this backup is an online one.
    assert (data_dir / "salon.db-wal").exists()

    env = server_env(data_dir, fake_llm, **overrides)
    out = tmp_path / "backups"
    done = _run([SALON_BIN, "backup", "--out", str(out), "--keep", "3"], env)
    assert done.returncode == 0, done.stderr
    backup = Path(done.stdout.strip().splitlines()[-1])
    assert backup.parent == out and (backup / "manifest.json").is_file()
    assert httpx.get(srv.url + "/readyz", timeout=5).status_code == 200  # still serving

    manifest = json.loads((backup / "manifest.json").read_text())
    assert manifest["kind"] == "sqlite" and manifest["migration_revision"]
    assert {f["name"] for f in manifest["files"]} == {"database.sqlite3", "media.tar.gz"}
    for entry in manifest["files"]:
        assert hashlib.sha256((backup / entry["name"]).read_bytes()).hexdigest() == entry["sha256"]
    assert manifest["row_counts"] == before["counts"]
    assert manifest["media"]["files"] == len(media_before)

    srv.stop()
    assert _sqlite_state(db) == before  # nothing changed after the backup: it has it all
    shutil.rmtree(data_dir)  # the disaster

    restored = _run([SALON_BIN, "restore", str(backup)], env)
    assert restored.returncode == 0, restored.stderr
    assert "row counts match the manifest" in restored.stdout
    assert _sqlite_state(db) == before
    assert _files(data_dir / "media") == media_before

    # A second restore over it is refused; so is a damaged backup, even with --force.
    again = _run([SALON_BIN, "restore", str(backup)], env)
    assert again.returncode == 1 and "already holds a database" in again.stderr
    damaged = tmp_path / "damaged"
    shutil.copytree(backup, damaged)
    _flip_a_byte(damaged / "database.sqlite3")
    refused = _run([SALON_BIN, "restore", "--force", str(damaged)], env)
    assert refused.returncode == 1
    assert "database.sqlite3: checksum mismatch" in refused.stderr
    assert _sqlite_state(db) == before  # untouched

    srv2: ServerProcess = make_server(data_dir, **overrides)
    await _still_remembers(srv2, fake_llm, data, data["image_bytes"])

    # --force replaces a database only when no server has it open.
    busy = _run([SALON_BIN, "restore", "--force", str(backup)], env)
    assert busy.returncode == 1 and "is in use" in busy.stderr, busy.stderr
    srv2.stop()
    forced = _run([SALON_BIN, "restore", "--force", str(backup)], env)
    assert forced.returncode == 0, forced.stderr
    assert _sqlite_state(db)["hashes"] == before["hashes"]  # the chat after the restore is gone


def test_salon_backup_retention_and_refusals(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SALON_")}
    env["SALON_DATA_DIR"] = str(data_dir)
    out = tmp_path / "backups"

    missing = _run([SALON_BIN, "backup", "--out", str(out)], env)
    assert missing.returncode == 1 and "there is no database" in missing.stderr
    assert not out.exists() or not list(out.iterdir())

    assert _run([SALON_BIN, "migrate"], env).returncode == 0
    made = []
    for _ in range(4):
        done = _run([SALON_BIN, "backup", "--out", str(out), "--keep", "2"], env)
        assert done.returncode == 0, done.stderr
        made.append(Path(done.stdout.strip()))
    assert _backups(out) == made[-2:]  # the newest two, the others pruned
    assert len(set(made)) == 4

    pg = _run(
        [SALON_BIN, "backup", "--out", str(out)],
        {**env, "SALON_DATABASE_URL": "postgresql://salon@db.invalid/salon"},
    )
    assert pg.returncode == 2 and "scripts/backup.sh" in pg.stderr

    not_a_backup = _run([SALON_BIN, "restore", str(tmp_path)], env)
    assert not_a_backup.returncode == 1 and "no manifest.json" in not_a_backup.stderr


# -- Postgres: scripts/backup.sh / scripts/restore.sh ------------------------------------


@pytest.fixture
def pg_bin() -> Path:
    """pg_dump, pg_restore and psql of the same wheel as the test server."""
    pgserver = _import_pgserver()  # fails (never skips silently) without the dev extra
    folder = Path(pgserver.__file__).parent / "pginstall" / "bin"
    assert (folder / "pg_dump").is_file(), f"no pg_dump in {folder}"
    return folder


@pytest.fixture
def fresh_database(pg_server: PgServer) -> Iterator[Any]:
    """Make more empty databases in a test; all dropped afterwards."""
    made: list[str] = []

    def _make() -> tuple[str, str]:
        name = pg_server.create_database()
        made.append(name)
        return name, pg_server.url(name)

    yield _make
    for name in made:
        pg_server.drop_database(name)


@pytest.fixture(scope="module")
def embeddings() -> Iterator[FakeEmbeddings]:
    server = FakeEmbeddings(default_dims=12).start()
    yield server
    server.stop()


def _script_env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SALON_", "AWS_", "PG"))}
    env.update(values)
    return env


def _db_name(url: str) -> str:
    return url.split("@/", 1)[1].split("?", 1)[0]


async def test_postgres_drill_backup_sh_restore_sh_into_a_fresh_database(
    make_server: Any,
    fake_llm: FakeOpenAI,
    embeddings: FakeEmbeddings,
    pg_server: PgServer,
    postgres_url: str,
    fresh_database: Any,
    pg_bin: Path,
    tmp_path: Path,
) -> None:
    media_a = tmp_path / "media-a"
    overrides = {
        "SALON_DATABASE_URL": postgres_url,
        "SALON_MEDIA_DIR": str(media_a),
        "SALON_MEDIA_NSFW_CHECK": "false",
        "SALON_MEDIA_REQUESTS_PER_MINUTE": "100",
        # Real vectors, so the HNSW index has something to hold.
        "SALON_EMBEDDINGS_PROVIDER": "openai",
        "SALON_EMBEDDINGS_BASE_URL": embeddings.base_url,
        "SALON_EMBEDDINGS_MODEL": "fake-embed-12",
        "SALON_EMBEDDINGS_DIMENSIONS": "12",
    }
    srv: ServerProcess = make_server(tmp_path / "data-a", **overrides)
    data = await _create_data(srv)
    source = _db_name(postgres_url)
    before = _settled(lambda: _pg_state(pg_server, source))
    assert before["counts"]["memories"] >= 3 and before["counts"]["media_items"] == 1
    vectors = pg_server.sql(
        "SELECT count(*) FROM memories WHERE embedding IS NOT NULL", database=source
    )[0][0]
    assert vectors >= 3
    media_before = _files(media_a)
    assert media_before

    out = tmp_path / "backups"
    env = _script_env(
        SALON_DATABASE_URL=postgres_url.replace("postgresql://", "postgresql+asyncpg://"),
        SALON_MEDIA_DIR=str(media_a),
        PG_BIN=str(pg_bin),
    )
    done = _run(["bash", str(BACKUP_SH), "--out", str(out), "--keep", "2"], env)  # online
    assert done.returncode == 0, done.stderr
    backup = Path(done.stdout.strip())
    assert "salon-app-pw" not in done.stderr  # the password is never printed
    manifest = json.loads((backup / "manifest.json").read_text())
    assert manifest["kind"] == "postgres" and manifest["migration_revision"]
    assert manifest["database"]["pg_dump_version"].startswith("pg_dump (PostgreSQL) 16")
    assert manifest["row_counts"] == before["counts"]  # counted in pg_dump's own snapshot
    assert manifest["media"] == {
        "storage": "local",
        "archive": "media.tar.gz",
        "files": len(media_before),
        "source": str(media_a),
    }
    for entry in manifest["files"]:
        assert hashlib.sha256((backup / entry["name"]).read_bytes()).hexdigest() == entry["sha256"]

    srv.stop()
    assert _pg_state(pg_server, source) == before

    # Restore into a brand-new empty database and an empty media folder.
    target, target_url = fresh_database()
    media_b = tmp_path / "media-b"
    restore_env = _script_env(
        SALON_DATABASE_URL=target_url, SALON_MEDIA_DIR=str(media_b), PG_BIN=str(pg_bin)
    )
    restored = _run(["bash", str(RESTORE_SH), str(backup)], restore_env)
    assert restored.returncode == 0, restored.stderr
    assert "row counts match the manifest" in restored.stderr
    assert "reindexing: " in restored.stderr and "ix_memories_embedding" in restored.stderr
    assert _pg_state(pg_server, target) == before
    assert _files(media_b) == media_before
    hnsw = pg_server.sql(
        "SELECT i.indexname, x.indisvalid FROM pg_indexes i "
        "JOIN pg_class c ON c.relname = i.indexname JOIN pg_index x ON x.indexrelid = c.oid "
        "WHERE i.tablename = 'memories' AND i.indexdef ILIKE '%USING hnsw%'",
        database=target,
    )
    assert ("ix_memories_embedding", True) in hnsw
    policies = "SELECT count(*) FROM pg_policies WHERE schemaname = 'public'"
    assert pg_server.sql(policies, database=target) == pg_server.sql(policies, database=source)
    owner = pg_server.sql(
        "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'", database=target
    )
    assert owner == [("salon_app",)]

    # The server runs on the restored database and the persona remembers.
    srv2: ServerProcess = make_server(
        tmp_path / "data-b",
        **{**overrides, "SALON_DATABASE_URL": target_url, "SALON_MEDIA_DIR": str(media_b)},
    )
    await _still_remembers(srv2, fake_llm, data, data["image_bytes"])
    srv2.stop()

    # Refusals: a database that is not empty; a media folder that is not empty; a damaged dump.
    again = _run(["bash", str(RESTORE_SH), str(backup)], restore_env)
    assert again.returncode == 1 and "target database is not empty" in again.stderr
    other, other_url = fresh_database()
    busy_media = _run(
        ["bash", str(RESTORE_SH), str(backup)], {**restore_env, "SALON_DATABASE_URL": other_url}
    )
    assert busy_media.returncode == 1 and "is not empty: use --force" in busy_media.stderr
    damaged = tmp_path / "damaged"
    shutil.copytree(backup, damaged)
    _flip_a_byte(damaged / "database.dump")
    refused = _run(
        ["bash", str(RESTORE_SH), "--force", str(damaged)],
        {**restore_env, "SALON_DATABASE_URL": other_url},
    )
    assert refused.returncode == 1
    assert "database.dump: checksum mismatch" in refused.stderr
    assert "nothing was restored" in refused.stderr
    assert pg_server.sql(
        "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'", database=other
    ) == [(0,)]

    # Retention: two more backups with --keep 2 leave the newest two.
    later = []
    for _ in range(2):
        more = _run(["bash", str(BACKUP_SH), "--out", str(out), "--keep", "2"], env)
        assert more.returncode == 0, more.stderr
        later.append(Path(more.stdout.strip()))
    assert _backups(out) == later
    assert not backup.exists()


def _aws_cli() -> str | None:
    """The AWS CLI: the venv's if a dev install added it, else the one on PATH."""
    beside = Path(sys.executable).parent / "aws"
    return str(beside) if beside.is_file() else shutil.which("aws")


async def test_backup_sh_uploads_to_an_s3_compatible_store(
    postgres_url: str, pg_bin: Path, fresh_database: Any, tmp_path: Path
) -> None:
    aws = _aws_cli()
    if aws is None:
        if os.environ.get("CI"):
            pytest.fail("the AWS CLI is needed for the S3 upload drill: pip install awscli")
        pytest.skip("the AWS CLI (pip install awscli) is not installed")
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    try:
        import boto3

        endpoint = f"http://127.0.0.1:{port}"
        keys = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}
        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
        )
        s3.create_bucket(Bucket="salon-backups")
        env = _script_env(
            SALON_DATABASE_URL=postgres_url,
            SALON_DATA_DIR=str(tmp_path / "data"),
            PG_BIN=str(pg_bin),
            AWS_ENDPOINT_URL=endpoint,
            AWS_DEFAULT_REGION="us-east-1",
            AWS_CLI=aws,
            **keys,
        )
        migrated = _run([SALON_BIN, "migrate"], env)
        assert migrated.returncode == 0, migrated.stderr
        done = _run(
            [
                "bash",
                str(BACKUP_SH),
                "--out",
                str(tmp_path / "b"),
                "--s3",
                "s3://salon-backups/nightly/",
            ],
            env,
        )
        assert done.returncode == 0, done.stderr
        backup = Path(done.stdout.strip())
        listed = s3.list_objects_v2(Bucket="salon-backups", Prefix="nightly/")
        names = sorted(o["Key"] for o in listed.get("Contents", []))
        prefix = f"nightly/{backup.name}/"
        assert names == [prefix + n for n in ("database.dump", "manifest.json", "media.tar.gz")]
        manifest = json.loads((backup / "manifest.json").read_text())
        body = s3.get_object(Bucket="salon-backups", Key=prefix + "database.dump")["Body"].read()
        assert hashlib.sha256(body).hexdigest() == manifest["files"][0]["sha256"]
        # The media folder did not exist: an empty archive, and a warning that says so.
        assert "does not exist" in done.stderr and manifest["media"]["files"] == 0

        # A store that refuses the upload: non-zero, and the local backup is kept.
        failed = _run(
            ["bash", str(BACKUP_SH), "--out", str(tmp_path / "b"), "--s3", "s3://no-such-bucket/x"],
            env,
        )
        assert failed.returncode == 1 and "upload to s3://no-such-bucket/x/" in failed.stderr
        assert len(_backups(tmp_path / "b")) == 2
    finally:
        moto.stop()

    # Media in S3: the backup records it and holds the database only; the restore says so.
    s3_media = _run(
        ["bash", str(BACKUP_SH), "--out", str(tmp_path / "c")],
        {**env, "SALON_MEDIA_STORAGE": "s3"},
    )
    assert s3_media.returncode == 0, s3_media.stderr
    backup = Path(s3_media.stdout.strip())
    manifest = json.loads((backup / "manifest.json").read_text())
    assert manifest["media"]["storage"] == "s3" and manifest["media"]["archive"] is None
    assert sorted(p.name for p in backup.iterdir()) == ["database.dump", "manifest.json"]
    _, target_url = fresh_database()
    restored = _run(
        ["bash", str(RESTORE_SH), str(backup)],
        _script_env(SALON_DATABASE_URL=target_url, PG_BIN=str(pg_bin)),
    )
    assert restored.returncode == 0, restored.stderr
    assert "the files are in the bucket" in restored.stderr


# -- the scripts fail clearly -----------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_backup_sh_fails_clearly_on_missing_tools_and_bad_urls(
    pg_bin: Path, tmp_path: Path
) -> None:
    out = tmp_path / "b"
    url = f"postgresql://salon:pw@127.0.0.1:{_closed_port()}/salon"

    def backup(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return _run(["bash", str(BACKUP_SH), "--out", str(out), *args], _script_env(**env))

    no_pg = backup(SALON_DATABASE_URL=url, PG_BIN=str(tmp_path / "nowhere"))
    assert no_pg.returncode == 1
    assert f"PG_BIN={tmp_path / 'nowhere'} has no executable pg_dump" in no_pg.stderr

    no_aws = backup("--s3", "s3://bucket/x", SALON_DATABASE_URL=url, AWS_CLI="/nonexistent/aws")
    assert no_aws.returncode == 1 and "needs the AWS CLI" in no_aws.stderr

    no_python = backup(SALON_DATABASE_URL=url, PYTHON="/nonexistent/python3")
    assert no_python.returncode == 1 and "/nonexistent/python3 not found" in no_python.stderr

    unset = backup()
    assert unset.returncode == 1 and "SALON_DATABASE_URL is not set" in unset.stderr

    sqlite = backup(SALON_DATABASE_URL="sqlite:///x.db")
    assert sqlite.returncode == 1 and "salon backup" in sqlite.stderr

    refused = backup(SALON_DATABASE_URL=url, PG_BIN=str(pg_bin))
    assert refused.returncode == 1
    assert "cannot connect to the database" in refused.stderr
    assert "refused" in refused.stderr.lower()
    assert "pw@" not in refused.stderr  # the password is hidden

    bad_keep = backup("--keep", "0", SALON_DATABASE_URL=url)
    assert bad_keep.returncode == 1 and "--keep must be" in bad_keep.stderr
    # No failure left anything behind that looks like a backup.
    assert not out.exists() or list(out.iterdir()) == []


def test_backup_sh_refuses_a_database_that_is_not_salons(
    postgres_url: str, pg_bin: Path, tmp_path: Path
) -> None:
    env = _script_env(SALON_DATABASE_URL=postgres_url, PG_BIN=str(pg_bin))
    done = _run(["bash", str(BACKUP_SH), "--out", str(tmp_path / "b")], env)
    assert done.returncode == 1 and "no alembic_version table" in done.stderr
    assert list((tmp_path / "b").iterdir()) == []


def test_restore_sh_refuses_bad_input(tmp_path: Path) -> None:
    env = _script_env(SALON_DATABASE_URL="postgresql://salon@127.0.0.1:1/salon")

    def restore(*args: str) -> subprocess.CompletedProcess[str]:
        return _run(["bash", str(RESTORE_SH), *args], env)

    assert "BACKUP_DIR is required" in restore().stderr
    nothing = restore(str(tmp_path))
    assert nothing.returncode == 1 and "no manifest.json" in nothing.stderr

    sqlite_backup = tmp_path / "salon-x"
    sqlite_backup.mkdir()
    (sqlite_backup / "manifest.json").write_text(
        json.dumps({"format": "salon-backup", "format_version": 1, "kind": "sqlite", "files": []})
    )
    wrong_kind = restore(str(sqlite_backup))
    assert wrong_kind.returncode == 1 and "salon restore" in wrong_kind.stderr

    missing = tmp_path / "salon-y"
    missing.mkdir()
    (missing / "manifest.json").write_text(
        json.dumps(
            {
                "format": "salon-backup",
                "format_version": 1,
                "kind": "postgres",
                "database": {"file": "database.dump"},
                "files": [{"name": "database.dump", "sha256": "0" * 64, "bytes": 3}],
            }
        )
    )
    gone = restore(str(missing))
    assert gone.returncode == 1 and "database.dump: missing" in gone.stderr
