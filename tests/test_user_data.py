"""Export a person's data, and forget a person entirely."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx

from memory.db import create_engine, normalize_database_url
from memory.memories import MemoryStore, NewMemory
from memory.store import Store
from server.users_api import EXPORT_PAGE
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


async def _export_job(server: ServerProcess, conv: str) -> str:
    """Run a conversation export job to the end; its job id."""
    r = httpx.post(f"{server.url}/v1/conversations/{conv}/export", headers=server.auth)
    assert r.status_code == 202, r.text
    job_id = str(r.json()["job_id"])
    for _ in range(200):
        state = httpx.get(f"{server.url}/v1/jobs/{job_id}", headers=server.auth).json()["state"]
        if state == "done":
            return job_id
        assert state in ("queued", "running"), state
        await asyncio.sleep(0.05)
    raise AssertionError("the export job did not finish")


async def test_forgetting_a_person_removes_their_export_files(
    server: ServerProcess, persona: dict[str, Any]
) -> None:
    mine = await _chat(server, persona, "exported-leaver", ["my secret plan"])
    theirs = await _chat(server, persona, "exported-stayer", ["not mine"])
    my_jobs = [await _export_job(server, mine), await _export_job(server, mine)]
    their_job = await _export_job(server, theirs)
    exports = server.data_dir / "media" / "exports"

    def exported(job: str) -> bool:
        return any(exports.rglob(f"{job}.json"))

    # One folder per conversation: exports/<tenant>/<conversation>/<job>.json
    assert all(p.parent.name == mine for j in my_jobs for p in exports.rglob(f"{j}.json"))
    assert all(exported(j) for j in [*my_jobs, their_job])
    # A file written by an older version, named by job id in exports/ itself
    legacy = exports / "job_legacy.json"
    legacy.write_text(
        json.dumps({"format": "x", "version": 1, "exported_at": "t", "conversation_id": mine})
    )

    r = httpx.delete(f"{server.url}/v1/users/exported-leaver/data", headers=server.auth)
    assert r.status_code == 200, r.text
    assert r.json()["deleted"]["export_files"] == 3
    assert not any(exported(j) for j in my_jobs) and not legacy.exists()
    for job in my_jobs:  # the job record remains; its file is gone
        r = httpx.get(f"{server.url}/v1/jobs/{job}/result", headers=server.auth)
        assert r.status_code == 410 and r.json()["error"]["code"] == "result_gone", r.text
    # someone else's export stays, and is still served
    assert exported(their_job)
    r = httpx.get(f"{server.url}/v1/jobs/{their_job}/result", headers=server.auth)
    assert r.status_code == 200 and r.json()["conversation_id"] == theirs


async def test_export_of_a_long_history_is_streamed_in_pages(
    server: ServerProcess, persona: dict[str, Any]
) -> None:
    """More messages and memories than one page (users_api.EXPORT_PAGE), all in order."""
    conv = await _chat(server, persona, "chatty", ["hello"])
    store = Store(create_engine(normalize_database_url(None, server.data_dir)))
    try:
        owners = [
            t.id
            for t in await store.list_tenants()
            if await store.get_conversation(t.id, conv) is not None
        ]
        (tenant,) = owners
        for i in range(EXPORT_PAGE + 20):
            await store.add_message(tenant, conv, role="user", content=f"bulk {i}")
        conversation = await store.get_conversation(tenant, conv)
        assert conversation is not None
        memories = MemoryStore(store)
        await memories.add_many(
            tenant,
            [
                NewMemory(conversation.persona_id, conversation.user_id, f"fact {i}")
                for i in range(EXPORT_PAGE + 5)
            ],
        )
    finally:
        await store.close()

    with httpx.stream(
        "GET", f"{server.url}/v1/users/chatty/export", headers=server.auth, timeout=30
    ) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("application/json")
        assert "content-length" not in r.headers  # streamed, not built in memory first
        body = json.loads(r.read())
    assert set(body) == {"user", "conversations", "memories"}
    (exported,) = body["conversations"]
    contents = [m["content"] for m in exported["messages"]]
    assert contents[:1] == ["hello"] and len(contents) == 2 + EXPORT_PAGE + 20
    assert contents[2:] == [f"bulk {i}" for i in range(EXPORT_PAGE + 20)]
    facts = [m["text"] for m in body["memories"] if m["text"].startswith("fact ")]
    assert sorted(facts) == sorted(f"fact {i}" for i in range(EXPORT_PAGE + 5))
    # newest first, as GET /v1/memories lists them
    stamps = [(m["valid_from"], m["id"]) for m in body["memories"]]
    assert stamps == sorted(stamps, reverse=True)
