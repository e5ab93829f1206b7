"""The operator socket ``/v1/ops/ws`` through a real server: live list, watching, refusals."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import httpx
import pytest
import websockets

from tests.conftest import Client, ServerProcess, connect
from tests.test_cli import salon


def _console_token(server: ServerProcess) -> str:
    r = httpx.post(f"{server.url}/v1/console/login", json={"api_key": server.key}, timeout=10)
    assert r.status_code == 200, r.text
    return str(r.json()["token"])


async def _ops(server: ServerProcess, token: str | None = None, **headers: str) -> Client:
    url = f"ws://127.0.0.1:{server.port}/v1/ops/ws" + (f"?token={token}" if token else "")
    ws = await websockets.connect(url, additional_headers=headers, open_timeout=10)
    return Client(ws)


async def test_operator_sees_activity_and_watches_a_reply_stream(
    server: ServerProcess, persona: dict[str, Any]
) -> None:
    ops = await _ops(server, _console_token(server))
    ready = await ops.recv()
    assert ready["type"] == "ops.ready" and ready["role"] == "admin"

    user = f"watched-{uuid.uuid4().hex[:6]}"
    person = await connect(server)
    started = await person.start(persona["id"], user=user)
    conv = started["conversation_id"]
    await person.send({"type": "message.create", "id": "w1", "text": "first message"})
    await person.until("response.done", timeout=20)

    # The tenant-wide channel announced both messages of that conversation.
    seen: list[dict[str, Any]] = []
    while len(seen) < 2:
        event = await ops.until("conversation.activity")
        if event["conversation_id"] == conv:
            seen.append(event)
    assert {e["message"]["role"] for e in seen} == {"user", "assistant"}
    user_event = next(e for e in seen if e["message"]["role"] == "user")
    assert user_event["channel"] == "ops" and user_event["conversation_channel"] == "ws"
    assert user_event["user"]["id"] == user
    assert user_event["message"]["preview"] == "first message"
    assert user_event["persona"]["id"] == persona["id"]

    # Watching: the conversation's own events, with the person's seq numbers.
    history = httpx.get(
        f"{server.url}/v1/conversations/{conv}/messages", headers=server.auth
    ).json()
    await ops.send({"type": "watch", "conversation_id": conv, "resume_after": history["last_seq"]})
    watch = await ops.until("watch.ready")
    assert watch["conversation_id"] == conv and watch["replying"] is False
    await person.send({"type": "message.create", "id": "w2", "text": "second message"})
    person_done = await person.until("response.done", timeout=20)
    deltas, done = [], None
    while done is None:
        event = await ops.recv(timeout=20)
        if event.get("conversation_id") != conv or event.get("channel") == "ops":
            continue
        if event["type"] == "response.text.delta":
            deltas.append(event["delta"])
        elif event["type"] == "response.done":
            done = event
    assert done == person_done  # exactly what the person's socket got, seq and all
    assert "".join(deltas) == done["text"]

    # After unwatch, no more of its events.
    await ops.send({"type": "unwatch", "conversation_id": conv})
    assert (await ops.until("unwatch.done"))["conversation_id"] == conv
    await person.close()
    await ops.close()


async def test_bad_frames_get_clear_errors_and_the_socket_stays(server: ServerProcess) -> None:
    ops = await _ops(server, Authorization=f"Bearer {server.key}")  # an API key in the header
    assert (await ops.recv())["type"] == "ops.ready"
    cases = [
        ("{nope", "invalid_json"),
        (json.dumps([1, 2]), "invalid_event"),
        (json.dumps({"type": "dance"}), "unknown_event"),
        (json.dumps({"type": "watch"}), "invalid_event"),
        (
            json.dumps({"type": "watch", "conversation_id": "conv_x", "resume_after": -1}),
            "invalid_event",
        ),
        (
            json.dumps({"type": "watch", "conversation_id": "conv_missing"}),
            "conversation_not_found",
        ),
    ]
    for frame, code in cases:
        await ops.send(frame)
        event = await ops.until("error")
        assert event["code"] == code, (frame, event)
    await ops.send({"type": "ping", "id": "p1"})
    assert (await ops.until("pong"))["id"] == "p1"
    await ops.close()


async def test_another_tenants_operator_cannot_watch_or_hear(
    make_server: Any, persona_name: str = "Tenanted"
) -> None:
    srv: ServerProcess = make_server()
    persona = srv.create_persona(name=persona_name)
    created = salon("tenants", "create", "other", data_dir=srv.data_dir)
    assert created.returncode == 0, created.stderr
    other_key = re.findall(r"sk_salon_\S+", created.stdout)[-1]
    theirs = await _ops(srv, Authorization=f"Bearer {other_key}")
    assert (await theirs.recv())["type"] == "ops.ready"

    person = await connect(srv)
    conv = (await person.start(persona["id"], user="tenant-a"))["conversation_id"]
    await person.send({"type": "message.create", "id": "t1", "text": "private words"})
    await person.until("response.done", timeout=20)
    # Their operator cannot watch it (it does not exist for them) ...
    await theirs.send({"type": "watch", "conversation_id": conv})
    assert (await theirs.until("error"))["code"] == "conversation_not_found"
    # ... and heard none of its activity on their channel.
    with pytest.raises(TimeoutError):
        await theirs.until("conversation.activity", timeout=1.0)
    await person.close()
    await theirs.close()


@pytest.mark.parametrize("credential", ["api_key_in_query", "session_token", "garbage"])
async def test_refused_credentials(server: ServerProcess, credential: str) -> None:
    if credential == "api_key_in_query":
        token = server.key  # API keys never in a URL
    elif credential == "session_token":
        r = httpx.post(f"{server.url}/v1/sessions", headers=server.auth, json={"user": "p"})
        token = r.json()["token"]  # a person is not an operator
    else:
        token = "ot1.garbage.signature"
    with pytest.raises(websockets.InvalidStatus) as refused:
        await _ops(server, token)
    assert refused.value.response.status_code == 401
    assert b"unauthorized" in refused.value.response.body


async def test_foreign_origin_is_refused(server: ServerProcess) -> None:
    with pytest.raises(websockets.InvalidStatus) as refused:
        await _ops(server, _console_token(server), Origin="https://evil.example")
    assert refused.value.response.status_code == 403


async def test_a_disabled_operator_loses_an_open_socket(server: ServerProcess) -> None:
    body = {
        "email": f"gone-{uuid.uuid4().hex[:8]}@example.com",
        "role": "viewer",
        "password": "correct horse battery",
    }
    created = httpx.post(f"{server.url}/v1/operators", headers=server.auth, json=body).json()
    login = httpx.post(
        f"{server.url}/v1/console/login",
        json={"email": body["email"], "password": body["password"]},
    ).json()
    ops = await _ops(server, login["token"])
    assert (await ops.recv())["type"] == "ops.ready"
    disabled = httpx.patch(
        f"{server.url}/v1/operators/{created['id']}", headers=server.auth, json={"disabled": True}
    )
    assert disabled.status_code == 200
    # The next thing it asks for finds the credential gone: an error, then the close.
    await ops.send({"type": "watch", "conversation_id": "conv_any"})
    assert (await ops.until("error"))["code"] == "unauthorized"
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await ops.recv(timeout=5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
