"""End to end over a real `salon serve` process and the `websockets` client."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.conftest import Client, ServerProcess, connect


def _seqs(events: list[dict[str, Any]]) -> list[int]:
    return [e["seq"] for e in events if "seq" in e and e["type"] != "session.ready"]


async def test_streams_a_reply_with_rising_seq(
    server: ServerProcess, persona: dict[str, Any]
) -> None:
    c = await connect(server)
    ready = await c.start(persona["slug"])
    assert ready["type"] == "session.ready"
    assert ready["persona"] == persona["id"] and ready["seq"] == 0
    conv = ready["conversation_id"]
    await c.send({"type": "message.create", "id": "m1", "text": "hello"})
    accepted = await c.until("message.accepted")
    assert accepted["id"] == "m1" and accepted["message_id"].startswith("msg_")
    created = await c.until("response.created")
    done = await c.until("response.done")
    deltas = [e["delta"] for e in c.events if e["type"] == "response.text.delta"]
    assert deltas and "".join(deltas) == done["text"] == "Hello from the fake model."
    assert all(e["conversation_id"] == conv for e in c.events if e["type"] != "session.ready")
    assert _seqs(c.events) == list(range(1, len(_seqs(c.events)) + 1))
    assert done["response_id"] == created["response_id"]
    await c.close()
    history = httpx.get(
        f"{server.url}/v1/conversations/{conv}/messages", headers=server.auth
    ).json()
    assert [(m["role"], m["content"]) for m in history["data"]] == [
        ("user", "hello"),
        ("assistant", "Hello from the fake model."),
    ]
    assert history["data"][1]["id"] == done["message_id"]


async def test_persona_fields_reach_the_model(server: ServerProcess, fake_llm: Any) -> None:
    p = server.create_persona(
        name="Captain Ada", personality="bold", scenario="on a ship with {{user}}"
    )
    c = await connect(server)
    await c.start(p["id"], user="sailor-9")
    await c.send({"type": "message.create", "id": "x", "text": "[echo] who are you"})
    done = await c.until("response.done")
    assert "You are Captain Ada" in done["text"]
    assert "on a ship with sailor-9" in done["text"]
    await c.close()


async def test_repeated_message_id_is_processed_once(
    server: ServerProcess, persona: dict[str, Any], fake_llm: Any
) -> None:
    c = await connect(server)
    await c.start(persona["id"])
    before = len(fake_llm.requests)
    await c.send({"type": "message.create", "id": "same", "text": "once"})
    first = await c.until("message.accepted")
    await c.until("response.done")
    await c.send({"type": "message.create", "id": "same", "text": "once"})
    again = await c.until("message.accepted")
    assert again["duplicate"] is True and again["message_id"] == first["message_id"]
    await c.send({"type": "ping"})
    await c.until("pong")
    assert not [e for e in c.events[c.events.index(again) :] if e["type"] == "response.created"]
    assert len(fake_llm.requests) == before + 1
    await c.close()


async def test_cancel_stops_generation_and_the_provider_call(
    server: ServerProcess, persona: dict[str, Any], fake_llm: Any
) -> None:
    c = await connect(server)
    await c.start(persona["id"])
    aborted = fake_llm.aborted
    await c.send({"type": "message.create", "id": "long", "text": "[slow] tell me everything"})
    await c.until("response.text.delta")
    await c.send({"type": "response.cancel"})
    cancelled = await c.until("response.cancelled")
    assert cancelled["text"].startswith("w0 ")
    assert "w199" not in cancelled["text"]
    for _ in range(50):  # the HTTP stream to the provider is closed, not left running
        if fake_llm.aborted > aborted:
            break
        await asyncio.sleep(0.05)
    assert fake_llm.aborted > aborted
    await c.send({"type": "response.cancel", "id": "c2"})
    err = await c.until("error")
    assert err["code"] == "no_active_response" and err["id"] == "c2"
    await c.close()


async def test_drop_mid_reply_and_resume_without_gap_or_duplicate(
    server: ServerProcess, persona: dict[str, Any]
) -> None:
    c = await connect(server)
    ready = await c.start(persona["id"], user="phone")
    conv = ready["conversation_id"]
    await c.send({"type": "message.create", "id": "q", "text": "[slow] a long story"})
    seen: list[dict[str, Any]] = []
    while len([e for e in seen if e["type"] == "response.text.delta"]) < 3:
        seen.append(await c.recv())
    last = max(e["seq"] for e in seen if "seq" in e and e["type"] != "session.ready")
    c.ws.transport.abort()  # the network vanishes: no close handshake
    await asyncio.sleep(0.3)  # the reply goes on without us

    c2 = await connect(server)
    ready2 = await c2.start(persona["id"], user="phone", conversation_id=conv, resume_after=last)
    assert ready2["type"] == "session.ready" and ready2["conversation_id"] == conv
    assert ready2["seq"] > last
    done = await c2.until("response.done", timeout=30)
    resumed = [e for e in c2.events if e["type"] != "session.ready"]
    all_events = [e for e in seen if e["type"] != "session.ready"] + resumed
    seqs = [e["seq"] for e in all_events]
    assert seqs == list(range(1, seqs[-1] + 1)), "gap or duplicate across the reconnect"
    text = "".join(e["delta"] for e in all_events if e["type"] == "response.text.delta")
    assert text == done["text"] and done["text"].endswith("w199 ")
    await c2.close()


async def test_resume_from_too_old_a_seq_says_resume_gap(make_server: Any) -> None:
    srv: ServerProcess = make_server(SALON_EVENT_LOG_MAX_EVENTS="3")
    p = srv.create_persona()
    c = await connect(srv)
    conv = (await c.start(p["id"]))["conversation_id"]
    await c.send({"type": "message.create", "id": "1", "text": "hi"})
    await c.until("response.done")
    await c.close()
    c2 = await connect(srv)
    ready = await c2.start(p["id"], conversation_id=conv, resume_after=0)
    assert ready["type"] == "session.ready"
    gap = await c2.until("error")
    assert gap["code"] == "resume_gap"
    assert f"/v1/conversations/{conv}/messages" in gap["message"]
    await c2.close()


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("not json", "invalid_json"),
        ("[1,2]", "invalid_event"),
        ('{"no": "type"}', "invalid_event"),
        ('{"type": "bogus.event"}', "unknown_event"),
        ('{"type": "message.create", "id": "a"}', "invalid_event"),
        ('{"type": "message.create", "id": 5, "text": "x"}', "invalid_event"),
        ('{"type": "session.start"}', "invalid_event"),
        ('{"type": "message.create", "id": "early", "text": "x"}', "no_session"),
    ],
)
async def test_bad_frames_get_clear_errors_and_the_socket_survives(
    server: ServerProcess, frame: str, code: str
) -> None:
    c = await connect(server)
    await c.send(frame)
    err = await c.until("error")
    assert err["code"] == code, err
    assert err["message"]
    await c.send({"type": "ping", "id": "still-alive"})
    assert (await c.until("pong"))["id"] == "still-alive"
    await c.close()


async def test_binary_frame_is_refused(server: ServerProcess) -> None:
    c = await connect(server)
    await c.ws.send(b"\x00\x01")
    assert (await c.until("error"))["code"] == "invalid_frame"
    await c.close()


async def test_oversized_frame_closes_with_1009(make_server: Any) -> None:
    srv = make_server(SALON_MAX_FRAME_BYTES="1024")
    c = await connect(srv)
    await c.send({"type": "ping"})
    await c.until("pong")
    await c.send({"type": "message.create", "id": "big", "text": "x" * 5000})
    with pytest.raises(ConnectionClosed) as info:
        await c.recv()
    assert info.value.rcvd is not None and info.value.rcvd.code == 1009


@pytest.mark.parametrize("header", [None, "Bearer wrong-key", "Basic abc"])
async def test_bad_auth_refuses_the_upgrade(server: ServerProcess, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    with pytest.raises(InvalidStatus) as info:
        await websockets.connect(server.ws_url, additional_headers=headers, open_timeout=5)
    assert info.value.response.status_code == 401
    assert b"unauthorized" in info.value.response.body


async def test_api_key_in_query_is_not_accepted(server: ServerProcess) -> None:
    with pytest.raises(InvalidStatus) as info:
        await websockets.connect(f"{server.ws_url}?token={server.key}", open_timeout=5)
    assert info.value.response.status_code == 401


async def test_origin_allowlist(make_server: Any) -> None:
    srv = make_server(SALON_ALLOWED_ORIGINS="https://app.example.com")
    with pytest.raises(InvalidStatus) as info:
        await connect(srv, headers={"Origin": "https://evil.example.com"})
    assert info.value.response.status_code == 403
    ok = await connect(srv, headers={"Origin": "https://app.example.com"})
    await ok.send({"type": "ping"})
    await ok.until("pong")
    await ok.close()


async def test_session_token_binds_user_and_persona(
    server: ServerProcess, persona: dict[str, Any]
) -> None:
    other = server.create_persona()
    r = httpx.post(
        server.url + "/v1/sessions",
        headers=server.auth,
        json={"user": {"id": "alice", "name": "Alice"}, "persona": persona["slug"]},
    )
    assert r.status_code == 201
    token = r.json()["token"]
    c = await connect(server, token=token)
    refused = await c.start(persona["id"], user="mallory")
    assert refused["type"] == "error" and refused["code"] == "forbidden"
    refused = await c.start(other["id"], user="alice")
    assert refused["type"] == "error" and refused["code"] == "forbidden"
    await c.send({"type": "session.start", "persona": persona["slug"]})
    ready = await c.until("session.ready")
    assert ready["user"] == {"id": "alice", "name": "Alice"}
    await c.close()
    # the session token cannot mint tokens or create personas: it is not an API key
    r = httpx.post(
        server.url + "/v1/sessions",
        headers={"Authorization": f"Bearer {token}"},
        json={"user": "x"},
    )
    assert r.status_code == 403


async def test_conversation_of_another_user_cannot_be_joined(
    server: ServerProcess, persona: dict[str, Any]
) -> None:
    c = await connect(server)
    conv = (await c.start(persona["id"], user="owner"))["conversation_id"]
    await c.close()
    token = httpx.post(
        server.url + "/v1/sessions", headers=server.auth, json={"user": {"id": "intruder"}}
    ).json()["token"]
    c2 = await connect(server, token=token)
    err = await c2.start(persona["id"], user="intruder", conversation_id=conv, resume_after=0)
    assert err["type"] == "error" and err["code"] == "conversation_not_found"
    await c2.close()
    r = httpx.get(
        f"{server.url}/v1/conversations/{conv}/messages",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert r.status_code == 404


async def test_unknown_persona_is_a_clear_error(server: ServerProcess) -> None:
    c = await connect(server)
    err = await c.start("no-such-persona")
    assert err["type"] == "error" and err["code"] == "unknown_persona"
    await c.close()


async def test_provider_http_500_ends_with_error_and_keeps_the_message(
    server: ServerProcess, persona: dict[str, Any]
) -> None:
    c = await connect(server)
    conv = (await c.start(persona["id"]))["conversation_id"]
    await c.send({"type": "message.create", "id": "e", "text": "[500] please"})
    await c.until("response.created")
    err = await c.until("error")
    assert err["code"] == "llm_error" and "500" in err["message"]
    assert "seq" in err and err["response_id"]
    history = httpx.get(
        f"{server.url}/v1/conversations/{conv}/messages", headers=server.auth
    ).json()["data"]
    assert [m["content"] for m in history if m["role"] == "user"] == ["[500] please"]
    # the conversation still works afterwards
    await c.send({"type": "message.create", "id": "ok", "text": "again"})
    assert (await c.until("response.done"))["text"]
    await c.close()


@pytest.mark.parametrize(("marker", "code"), [("[stall]", "llm_timeout"), ("[die]", None)])
async def test_provider_failing_mid_stream_ends_with_error(
    server: ServerProcess, persona: dict[str, Any], marker: str, code: str | None
) -> None:
    c = await connect(server)
    conv = (await c.start(persona["id"]))["conversation_id"]
    await c.send({"type": "message.create", "id": "s", "text": f"{marker} go"})
    err = await c.until("error", timeout=15)
    assert err["code"] in ((code,) if code else ("llm_error", "llm_unavailable", "llm_timeout"))
    partial = "".join(e["delta"] for e in c.events if e["type"] == "response.text.delta")
    assert partial == "Hello from the" and err["text"] == partial
    history = httpx.get(
        f"{server.url}/v1/conversations/{conv}/messages", headers=server.auth
    ).json()["data"]
    assert history[-1]["status"] == "error" and history[-1]["content"] == partial
    await c.close()


async def test_rate_limit_refuses_extra_messages_with_their_id(make_server: Any) -> None:
    srv = make_server(SALON_MESSAGES_PER_MINUTE="4")
    p = srv.create_persona()
    c = await connect(srv)
    await c.start(p["id"])
    for i in range(3):
        await c.send({"type": "message.create", "id": f"r{i}", "text": "hi"})
    errors = []
    while len(errors) < 2:
        e = await c.recv()
        if e["type"] == "error":
            errors.append(e)
    assert {e["code"] for e in errors} == {"rate_limited"}
    assert {e["id"] for e in errors} == {"r1", "r2"}
    await c.close()


async def test_two_sockets_on_one_conversation_see_the_same_events(
    server: ServerProcess, persona: dict[str, Any]
) -> None:
    a = await connect(server)
    conv = (await a.start(persona["id"], user="multi"))["conversation_id"]
    b = await connect(server)
    await b.start(persona["id"], user="multi", conversation_id=conv)
    await a.send({"type": "message.create", "id": "m", "text": "hi both"})
    done_a = await a.until("response.done")
    done_b = await b.until("response.done")
    assert done_a == done_b
    assert [e for e in a.events if "seq" in e and e["type"] != "session.ready"] == [
        e for e in b.events if "seq" in e and e["type"] != "session.ready"
    ]
    await a.close()
    await b.close()


async def test_graceful_shutdown_closes_sockets_and_the_reply_stays_resumable(
    make_server: Any, tmp_path: Any
) -> None:
    data = tmp_path / "restart"
    srv = make_server(data)
    p = srv.create_persona()
    c = await connect(srv)
    conv = (await c.start(p["id"], user="u"))["conversation_id"]
    await c.send({"type": "message.create", "id": "q", "text": "[slow] long"})
    await c.until("response.text.delta")
    last = max(e["seq"] for e in c.events if "seq" in e and e["type"] != "session.ready")
    stopping = asyncio.get_running_loop().run_in_executor(None, srv.stop)
    with pytest.raises(ConnectionClosed) as info:
        while True:
            e = await c.recv(timeout=15)
            last = e.get("seq", last)
    assert info.value.rcvd is not None and info.value.rcvd.code in (1001, 1012)
    # uvicorn re-raises the SIGTERM it handled once shutdown is complete
    assert await stopping in (0, -15)
    assert "event_log_saved" in srv.log() and "Traceback" not in srv.log()
    # same data dir, new process: the interrupted reply ends with error "shutdown"
    srv2 = make_server(data)
    c2 = await connect(srv2)
    ready = await c2.start(p["id"], user="u", conversation_id=conv, resume_after=last)
    assert ready["type"] == "session.ready"
    err = await c2.until("error")
    assert err["code"] == "shutdown"
    replayed = [e["seq"] for e in c2.events if e["type"] != "session.ready"]
    assert replayed == list(range(last + 1, err["seq"] + 1))
    history = httpx.get(f"{srv2.url}/v1/conversations/{conv}/messages", headers=srv2.auth).json()[
        "data"
    ]
    assert history[0]["content"] == "[slow] long"
    assert history[-1]["status"] == "error" and history[-1]["content"].startswith("w0")
    # seq keeps rising across the restart
    await c2.send({"type": "message.create", "id": "after", "text": "hi"})
    accepted = await c2.until("message.accepted")
    # Nothing but the (asynchronous) analysis of earlier messages may come between.
    between = [e for e in c2.events if err["seq"] < e.get("seq", 0) < accepted["seq"]]
    assert accepted["seq"] > err["seq"]
    assert all(e["type"] == "message.analysis" for e in between), between
    await c2.close()


async def test_ping_pong_and_a_media_kind_that_does_not_exist(
    server: ServerProcess, persona: dict[str, Any]
) -> None:
    c = await connect(server)
    await c.send({"type": "ping", "id": "p1"})
    assert (await c.until("pong"))["id"] == "p1"
    await c.send({"type": "media.create", "kind": "image", "prompt": "a cat", "id": "early"})
    err = await c.until("error")
    assert err["code"] == "no_session" and err["id"] == "early"
    await c.start(persona["id"])
    await c.send({"type": "media.create", "kind": "sound", "prompt": "a cat", "id": "img"})
    err = await c.until("error")
    assert err["code"] == "invalid_event" and err["id"] == "img"
    await c.close()


def _json(frames: list[str]) -> list[dict[str, Any]]:
    return [json.loads(f) for f in frames]


__all__ = ["Client"]
