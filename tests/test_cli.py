"""The `salon` command line, run as a real console script, and the `salon chat` client."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import queue
import re
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from agents.cards import write_png_card
from server.chat_client import ChatClient
from tests.conftest import SALON_BIN, ServerProcess, server_env
from tests.fakes.openai_server import FakeOpenAI

FAKE_REPLY = "Hello from the fake model."


def cli_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SALON_")}
    env.update(SALON_DATA_DIR=str(data_dir), COLUMNS="200", NO_COLOR="1", **extra)
    return env


def salon(
    *args: str, data_dir: Path, timeout: float = 60, **extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SALON_BIN, *args],
        env=cli_env(data_dir, **extra),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def v2_card(name: str) -> dict[str, Any]:
    return {
        "spec": "chara_card_v2",
        "spec_version": "2.0",
        "data": {
            "name": name,
            "description": "A lighthouse keeper.",
            "personality": "patient",
            "first_mes": "The lamp is lit.",
            "extensions": {"other_tool": {"keep": [1, 2]}},
        },
    }


# -- help, migrate, worker ----------------------------------------------------------------


def test_help_lists_the_commands(tmp_path: Path) -> None:
    r = salon("--help", data_dir=tmp_path)
    assert r.returncode == 0, r.stderr
    for command in ("serve", "migrate", "worker", "chat", "personas", "tenants"):
        assert re.search(rf"\b{command}\b", r.stdout), command
    r = salon("personas", "--help", data_dir=tmp_path)
    assert r.returncode == 0 and "import" in r.stdout
    r = salon("tenants", "--help", data_dir=tmp_path)
    assert r.returncode == 0 and "create" in r.stdout


def test_unknown_command_fails(tmp_path: Path) -> None:
    r = salon("frobnicate", data_dir=tmp_path)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr


def test_migrate_prints_the_revision_and_is_idempotent(tmp_path: Path) -> None:
    data = tmp_path / "fresh"
    first = salon("migrate", data_dir=data)
    assert first.returncode == 0, first.stderr
    from alembic.script import ScriptDirectory

    from memory.migrate import alembic_config

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head and re.search(rf"\b{head}\b", first.stdout), first.stdout
    assert (data / "salon.db").exists()
    second = salon("migrate", data_dir=data)
    assert second.returncode == 0, second.stderr
    assert second.stdout == first.stdout


def test_migrate_data_dir_flag_overrides_the_environment(tmp_path: Path) -> None:
    env_dir, flag_dir = tmp_path / "env", tmp_path / "flag"
    r = salon("migrate", "--data-dir", str(flag_dir), data_dir=env_dir)
    assert r.returncode == 0, r.stderr
    assert (flag_dir / "salon.db").exists() and not env_dir.exists()


def test_worker_without_redis_exits_2_with_a_message(tmp_path: Path) -> None:
    r = salon("worker", data_dir=tmp_path)
    assert r.returncode == 2
    assert "SALON_REDIS_URL" in r.stderr
    assert "Traceback" not in r.stderr


# -- tenants ------------------------------------------------------------------------------


def test_tenant_key_is_printed_once_and_authenticates(tmp_path: Path, make_server: Any) -> None:
    data = tmp_path / "acme-data"
    r = salon("tenants", "create", "acme", data_dir=data)
    assert r.returncode == 0, r.stderr
    keys = re.findall(r"sk_salon_\S+", r.stdout + r.stderr)
    assert len(keys) == 1, (r.stdout, r.stderr)
    key = keys[0]
    assert r.stdout.strip().splitlines()[-1] == key  # alone on its line: easy to capture
    assert key not in r.stderr
    assert "acme" in r.stdout

    other = salon("tenants", "create", "acme-two", data_dir=data)
    assert other.returncode == 0
    other_key = other.stdout.strip().splitlines()[-1]
    assert other_key.startswith("sk_salon_") and other_key != key

    srv: ServerProcess = make_server(data_dir=data)
    acme = {"Authorization": f"Bearer {key}"}
    r2 = httpx.get(srv.url + "/v1/personas", headers=acme, timeout=10)
    assert r2.status_code == 200 and r2.json() == {"data": []}
    created = httpx.post(srv.url + "/v1/personas", json={"name": "Acme Bot"}, headers=acme)
    assert created.status_code == 201
    # the database was not empty at the server's first start: no bootstrap tenant
    assert httpx.get(srv.url + "/v1/personas", headers=srv.auth).status_code == 401
    assert (
        httpx.get(
            srv.url + "/v1/personas", headers={"Authorization": "Bearer sk_salon_x"}
        ).status_code
        == 401
    )
    # tenants are separate
    theirs = httpx.get(
        srv.url + "/v1/personas", headers={"Authorization": f"Bearer {other_key}"}
    ).json()
    assert theirs == {"data": []}
    # and the key is not written to the server log
    assert key not in srv.log()


# -- personas import ----------------------------------------------------------------------


def test_import_png_card_is_visible_over_http(tmp_path: Path, make_server: Any) -> None:
    data = tmp_path / "shared"
    srv: ServerProcess = make_server(data_dir=data)
    card_path = tmp_path / "keeper.png"
    card_path.write_bytes(write_png_card(v2_card("Lighthouse Keeper")))

    r = salon("personas", "import", str(card_path), data_dir=data)
    assert r.returncode == 0, r.stderr
    m = re.search(r"id=(\S+) slug=(\S+)", r.stdout)
    assert m, r.stdout
    pid, slug = m.groups()
    assert slug == "lighthouse-keeper"

    got = httpx.get(f"{srv.url}/v1/personas/{pid}", headers=srv.auth, timeout=10)
    assert got.status_code == 200, got.text
    persona = got.json()
    assert persona["slug"] == slug and persona["name"] == "Lighthouse Keeper"
    assert persona["personality"] == "patient"
    assert persona["extensions"]["other_tool"] == {"keep": [1, 2]}
    by_slug = httpx.get(f"{srv.url}/v1/personas/{slug}", headers=srv.auth, timeout=10)
    assert by_slug.json()["id"] == pid

    # importing the same card again makes a second persona with a numbered slug
    again = salon("personas", "import", str(card_path), data_dir=data)
    assert again.returncode == 0, again.stderr
    assert "slug=lighthouse-keeper-2" in again.stdout


def test_import_json_card_into_a_named_tenant(tmp_path: Path, make_server: Any) -> None:
    data = tmp_path / "named"
    srv: ServerProcess = make_server(data_dir=data)
    created = salon("tenants", "create", "second", data_dir=data)
    key = created.stdout.strip().splitlines()[-1]
    tenant_id = re.search(r"id=(\S+)", created.stdout).group(1)  # type: ignore[union-attr]
    card = tmp_path / "card.json"
    card.write_text(json.dumps(v2_card("Second Keeper")), encoding="utf-8")
    r = salon("personas", "import", str(card), "--tenant", tenant_id, data_dir=data)
    assert r.returncode == 0, r.stderr
    slug = re.search(r"slug=(\S+)", r.stdout).group(1)  # type: ignore[union-attr]
    mine = httpx.get(
        f"{srv.url}/v1/personas/{slug}", headers={"Authorization": f"Bearer {key}"}, timeout=10
    )
    assert mine.status_code == 200
    # not in the default (first) tenant
    assert httpx.get(f"{srv.url}/v1/personas/{slug}", headers=srv.auth).status_code == 404


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("garbage.png", b"this is not an image at all", "not a PNG"),
        ("garbage.bin", b"\x00\x01\x02 binary junk", "neither a PNG card nor valid JSON"),
        ("list.json", b"[1, 2, 3]", "JSON object"),
        ("typo.json", b'{"name": "X", "personalty": "y"}', "personalty"),
        ("empty.json", b"", "valid JSON"),
        ("missing.json", None, "No such file"),
    ],
)
def test_import_bad_file_exits_1_with_a_clear_message(
    tmp_path: Path, name: str, content: bytes | None, message: str
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    r = salon("personas", "import", str(path), data_dir=tmp_path / "data")
    assert r.returncode == 1
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout
    assert r.stderr.startswith("salon: cannot import")
    assert name in r.stderr and message in r.stderr
    assert r.stdout == ""


def test_import_png_without_a_card_exits_1(tmp_path: Path) -> None:
    from PIL import Image

    path = tmp_path / "plain.png"
    Image.new("RGB", (2, 2)).save(path)
    r = salon("personas", "import", str(path), data_dir=tmp_path / "data")
    assert r.returncode == 1
    assert "no character card" in r.stderr and "Traceback" not in r.stderr


def test_import_into_an_unknown_tenant_says_so(tmp_path: Path) -> None:
    card = tmp_path / "card.json"
    card.write_text(json.dumps(v2_card("Nobody")), encoding="utf-8")
    r = salon("personas", "import", str(card), "--tenant", "ten_bogus", data_dir=tmp_path / "d")
    assert r.returncode == 1
    assert "ten_bogus" in r.stderr
    assert "slug" not in r.stderr


# -- salon chat (subprocess) --------------------------------------------------------------


class ChatProcess:
    """`salon chat` with piped stdin and a thread collecting stdout."""

    def __init__(self, *args: str, data_dir: Path) -> None:
        self.proc = subprocess.Popen(
            [SALON_BIN, "chat", *args],
            env=cli_env(data_dir, PYTHONUNBUFFERED="1"),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._chunks: queue.Queue[str] = queue.Queue()
        self.stdout = ""
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        while True:
            ch = self.proc.stdout.read(1)
            if not ch:
                return
            self._chunks.put(ch)

    def _drain(self) -> None:
        with contextlib.suppress(queue.Empty):
            while True:
                self.stdout += self._chunks.get_nowait()

    def wait_for(self, text: str, timeout: float = 30) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            self._drain()
            if text in self.stdout:
                return
            if self.proc.poll() is not None:
                time.sleep(0.2)
                self._drain()
                if text in self.stdout:
                    return
                break
            time.sleep(0.05)
        raise AssertionError(f"{text!r} not printed; stdout so far:\n{self.stdout}")

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def finish(self, timeout: float = 30) -> tuple[int, str]:
        try:
            code = self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(5)
        time.sleep(0.1)
        self._drain()
        assert self.proc.stderr is not None
        return code, self.proc.stderr.read()


def test_chat_streams_a_reply_and_quits(tmp_path: Path, make_server: Any) -> None:
    srv: ServerProcess = make_server()
    p = srv.create_persona(name="Terminal Ada")
    chat = ChatProcess(
        p["slug"], "--url", srv.url, "--key", srv.key, "--user", "cli-user", data_dir=tmp_path
    )
    try:
        chat.send("hello")
        chat.wait_for(FAKE_REPLY, timeout=30)
        chat.send("/quit")
        code, stderr = chat.finish()
    finally:
        if chat.proc.poll() is None:
            chat.proc.kill()
    assert code == 0, (chat.stdout, stderr)
    assert f"{p['slug']}: {FAKE_REPLY}" in chat.stdout
    assert chat.stdout.count(FAKE_REPLY) == 1
    assert "Traceback" not in stderr


def test_chat_end_of_input_exits_0(tmp_path: Path, make_server: Any) -> None:
    srv: ServerProcess = make_server()
    p = srv.create_persona()
    chat = ChatProcess(
        p["id"], "--url", srv.url, "--key", srv.key, "--user", "eof", data_dir=tmp_path
    )
    assert chat.proc.stdin is not None
    chat.proc.stdin.close()
    code, stderr = chat.finish()
    assert code == 0, (chat.stdout, stderr)


def test_chat_with_a_wrong_key_exits_1(tmp_path: Path, make_server: Any) -> None:
    srv: ServerProcess = make_server()
    p = srv.create_persona()
    chat = ChatProcess(
        p["slug"], "--url", srv.url, "--key", "sk_wrong", "--user", "u", data_dir=tmp_path
    )
    code, stderr = chat.finish(timeout=30)
    assert code == 1
    assert "401" in chat.stdout + stderr and "key" in (chat.stdout + stderr).lower()
    assert "Traceback" not in stderr


def test_chat_with_an_unknown_persona_exits_1(tmp_path: Path, make_server: Any) -> None:
    srv: ServerProcess = make_server()
    chat = ChatProcess(
        "no-such-persona", "--url", srv.url, "--key", srv.key, "--user", "u", data_dir=tmp_path
    )
    code, stderr = chat.finish(timeout=30)
    assert code == 1
    assert "unknown_persona" in chat.stdout
    assert "Traceback" not in stderr


def test_chat_without_a_key_exits_2(tmp_path: Path) -> None:
    r = salon("chat", "ada", "--url", "http://127.0.0.1:9", data_dir=tmp_path)
    assert r.returncode == 2
    assert "--key" in r.stderr


def test_chat_takes_the_key_from_the_environment(tmp_path: Path, make_server: Any) -> None:
    srv: ServerProcess = make_server()
    p = srv.create_persona()
    r = subprocess.run(
        [SALON_BIN, "chat", p["slug"], "--url", srv.url, "--user", "env-user"],
        env=cli_env(tmp_path, SALON_API_KEY=srv.key),
        input="hello\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    # stdin ends right after the line: the client may leave before the reply, but it
    # must have been let in (no 401) and exit cleanly
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert "refused" not in r.stdout and "Traceback" not in r.stderr


# -- salon chat: reconnect and resume across a server restart ----------------------------


async def _wait_for(out: io.StringIO, pattern: str, timeout: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not re.search(pattern, out.getvalue()):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{pattern!r} not printed; output:\n{out.getvalue()}")
        await asyncio.sleep(0.05)


async def test_chat_client_reconnects_and_resumes_after_a_restart(
    tmp_path: Path, make_server: Any, fake_llm: FakeOpenAI
) -> None:
    data = tmp_path / "restart"
    srv: ServerProcess = make_server(data_dir=data)
    p = srv.create_persona(name="Storyteller")
    out = io.StringIO()
    client = ChatClient(srv.url, srv.key, p["slug"], "listener", None, out)
    lines: asyncio.Queue[str | None] = asyncio.Queue()
    task = asyncio.create_task(client.run(lines))
    loop = asyncio.get_running_loop()
    srv2: ServerProcess | None = None
    try:
        await lines.put("[slow] story")
        await _wait_for(out, r"w3 ", timeout=30)
        printed_before = len(re.findall(r"\bw\d+ ", out.getvalue()))
        assert client.conversation_id is not None
        assert await loop.run_in_executor(None, srv.stop) in (0, -15)

        srv2 = ServerProcess(data, server_env(data, fake_llm))
        srv2.port = srv.port
        await loop.run_in_executor(None, srv2.start)

        await _wait_for(out, r"\[error shutdown", timeout=60)
        await lines.put("/quit")
        assert await asyncio.wait_for(task, 30) == 0
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if srv2 is not None:
            srv2.stop()

    text = out.getvalue()
    assert "[connection lost" in text  # it noticed the drop and went on by itself
    words = [int(n) for n in re.findall(r"\bw(\d+) ", text)]
    assert words == list(range(len(words))), f"gap or repeat in the resumed reply:\n{text}"
    assert len(words) >= printed_before >= 4
    assert len(words) < 200  # the reply was cut by the shutdown, not finished
    assert text.count("[error shutdown") == 1
    assert text.count(f"{p['slug']}: ") == 1  # the reply was not started twice


# -- ChatClient against a scripted server (protocol details) -----------------------------


class ScriptedServer:
    """A WebSocket server that plays one script per connection and records what it got."""

    def __init__(self, scripts: list[list[dict[str, Any] | None]]) -> None:
        self.scripts = scripts
        self.received: list[list[dict[str, Any]]] = []
        self.server: Any = None

    async def handler(self, ws: Any) -> None:
        n = len(self.received)
        got: list[dict[str, Any]] = []
        self.received.append(got)
        got.append(json.loads(await ws.recv()))  # session.start
        script = self.scripts[n] if n < len(self.scripts) else []
        for event in script:
            if event is None:  # drop the connection without a close handshake
                ws.transport.abort()
                return
            await ws.send(json.dumps(event))
        with contextlib.suppress(websockets.ConnectionClosed):
            async for frame in ws:
                got.append(json.loads(frame))

    async def __aenter__(self) -> ScriptedServer:
        self.server = await websockets.serve(self.handler, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        await self.server.wait_closed()

    @property
    def url(self) -> str:
        port = next(iter(self.server.sockets)).getsockname()[1]
        return f"http://127.0.0.1:{port}"


def _ready(seq: int) -> dict[str, Any]:
    return {
        "type": "session.ready",
        "conversation_id": "conv_1",
        "persona": "per_1",
        "persona_slug": "ada",
        "seq": seq,
    }


def _delta(seq: int, text: str) -> dict[str, Any]:
    return {
        "type": "response.text.delta",
        "conversation_id": "conv_1",
        "seq": seq,
        "response_id": "r1",
        "delta": text,
    }


async def _run_scripted(
    scripts: list[list[dict[str, Any] | None]], connections: int
) -> tuple[ScriptedServer, str]:
    async with ScriptedServer(scripts) as fake:
        out = io.StringIO()
        client = ChatClient(fake.url, "k", "ada", "u", None, out)
        lines: asyncio.Queue[str | None] = asyncio.Queue()
        task = asyncio.create_task(client.run(lines))
        try:
            deadline = asyncio.get_running_loop().time() + 20
            while len(fake.received) < connections:
                assert asyncio.get_running_loop().time() < deadline, out.getvalue()
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.2)
            await lines.put(None)
            assert await asyncio.wait_for(task, 10) == 0
        finally:
            if not task.done():
                task.cancel()
        return fake, out.getvalue()


async def test_chat_client_resumes_after_the_last_event_it_printed() -> None:
    fake, text = await _run_scripted(
        [
            [_ready(2), _delta(3, "a "), _delta(4, "b "), None],
            [_ready(6), _delta(5, "c "), _delta(6, "d ")],
        ],
        connections=2,
    )
    first, second = fake.received[0][0], fake.received[1][0]
    assert first["type"] == "session.start" and "conversation_id" not in first
    assert second["conversation_id"] == "conv_1" and second["resume_after"] == 4
    assert "a b " in text and "c d " in text


async def test_chat_client_drop_right_after_ready_does_not_skip_events() -> None:
    fake, _text = await _run_scripted(
        [
            [_ready(2), _delta(3, "a "), None],
            [_ready(9), None],  # the network goes before the replay of 4..9 arrives
            [_ready(9)],
        ],
        connections=3,
    )
    assert fake.received[1][0]["resume_after"] == 3
    assert fake.received[2][0]["resume_after"] == 3, "events 4..9 were never shown"
