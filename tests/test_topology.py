"""Scale-out on loopback: Postgres + Redis + two `salon serve` replicas behind nginx.

No sticky sessions: nginx round-robins every connection. A client that drops
resumes on the other replica; a replica killed mid-reply leaves a reply that
the other replica ends; Redis restarting is ridden out.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from tests.conftest import SALON_BIN, Client, ServerProcess, server_env
from tests.fakes.openai_server import FakeOpenAI, free_port
from tests.services_redis import RedisServer

CONF = Path(__file__).parent.parent / "scripts" / "nginx" / "salon.conf"


class Nginx:
    """The repo's example nginx config, rendered with this test's ports and paths."""

    def __init__(self, prefix: Path, upstream_ports: list[int]) -> None:
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        if not Path(binary).exists():
            raise RuntimeError("nginx is not installed; run scripts/test (it installs it)")
        self.binary = binary
        self.prefix = prefix
        self.port = free_port()
        text = CONF.read_text()
        servers = "\n".join(
            f"        server 127.0.0.1:{p} max_fails=1 fail_timeout=5s;" for p in upstream_ports
        )
        text = re.sub(r"(?m)^\s*server 127\.0\.0\.1:800[12].*\n", "", text)
        text = text.replace("keepalive 32;", servers.lstrip() + "\n        keepalive 32;")
        text = text.replace("listen 127.0.0.1:8000;", f"listen 127.0.0.1:{self.port};")
        prefix.mkdir(parents=True, exist_ok=True)
        self.conf = prefix / "nginx.conf"
        self.conf.write_text(text)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Nginx:
        subprocess.run(
            [self.binary, "-c", str(self.conf), "-p", str(self.prefix) + "/"], check=True
        )
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                httpx.get(self.url + "/healthz", timeout=1)
                return self
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError("nginx did not start")

    def stop(self) -> None:
        pidfile = self.prefix / "nginx.pid"
        if pidfile.exists():
            try:
                os.kill(int(pidfile.read_text()), signal.SIGTERM)
            except (ProcessLookupError, ValueError):
                pass


class Topology:
    def __init__(self, replicas: list[ServerProcess], nginx: Nginx, redis: RedisServer) -> None:
        self.replicas = replicas
        self.nginx = nginx
        self.redis = redis
        self.key = replicas[0].key
        self.auth = replicas[0].auth

    def replica(self, replica_id: str) -> ServerProcess:
        pid = int(replica_id.split("-")[-2])
        return next(r for r in self.replicas if r.proc is not None and r.proc.pid == pid)

    async def connect(self, avoid: str | None = None) -> tuple[Client, str]:
        """Connect through nginx (to a replica other than ``avoid`` if given)."""
        for _ in range(10):
            ws = await websockets.connect(
                self.nginx.url.replace("http", "ws") + "/v1/ws",
                additional_headers=self.auth,
                open_timeout=10,
            )
            replica = ws.response.headers["x-salon-replica"]
            if replica != avoid:
                return Client(ws), replica
            await ws.close()
        raise AssertionError("nginx never routed to another replica")


@pytest.fixture
def topology(
    fake_llm: FakeOpenAI, postgres_url: str, redis_private: RedisServer, tmp_path: Path
) -> Iterator[Topology]:
    shared = {
        "SALON_DATABASE_URL": postgres_url,
        "SALON_REDIS_URL": redis_private.url,
        "SALON_REPLY_LOCK_TTL_SECONDS": "2",
        "SALON_MEDIA_DIR": str(tmp_path / "media"),  # a shared volume in production
    }
    replicas = [
        ServerProcess(
            tmp_path / f"replica{i}", server_env(tmp_path / f"replica{i}", fake_llm, **shared)
        )
        for i in range(2)
    ]
    worker: subprocess.Popen[bytes] | None = None
    try:
        for r in replicas:
            r.start()
        worker_env = server_env(tmp_path / "worker", fake_llm, **shared)
        with (tmp_path / "worker.log").open("wb") as log:
            worker = subprocess.Popen(
                [SALON_BIN, "worker"], env=worker_env, stdout=log, stderr=subprocess.STDOUT
            )
        nginx = Nginx(tmp_path / "nginx", [r.port for r in replicas]).start()
        try:
            yield Topology(replicas, nginx, redis_private)
        finally:
            nginx.stop()
    finally:
        if worker is not None:
            worker.terminate()
            try:
                worker.wait(15)
            except subprocess.TimeoutExpired:
                worker.kill()
        for r in replicas:
            r.stop()


def _logged(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if "seq" in e and e["type"] != "session.ready"]


async def test_drop_mid_reply_and_resume_on_the_other_replica(topology: Topology) -> None:
    persona = topology.replicas[0].create_persona()
    c, first = await topology.connect()
    conv = (await c.start(persona["id"], user="roamer"))["conversation_id"]
    await c.send({"type": "message.create", "id": "q", "text": "[slow] long story"})
    while len([e for e in c.events if e["type"] == "response.text.delta"]) < 3:
        await c.recv()
    seen = _logged(c.events)
    c.ws.transport.abort()

    c2, second = await topology.connect(avoid=first)
    assert second != first
    ready = await c2.start(
        persona["id"], user="roamer", conversation_id=conv, resume_after=seen[-1]["seq"]
    )
    assert ready["type"] == "session.ready"
    done = await c2.until("response.done", timeout=30)
    events = seen + _logged(c2.events)
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(1, seqs[-1] + 1)), "gap or duplicate across replicas"
    text = "".join(e["delta"] for e in events if e["type"] == "response.text.delta")
    assert text == done["text"] and text.endswith("w199 ")
    await c2.close()


async def test_replica_killed_mid_reply_the_other_ends_it_and_carries_on(
    topology: Topology,
) -> None:
    persona = topology.replicas[0].create_persona()
    c, victim_id = await topology.connect()
    conv = (await c.start(persona["id"], user="unlucky"))["conversation_id"]
    await c.send({"type": "message.create", "id": "q", "text": "[slow] tell me"})
    accepted = await c.until("message.accepted")
    while len([e for e in c.events if e["type"] == "response.text.delta"]) < 3:
        await c.recv()
    last = _logged(c.events)[-1]["seq"]
    topology.replica(victim_id).stop(signal.SIGKILL)

    c2, _ = await topology.connect(avoid=victim_id)
    await c2.start(persona["id"], user="unlucky", conversation_id=conv, resume_after=last)
    err = await c2.until("error", timeout=20)
    assert err["code"] == "interrupted" and err["response_id"]
    seqs = [e["seq"] for e in _logged(c.events) + _logged(c2.events)]
    assert seqs == list(range(1, seqs[-1] + 1))
    partial = "".join(
        e["delta"]
        for e in _logged(c.events) + _logged(c2.events)
        if e["type"] == "response.text.delta"
    )
    assert err["text"] == partial and partial.startswith("w0 ")

    history = httpx.get(
        f"{topology.nginx.url}/v1/conversations/{conv}/messages", headers=topology.auth
    ).json()["data"]
    assert history[0]["id"] == accepted["message_id"] and history[0]["content"] == "[slow] tell me"
    assert history[-1]["role"] == "assistant" and history[-1]["status"] == "error"
    assert history[-1]["content"] == partial

    # the conversation goes on, on the survivor
    await c2.send({"type": "message.create", "id": "again", "text": "still there?"})
    done = await c2.until("response.done", timeout=20)
    assert done["text"] == "Hello from the fake model."
    await c2.close()


async def test_cancel_reaches_the_replica_that_generates(
    topology: Topology, fake_llm: FakeOpenAI
) -> None:
    persona = topology.replicas[0].create_persona()
    a, replica_a = await topology.connect()
    conv = (await a.start(persona["id"], user="two-devices"))["conversation_id"]
    b, _ = await topology.connect(avoid=replica_a)
    await b.start(persona["id"], user="two-devices", conversation_id=conv)
    await a.send({"type": "message.create", "id": "q", "text": "[slow] go on"})
    await b.until("response.text.delta")
    presence = httpx.get(
        f"{topology.nginx.url}/v1/conversations/{conv}/presence", headers=topology.auth
    ).json()
    assert len(presence["data"]) == 2 and len({p["replica"] for p in presence["data"]}) == 2
    assert {p["user"] for p in presence["data"]} == {"two-devices"}
    await b.send({"type": "response.cancel"})  # from the other replica
    cancelled = await b.until("response.cancelled", timeout=10)
    assert "w199" not in cancelled["text"]
    assert (await a.until("response.cancelled"))["response_id"] == cancelled["response_id"]
    await a.close()
    await b.close()
    for _ in range(50):  # a closed socket leaves presence
        presence = httpx.get(
            f"{topology.nginx.url}/v1/conversations/{conv}/presence", headers=topology.auth
        ).json()
        if not presence["data"]:
            break
        await asyncio.sleep(0.1)
    assert presence["data"] == []


async def test_redis_restart_is_ridden_out(topology: Topology) -> None:
    persona = topology.replicas[0].create_persona()
    c, _ = await topology.connect()
    await c.start(persona["id"], user="patient")
    await c.send({"type": "message.create", "id": "1", "text": "before"})
    await c.until("response.done")
    last = _logged(c.events)[-1]["seq"]

    topology.redis.stop()
    for r in topology.replicas:
        r_ready = httpx.get(r.url + "/readyz", timeout=10)
        assert r_ready.status_code == 503 and "error" in r_ready.json()["checks"]["event_log"]
    await c.send({"type": "message.create", "id": "2", "text": "during"})
    errors = []
    while not any(e.get("id") == "2" for e in errors):
        errors.append(await c.until("error", timeout=15))
    # clear errors, not a hang: the live stream is delayed, the message was not taken
    assert {e["code"] for e in errors} <= {"event_log_unavailable", "unavailable"}
    assert errors[-1]["code"] == "unavailable"

    topology.redis.start()  # a fresh Redis on the same port: every key is gone
    deadline = time.time() + 20
    while time.time() < deadline:
        if all(
            httpx.get(r.url + "/readyz", timeout=5).status_code == 200 for r in topology.replicas
        ):
            break
        await asyncio.sleep(0.2)
    else:
        raise AssertionError("replicas did not become ready after Redis came back")

    # the same socket, the same message id again: now it is processed
    for _ in range(50):
        await c.send({"type": "message.create", "id": "2", "text": "during"})
        event = await c.until(("message.accepted", "error"), timeout=10)
        if event["type"] == "message.accepted":
            break
        await asyncio.sleep(0.2)
    done = await c.until("response.done", timeout=20)
    assert done["text"] == "Hello from the fake model."
    after = [e["seq"] for e in _logged(c.events) if e["seq"] > 0 and c.events.index(e) > 0]
    assert max(after) > last and event["seq"] > last  # seq kept rising across the restart
    await c.close()


async def test_a_worker_job_reports_progress_to_a_socket_on_a_replica(topology: Topology) -> None:
    persona = topology.replicas[0].create_persona()
    c, _ = await topology.connect()
    conv = (await c.start(persona["id"], user="exporter"))["conversation_id"]
    for i in range(3):
        await c.send({"type": "message.create", "id": f"m{i}", "text": f"note {i}"})
        await c.until("response.done")
    r = httpx.post(f"{topology.nginx.url}/v1/conversations/{conv}/export", headers=topology.auth)
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    done = await c.until("media.done", timeout=30)  # run by `salon worker`, relayed via Redis
    assert done["job_id"] == job_id and done["mime"] == "application/json"
    progress = [
        e["progress"] for e in c.events if e["type"] == "media.progress" and e["job_id"] == job_id
    ]
    assert progress and progress == sorted(progress) and 0 <= progress[0] <= progress[-1] <= 1
    seqs = [e["seq"] for e in _logged(c.events)]
    assert seqs == list(range(1, seqs[-1] + 1))
    export = httpx.get(f"{topology.nginx.url}{done['url']}", headers=topology.auth)
    assert export.status_code == 200
    contents = [m["content"] for m in export.json()["messages"] if m["role"] == "user"]
    assert contents == ["note 0", "note 1", "note 2"]
    await c.close()


async def test_serve_workers_are_replicas_on_one_port(
    fake_llm: FakeOpenAI, postgres_url: str, redis_private: RedisServer, tmp_path: Path
) -> None:
    """`salon serve --workers 2` (SALON_WORKERS): two processes accept on one port, each
    a replica with its own id, and a conversation started on one resumes on the other."""
    env = server_env(
        tmp_path / "workers",
        fake_llm,
        SALON_DATABASE_URL=postgres_url,
        SALON_REDIS_URL=redis_private.url,
        SALON_WORKERS="2",
    )
    srv = ServerProcess(tmp_path / "workers", env).start()
    try:
        persona = srv.create_persona(name="Twin")
        seen: dict[str, Client] = {}
        # /readyz answered as soon as one process was up; the other may still be
        # starting, and on a busy machine one process can win many accepts in a
        # row: keep connecting (for up to 60 s) until both have answered.
        deadline = time.monotonic() + 60
        while len(seen) < 2 and time.monotonic() < deadline:
            ws = await websockets.connect(srv.ws_url, additional_headers=srv.auth, open_timeout=10)
            replica = ws.response.headers["x-salon-replica"]
            if replica in seen:
                await ws.close()
                await asyncio.sleep(0.05)
            else:
                seen[replica] = Client(ws)
        assert len(seen) == 2, "one process took every connection for 60 s"
        first, second = seen.values()
        ready = await first.start(persona["id"], user="twin")
        await first.send({"type": "message.create", "id": "m1", "text": "hello"})
        done = await first.until("response.done", timeout=20)
        resumed = await second.start(
            persona["id"], user="twin", conversation_id=ready["conversation_id"], resume_after=0
        )
        assert resumed["conversation_id"] == ready["conversation_id"]
        replayed = await second.until("response.done", timeout=20)
        assert replayed["seq"] == done["seq"] and replayed["text"] == done["text"]
        for client in seen.values():
            await client.close()
    finally:
        assert srv.stop() == 0, srv.log()[-2000:]


def test_serve_workers_need_redis_and_postgres(tmp_path: Path, fake_llm: FakeOpenAI) -> None:
    env = server_env(tmp_path / "solo", fake_llm, SALON_WORKERS="2")
    done = subprocess.run(
        [SALON_BIN, "serve", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "needs SALON_REDIS_URL and SALON_DATABASE_URL" in done.stderr
