"""/v1/memories: list, add, edit, pin, forget one; tenant and user scoping."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import ServerProcess, connect


async def _user(server: ServerProcess, persona: dict[str, Any], user: str) -> None:
    c = await connect(server)
    await c.start(persona["id"], user=user)
    await c.close()


async def test_memory_crud_and_pinning(
    server: ServerProcess, persona: dict[str, Any], fake_llm: Any
) -> None:
    await _user(server, persona, "mina")
    base, auth = f"{server.url}/v1/memories", server.auth
    r = httpx.post(
        base,
        headers=auth,
        json={
            "persona": persona["slug"],
            "user": "mina",
            "text": "Mina is vegetarian",
            "kind": "preference",
        },
    )
    assert r.status_code == 201, r.text
    memory = r.json()
    assert memory["kind"] == "preference" and memory["pinned"] is False

    listed = httpx.get(
        base, headers=auth, params={"persona": persona["id"], "user": "mina"}
    ).json()["data"]
    assert [m["id"] for m in listed] == [memory["id"]]

    r = httpx.patch(
        f"{base}/{memory['id']}", headers=auth, json={"pinned": True, "text": "Mina is vegan"}
    )
    assert (
        r.status_code == 200 and r.json()["pinned"] is True and r.json()["text"] == "Mina is vegan"
    )
    # a pinned memory is always in the persona's prompt
    c = await connect(server)
    await c.start(persona["id"], user="mina")
    await c.send({"type": "message.create", "id": "q", "text": "what should we cook?"})
    await c.until("response.done")
    await c.close()
    assert "Mina is vegan" in fake_llm.requests[-1]["messages"][0]["content"]

    assert (
        httpx.patch(f"{base}/{memory['id']}", headers=auth, json={"colour": 1}).status_code == 422
    )
    assert (
        httpx.patch(f"{base}/{memory['id']}", headers=auth, json={"importance": 7}).status_code
        == 422
    )
    assert httpx.delete(f"{base}/{memory['id']}", headers=auth).status_code == 204
    assert httpx.get(f"{base}/{memory['id']}", headers=auth).status_code == 404


async def test_memory_scoping(server: ServerProcess, persona: dict[str, Any]) -> None:
    await _user(server, persona, "owner")
    await _user(server, persona, "other")
    auth = server.auth
    mine = httpx.post(
        f"{server.url}/v1/memories",
        headers=auth,
        json={"persona": persona["id"], "user": "owner", "text": "owner secret"},
    ).json()
    token = httpx.post(
        f"{server.url}/v1/sessions", headers=auth, json={"user": {"id": "other"}}
    ).json()["token"]
    as_other = {"Authorization": f"Bearer {token}"}
    assert httpx.get(f"{server.url}/v1/memories/{mine['id']}", headers=as_other).status_code == 404
    seen = httpx.get(
        f"{server.url}/v1/memories", headers=as_other, params={"user": "owner"}
    ).json()["data"]
    assert all(m["text"] != "owner secret" for m in seen)  # the token's own user, whatever is asked
    assert (
        httpx.delete(f"{server.url}/v1/memories/{mine['id']}", headers=as_other).status_code == 403
    )
    assert (
        httpx.post(
            f"{server.url}/v1/memories",
            headers=auth,
            json={"persona": persona["id"], "user": "nobody", "text": "x"},
        ).status_code
        == 404
    )
    assert (
        httpx.get(f"{server.url}/v1/memories", headers=auth, params={"kind": "gossip"}).status_code
        == 400
    )
