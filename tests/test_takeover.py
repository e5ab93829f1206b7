"""Operator takeover through a real server: the person's client sees the operator as the persona."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from tests.conftest import ServerProcess, connect


def _url(server: ServerProcess, conv: str, tail: str = "") -> str:
    return f"{server.url}/v1/conversations/{conv}/takeover{tail}"


async def test_take_over_speak_as_the_persona_and_hand_back(
    server: ServerProcess, persona: dict[str, Any], fake_llm: Any
) -> None:
    person = await connect(server)
    ready = await person.start(persona["id"], user="taken-over")
    conv = ready["conversation_id"]
    await person.send({"type": "message.create", "id": "m1", "text": "hello bot"})
    await person.until("response.done", timeout=20)

    r = httpx.post(_url(server, conv), headers=server.auth, json={"name": "Sam"})
    assert r.status_code == 201, r.text
    assert r.json()["operator"] == "Sam" and r.json()["mode"] == "persona"
    started = await person.until("takeover.started")
    assert started["takeover"]["operator"] == "Sam"
    # Someone else cannot take it too, or speak in it.
    assert (
        httpx.post(_url(server, conv), headers=server.auth, json={"name": "Kim"}).status_code == 409
    )
    other = httpx.post(
        _url(server, conv, "/messages"), headers=server.auth, json={"name": "Kim", "text": "x"}
    )
    assert other.status_code == 403

    # The person writes: stored and acknowledged, and the bot stays silent.
    llm_calls = len(fake_llm.requests)
    await person.send({"type": "message.create", "id": "m2", "text": "is anyone there?"})
    await person.until("message.accepted")
    await asyncio.sleep(0.5)
    assert len(fake_llm.requests) == llm_calls
    assert not [e for e in person.events[-3:] if e["type"] == "response.created"]

    # The operator answers as the persona: a normal reply on the person's socket.
    said = httpx.post(
        _url(server, conv, "/messages"),
        headers=server.auth,
        json={"name": "Sam", "text": "Yes, I am here."},
    )
    assert said.status_code == 201, said.text
    created = await person.until("response.created")
    delta = await person.until("response.text.delta")
    done = await person.until("response.done")
    assert delta["delta"] == "Yes, I am here." and done["text"] == "Yes, I am here."
    assert "speaker" not in done and created["response_id"] == done["response_id"]

    # Handing back: the bot answers the next message again.
    back = httpx.request("DELETE", _url(server, conv), headers=server.auth, json={"name": "Sam"})
    assert (
        back.status_code == 200
        and back.json()["messages"] == 1
        and back.json()["ended_by"] == "Sam"
    )
    await person.until("takeover.ended")
    await person.send({"type": "message.create", "id": "m3", "text": "thanks"})
    await person.until("response.done", timeout=20)
    assert len(fake_llm.requests) > llm_calls

    # Recorded, and the history keeps the operator's message as the persona's.
    status = httpx.get(_url(server, conv), headers=server.auth).json()
    assert status["active"] is None and [t["operator"] for t in status["history"]] == ["Sam"]
    history = httpx.get(
        f"{server.url}/v1/conversations/{conv}/messages", headers=server.auth
    ).json()["data"]
    assert "Yes, I am here." in [m["content"] for m in history if m["role"] == "assistant"]
    assert (
        httpx.delete(_url(server, conv), headers=server.auth).status_code == 409
    )  # not taken over
    await person.close()


async def test_a_visible_operator_and_bad_requests(
    server: ServerProcess, persona: dict[str, Any]
) -> None:
    watcher = await connect(server)
    conv = (await watcher.start(persona["id"], user="visible"))["conversation_id"]
    assert (
        httpx.post(_url(server, conv), headers=server.auth, json={"mode": "ghost"}).status_code
        == 400
    )
    assert httpx.post(_url(server, "conv_nope"), headers=server.auth).status_code == 404
    assert (
        httpx.post(
            _url(server, conv, "/messages"), headers=server.auth, json={"text": "hi"}
        ).status_code
        == 409
    )
    assert (
        httpx.post(
            _url(server, conv), headers=server.auth, json={"mode": "operator", "name": "Ana"}
        ).status_code
        == 201
    )
    assert (
        httpx.post(
            _url(server, conv, "/messages"), headers=server.auth, json={"name": "Ana", "text": " "}
        ).status_code
        == 400
    )
    httpx.post(
        _url(server, conv, "/messages"),
        headers=server.auth,
        json={"name": "Ana", "text": "Ana from support here."},
    )
    done = await watcher.until("response.done")
    assert done["speaker"] == {"type": "operator", "name": "Ana"}
    token = httpx.post(
        server.url + "/v1/sessions", headers=server.auth, json={"user": {"id": "visible"}}
    ).json()["token"]
    assert (
        httpx.post(_url(server, conv), headers={"Authorization": f"Bearer {token}"}).status_code
        == 403
    )
    httpx.request("DELETE", _url(server, conv), headers=server.auth, json={"name": "Ana"})
    await watcher.close()
