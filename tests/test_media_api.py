"""Media on demand end to end: a real ``salon serve`` with the embedded generators.

Over the socket (``media.create`` / ``media.cancel``), over HTTP (``/v1/media``),
and from a message ("show me ..."); the files come back through signed URLs
with byte ranges, quotas hold, a person's media is forgotten with them.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from PIL import Image

from tests.conftest import Client, ServerProcess, connect, server_env
from tests.fakes.openai_server import FakeOpenAI


@pytest.fixture(scope="module")
def srv(fake_llm: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data_dir = tmp_path_factory.mktemp("salon-media")
    env = server_env(
        data_dir,
        fake_llm,
        SALON_MEDIA_REQUESTS_PER_MINUTE="1000",
        SALON_VIDEO_SECONDS="1",
        SALON_VIDEO_FPS="8",
        SALON_IMAGE_WIDTH="256",
        SALON_IMAGE_HEIGHT="256",
    )
    proc = ServerProcess(data_dir, env).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def persona(srv: ServerProcess) -> dict[str, Any]:
    return srv.create_persona(name="Ada", description="a sea captain with a red coat")


def _session_token(srv: ServerProcess, user: str) -> dict[str, str]:
    token = httpx.post(srv.url + "/v1/sessions", headers=srv.auth, json={"user": {"id": user}})
    return {"Authorization": f"Bearer {token.json()['token']}"}


async def _until_job(
    c: Client, job_id: str, kinds: tuple[str, ...], timeout: float = 60
) -> dict[str, Any]:
    while True:
        event = await c.recv(timeout=timeout)
        if event.get("job_id") == job_id and event["type"] in kinds:
            return event


async def test_an_image_over_the_socket_with_progress_and_a_signed_url(
    srv: ServerProcess, persona: dict[str, Any]
) -> None:
    c = await connect(srv)
    await c.start(persona["id"], user="sailor")
    await c.send(
        {"type": "media.create", "id": "img1", "kind": "image", "prompt": "a lighthouse at dusk"}
    )
    first = await c.until("media.progress", timeout=20)
    assert first["id"] == "img1" and first["state"] == "queued" and first["progress"] == 0.0
    job = first["job_id"]
    done = await _until_job(c, job, ("media.done", "error"))
    assert done["type"] == "media.done", done
    assert done["kind"] == "image" and done["mime"] == "image/png"
    progress = [
        e["progress"] for e in c.events if e.get("job_id") == job and e["type"] == "media.progress"
    ]
    assert progress == sorted(progress) and progress[-1] == 1.0 and len(progress) >= 3

    # The URL works without credentials; the image is what was asked for.
    r = httpx.get(srv.url + done["url"])
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(r.content)).size == (256, 256)
    # Byte ranges, for players that seek.
    part = httpx.get(srv.url + done["url"], headers={"Range": "bytes=0-7"})
    assert part.status_code == 206 and part.content == r.content[:8]
    assert part.headers["content-range"] == f"bytes 0-7/{len(r.content)}"
    assert httpx.get(srv.url + done["url"], headers={"Range": "bytes=99999999-"}).status_code == 416
    # A tampered or unsigned URL is refused.
    parts = urlsplit(done["url"])
    query = parse_qs(parts.query)
    forged = (
        f"{parts.path}?{urlencode({'exp': int(query['exp'][0]) + 3600, 'sig': query['sig'][0]})}"
    )
    assert httpx.get(srv.url + forged).status_code == 403
    assert httpx.get(srv.url + parts.path).status_code == 403

    # A resend of the same id is answered, not processed again.
    await c.send({"type": "media.create", "id": "img1", "kind": "image", "prompt": "other"})
    again = await c.until("media.progress")
    assert again["duplicate"] is True and again["job_id"] == job and again["state"] == "done"
    await c.close()

    # The item over HTTP, with a fresh URL.
    item = httpx.get(f"{srv.url}/v1/media/{job}", headers=srv.auth).json()
    assert item["state"] == "done" and item["generator"] == "procedural" and item["url"]
    assert item["prompt"] == "a lighthouse at dusk" and item["bytes"] == len(r.content)


async def test_bad_socket_requests_get_clear_errors(
    srv: ServerProcess, persona: dict[str, Any]
) -> None:
    c = await connect(srv)
    await c.start(persona["id"], user="tester")
    for frame, code in (
        ({"type": "media.create", "id": "a", "kind": "image", "prompt": ""}, "invalid_request"),
        (
            {
                "type": "media.create",
                "id": "b",
                "kind": "image",
                "prompt": "x",
                "options": {"steps": 0},
            },
            "invalid_request",
        ),
        (
            {
                "type": "media.create",
                "id": "c",
                "kind": "image",
                "prompt": "x",
                "options": {"evil": 1},
            },
            "invalid_request",
        ),
        ({"type": "media.cancel", "id": "d", "job_id": "med_nope"}, "media_not_found"),
    ):
        await c.send(frame)
        err = await c.until("error")
        assert err["code"] == code and err["id"] == frame["id"], err
    await c.close()


async def test_a_video_is_cancelled_from_the_socket(
    srv: ServerProcess, persona: dict[str, Any]
) -> None:
    c = await connect(srv)
    await c.start(persona["id"], user="canceller")
    await c.send(
        {
            "type": "media.create",
            "id": "v",
            "kind": "video",
            "prompt": "waves",
            "options": {"seconds": 20, "fps": 24},
        }
    )
    job = (await c.until("media.progress", timeout=20))["job_id"]
    await c.send({"type": "media.cancel", "id": "stop", "job_id": job})
    ended = await _until_job(c, job, ("media.cancelled", "media.done", "error"))
    assert ended["type"] == "media.cancelled", ended
    item = httpx.get(f"{srv.url}/v1/media/{job}", headers=srv.auth).json()
    assert item["state"] == "cancelled" and item["url"] is None
    await c.close()


async def test_http_requests_lists_quota_and_session_scope(
    srv: ServerProcess, persona: dict[str, Any]
) -> None:
    r = httpx.post(
        srv.url + "/v1/media",
        headers=srv.auth,
        json={
            "kind": "avatar",
            "persona": persona["id"],
            "user": "builder",
            "options": {"animations": ["idle", "talk"]},
        },
    )
    assert r.status_code == 202, r.text
    media_id = r.json()["id"]
    assert r.headers["location"] == f"/v1/media/{media_id}"
    for _ in range(300):
        item = httpx.get(f"{srv.url}/v1/media/{media_id}", headers=srv.auth).json()
        if item["state"] in ("done", "failed"):
            break
        import time

        time.sleep(0.1)
    assert item["state"] == "done", item
    assert item["mime"] == "model/gltf-binary"
    glb = httpx.get(srv.url + item["url"])
    assert glb.content[:4] == b"glTF"

    # Bad input, unknown persona, someone else's session.
    assert (
        httpx.post(
            srv.url + "/v1/media",
            headers=srv.auth,
            json={"kind": "image", "prompt": "x", "persona": "nobody"},
        ).status_code
        == 404
    )
    assert (
        httpx.post(
            srv.url + "/v1/media",
            headers=srv.auth,
            json={"kind": "image", "prompt": "x", "persona": persona["id"], "colour": 1},
        ).status_code
        == 400
    )
    other = _session_token(srv, "someone-else")
    assert httpx.get(f"{srv.url}/v1/media/{media_id}", headers=other).status_code == 404
    mine = _session_token(srv, "builder")
    assert httpx.get(f"{srv.url}/v1/media/{media_id}", headers=mine).status_code == 200
    listed = httpx.get(srv.url + "/v1/media", headers=mine).json()["data"]
    assert [m["id"] for m in listed] == [media_id]
    assert httpx.get(srv.url + "/v1/media?state=weird", headers=srv.auth).status_code == 400

    # Quota: reading needs an API key; a quota below usage refuses new requests.
    assert httpx.get(srv.url + "/v1/media/quota", headers=mine).status_code == 403
    usage = httpx.get(srv.url + "/v1/media/quota", headers=srv.auth).json()
    assert usage["used_bytes"] >= item["bytes"] > 0
    assert (
        httpx.put(srv.url + "/v1/media/quota", headers=srv.auth, json={"quota_bytes": 1}).json()[
            "quota_bytes"
        ]
        == 1
    )
    full = httpx.post(
        srv.url + "/v1/media",
        headers=srv.auth,
        json={"kind": "image", "prompt": "x", "persona": persona["id"]},
    )
    assert full.status_code == 413 and full.json()["error"]["code"] == "quota_exceeded"
    httpx.put(srv.url + "/v1/media/quota", headers=srv.auth, json={"quota_bytes": None})

    # Delete: the item and its file are gone; the URL no longer answers.
    assert httpx.delete(f"{srv.url}/v1/media/{media_id}", headers=srv.auth).json() == {
        "id": media_id,
        "deleted": True,
    }
    assert httpx.get(f"{srv.url}/v1/media/{media_id}", headers=srv.auth).status_code == 404
    assert httpx.get(srv.url + item["url"]).status_code == 404


async def test_show_me_in_a_message_sends_an_image_and_forgetting_removes_it(
    srv: ServerProcess, persona: dict[str, Any]
) -> None:
    c = await connect(srv)
    await c.start(persona["id"], user="curious")
    await c.send({"type": "message.create", "id": "m", "text": "Show me a picture of your ship!"})
    done = await c.until("media.done", timeout=60)
    if not any(e["type"] == "response.done" for e in c.events):
        await c.until("response.done", timeout=30)  # the text reply comes too
    assert done["kind"] == "image"
    item = httpx.get(f"{srv.url}/v1/media/{done['job_id']}", headers=srv.auth).json()
    assert item["prompt"] == "your ship" and item["user"] is not None
    await c.close()

    r = httpx.delete(srv.url + "/v1/users/curious/data", headers=srv.auth)
    assert r.status_code == 200 and r.json()["deleted"]["media"] == 1
    assert httpx.get(f"{srv.url}/v1/media/{done['job_id']}", headers=srv.auth).status_code == 404
    assert httpx.get(srv.url + done["url"]).status_code == 404


def _glb() -> bytes:
    import trimesh

    return bytes(trimesh.creation.box().export(file_type="glb"))


async def test_a_persona_avatar_is_imported_or_generated(srv: ServerProcess) -> None:
    persona = srv.create_persona(name="Vee")
    url = f"{srv.url}/v1/personas/{persona['id']}/avatar"
    assert httpx.get(url, headers=srv.auth).status_code == 404  # none yet

    # A generated avatar counts until one is imported.
    r = httpx.post(
        srv.url + "/v1/media", headers=srv.auth, json={"kind": "avatar", "persona": persona["id"]}
    )
    media_id = r.json()["id"]
    for _ in range(300):
        if httpx.get(f"{srv.url}/v1/media/{media_id}", headers=srv.auth).json()["state"] == "done":
            break
        await asyncio.sleep(0.1)
    assert httpx.get(url, headers=srv.auth).json()["id"] == media_id

    glb = _glb()
    up = httpx.post(url, headers=srv.auth, files={"file": ("me.vrm", glb, "model/gltf-binary")})
    assert up.status_code == 201, up.text
    imported = up.json()
    assert imported["source"] == "import" and imported["mime"] == "model/gltf-binary"
    assert imported["bytes"] == len(glb) and imported["meta"]["generator"] == "import"
    assert httpx.get(url, headers=srv.auth).json()["id"] == imported["id"]
    assert httpx.get(srv.url + imported["url"]).content == glb

    # Garbage, truncated files, and URLs that point inside the network are refused.
    bad = httpx.post(
        url, headers=srv.auth, files={"file": ("x.glb", b"not a model", "model/gltf-binary")}
    )
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_request"
    cut = httpx.post(
        url, headers=srv.auth, files={"file": ("x.glb", glb[:-10], "model/gltf-binary")}
    )
    assert cut.status_code == 400
    inside = httpx.post(url, headers=srv.auth, json={"url": f"{srv.url}/v1/personas"})
    assert inside.status_code == 400 and inside.json()["error"]["code"] == "fetch_failed"
    assert httpx.post(url, headers=srv.auth, json={}).status_code == 400
    session = _session_token(srv, "someone")
    assert (
        httpx.post(
            url, headers=session, files={"file": ("me.glb", glb, "model/gltf-binary")}
        ).status_code
        == 403
    )
