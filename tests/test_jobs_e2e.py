"""Jobs through real processes: `salon serve` (embedded, and with Redis + `salon worker`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import Client, ServerProcess, connect, server_env
from tests.services_redis import RedisServer


async def export_over_the_socket(server: ServerProcess) -> None:
    persona = server.create_persona()
    client: Client = await connect(server)
    try:
        ready = await client.start(persona["id"], user="alice")
        conv_id = ready["conversation_id"]
        await client.send({"type": "message.create", "id": "m1", "text": "hello"})
        await client.until("response.done", timeout=20)
        r = httpx.post(
            f"{server.url}/v1/conversations/{conv_id}/export", headers=server.auth, timeout=10
        )
        assert r.status_code == 202, r.text
        job_id = r.json()["job_id"]
        progress: list[float] = []
        while True:
            event = await client.until(("media.progress", "media.done", "error"), timeout=30)
            assert event["type"] != "error", event
            assert event["job_id"] == job_id and event["conversation_id"] == conv_id
            if event["type"] == "media.done":
                break
            progress.append(event["progress"])
        assert progress and progress == sorted(progress)
        assert event["url"] == f"/v1/jobs/{job_id}/result" and event["mime"] == "application/json"
        r = httpx.get(server.url + event["url"], headers=server.auth, timeout=10)
        assert r.status_code == 200, r.text
        assert [m["role"] for m in r.json()["messages"]] == ["user", "assistant"]
        r = httpx.get(f"{server.url}/v1/jobs/{job_id}", headers=server.auth, timeout=10)
        assert r.json()["state"] == "done" and r.json()["result"]["messages"] == 2
    finally:
        await client.close()


async def test_export_on_the_embedded_server(server: ServerProcess) -> None:
    await export_over_the_socket(server)


async def test_export_with_redis_and_a_salon_worker(
    make_server: Any, redis_server: RedisServer, fake_llm: Any, tmp_path: Path
) -> None:
    data_dir = tmp_path / "shared"
    server = make_server(data_dir, SALON_REDIS_URL=redis_server.url)
    env = server_env(data_dir, fake_llm, SALON_REDIS_URL=redis_server.url)
    worker = subprocess.Popen(
        [str(Path(sys.executable).parent / "salon"), "worker"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        await export_over_the_socket(server)
    finally:
        worker.terminate()
        assert worker.wait(15) == 0
