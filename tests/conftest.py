"""Shared fixtures: a fake OpenAI server, real `salon serve` processes, client helpers."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from tests.fakes.openai_server import FakeOpenAI, free_port

pytest_plugins = ["tests.services_pg", "tests.services_redis"]

SALON_BIN = str(Path(sys.executable).parent / "salon")
TEST_KEY = "sk_test_" + "k" * 32


@pytest.fixture(scope="session")
def fake_llm() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI().start()
    yield server
    server.stop()


class ServerProcess:
    """A real `salon serve` on a free loopback port, stopped by its pid."""

    def __init__(self, data_dir: Path, env: dict[str, str]) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.env = env
        self.key = env.get("SALON_BOOTSTRAP_KEY", TEST_KEY)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / "server.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/ws"

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def start(self, timeout: float = 60) -> ServerProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [SALON_BIN, "serve", "--port", str(self.port)],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"salon serve exited early:\n{self.log()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"salon serve did not become ready:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def create_persona(self, **fields: Any) -> dict[str, Any]:
        body = {"name": fields.pop("name", "Ada " + uuid.uuid4().hex[:6]), **fields}
        r = httpx.post(self.url + "/v1/personas", json=body, headers=self.auth, timeout=10)
        assert r.status_code == 201, r.text
        return dict(r.json())


def server_env(data_dir: Path, fake: FakeOpenAI, **overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SALON_")}
    env.update(
        SALON_DATA_DIR=str(data_dir),
        SALON_BOOTSTRAP_KEY=TEST_KEY,
        SALON_LLM_BASE_URL=fake.base_url,
        SALON_LLM_API_KEY="fake-key",
        SALON_LLM_MODEL="fake-model",
        SALON_LLM_TIMEOUT_SECONDS="1.5",
        SALON_LLM_MAX_RETRIES="0",
        SALON_LOG_FORMAT="json",
        SALON_MESSAGES_PER_MINUTE="600",
        SALON_GRACEFUL_SHUTDOWN_SECONDS="3",
        # Keyword-only recall: loading MiniLM in every test server costs ~10 s of
        # CPU each; tests/test_memory_e2e.py runs with the real embedder.
        SALON_EMBEDDINGS_PROVIDER="none",
        # Rules, so the fake LLM sees only chat requests (tests count and inspect
        # them); tests/test_memory_e2e.py runs LLM extraction end to end.
        SALON_MEMORY_EXTRACTOR="rules",
        # No test server polls feeds unless its test asks (tests/test_feeds_api.py).
        SALON_FEEDS_POLL="false",
    )
    env.update(overrides)
    return env


@pytest.fixture(scope="session")
def server(
    fake_llm: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    data_dir = tmp_path_factory.mktemp("salon-shared")
    proc = ServerProcess(data_dir, server_env(data_dir, fake_llm)).start()
    yield proc
    proc.stop()


@pytest.fixture
def make_server(fake_llm: FakeOpenAI, tmp_path: Path) -> Iterator[Any]:
    """Start servers with custom settings; all are stopped after the test."""
    started: list[ServerProcess] = []

    def _make(data_dir: Path | None = None, **overrides: str) -> ServerProcess:
        d = data_dir or tmp_path / f"salon-{len(started)}"
        proc = ServerProcess(d, server_env(d, fake_llm, **overrides))
        started.append(proc)
        return proc.start()

    yield _make
    for proc in started:
        proc.stop()


@pytest.fixture
def persona(server: ServerProcess) -> dict[str, Any]:
    return server.create_persona()


class Client:
    """A thin test client over a `websockets` connection."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []

    async def send(self, event: dict[str, Any] | str) -> None:
        await self.ws.send(event if isinstance(event, str) else json.dumps(event))

    async def recv(self, timeout: float = 10) -> dict[str, Any]:
        event = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
        self.events.append(event)
        return dict(event)

    async def until(self, kind: str | tuple[str, ...], timeout: float = 10) -> dict[str, Any]:
        kinds = (kind,) if isinstance(kind, str) else kind
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            left = deadline - asyncio.get_running_loop().time()
            event = await self.recv(max(0.01, left))
            if event["type"] in kinds:
                return event

    async def start(self, persona: str, user: str = "u1", **fields: Any) -> dict[str, Any]:
        await self.send(
            {"type": "session.start", "persona": persona, "user": {"id": user}, **fields}
        )
        return await self.until(("session.ready", "error"))

    async def close(self) -> None:
        await self.ws.close()


async def connect(
    server: ServerProcess,
    *,
    token: str | None = None,
    key: str | None = None,
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> Client:
    url = server.ws_url + (f"?token={token}" if token else "")
    hdrs = dict(headers or {})
    if token is None:
        hdrs.setdefault("Authorization", f"Bearer {key or server.key}")
    ws = await websockets.connect(url, additional_headers=hdrs, open_timeout=10, **kwargs)
    return Client(ws)
