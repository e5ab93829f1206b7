"""Export a person's data, and forget a person entirely."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import ServerProcess, connect


async def _chat(server: ServerProcess, persona: dict[str, Any], user: str, texts: list[str]) -> str:
    c = await connect(server)
    conv = (await c.start(persona["id"], user=user))["conversation_id"]
    for i, text in enumerate(texts):
        await c.send({"type": "message.create", "id": f"{user}-{i}", "text": text})
        await c.until("response.done")
    await c.close()
    return str(conv)


def _session(server: ServerProcess, user: str) -> dict[str, str]:
    token = httpx.post(
        server.url + "/v1/sessions", headers=server.auth, json={"user": {"id": user}}
    ).json()["token"]
    return {"Authorization": f"Bearer {token}"}


async def test_export_has_every_conversation_and_message(
    server: ServerProcess, persona: dict[str, Any]
) -> None:
    conv = await _chat(server, persona, "exportee", ["first", "second"])
    other = server.create_persona()
    conv2 = await _chat(server, other, "exportee", ["third"])
    body = httpx.get(f"{server.url}/v1/users/exportee/export", headers=server.auth).json()
    assert body["user"]["id"] == "exportee"
    by_id = {c["id"]: c for c in body["conversations"]}
    assert set(by_id) == {conv, conv2}
    assert [m["content"] for m in by_id[conv]["messages"] if m["role"] == "user"] == [
        "first",
        "second",
    ]
    assert len(by_id[conv]["messages"]) == 4  # with the replies
    assert (
        httpx.get(
            f"{server.url}/v1/users/exportee/export", headers=_session(server, "exportee")
        ).status_code
        == 200
    )
    assert (
        httpx.get(
            f"{server.url}/v1/users/exportee/export", headers=_session(server, "nosy")
        ).status_code
        == 404
    )
    assert httpx.get(f"{server.url}/v1/users/nobody/export", headers=server.auth).status_code == 404


async def test_forget_a_person_entirely(server: ServerProcess, persona: dict[str, Any]) -> None:
    conv = await _chat(server, persona, "leaver", ["remember this secret"])
    keep = await _chat(server, persona, "stayer", ["keep me"])
    assert (
        httpx.delete(
            f"{server.url}/v1/users/leaver/data", headers=_session(server, "leaver")
        ).status_code
        == 403
    )
    r = httpx.delete(f"{server.url}/v1/users/leaver/data", headers=server.auth)
    assert r.status_code == 200
    deleted = r.json()["deleted"]
    assert {k: deleted[k] for k in ("users", "conversations", "messages")} == {
        "users": 1,
        "conversations": 1,
        "messages": 2,
    }
    assert deleted["memories"] >= 0  # however many the memory job had stored by then
    memories = httpx.get(f"{server.url}/v1/memories", headers=server.auth).json()["data"]
    assert not any("remember this secret" in m["text"] for m in memories)
    assert httpx.get(f"{server.url}/v1/users/leaver/export", headers=server.auth).status_code == 404
    assert (
        httpx.get(f"{server.url}/v1/conversations/{conv}/messages", headers=server.auth).status_code
        == 404
    )
    c = await connect(server)
    err = await c.start(persona["id"], user="leaver", conversation_id=conv, resume_after=0)
    assert err["type"] == "error" and err["code"] == "conversation_not_found"
    await c.close()
    # someone else's data is untouched
    kept = httpx.get(f"{server.url}/v1/conversations/{keep}/messages", headers=server.auth).json()[
        "data"
    ]
    assert [m["content"] for m in kept if m["role"] == "user"] == ["keep me"]
    assert (
        httpx.delete(f"{server.url}/v1/users/leaver/data", headers=server.auth).status_code == 404
    )
