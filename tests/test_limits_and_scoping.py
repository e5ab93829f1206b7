"""Input limits, per-user rate limits and what session tokens may see."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from tests.conftest import ServerProcess, connect


def _token(server: ServerProcess, user: str, persona: str | None = None) -> str:
    body: dict[str, Any] = {"user": {"id": user}}
    if persona:
        body["persona"] = persona
    r = httpx.post(server.url + "/v1/sessions", headers=server.auth, json=body)
    assert r.status_code == 201, r.text
    return str(r.json()["token"])


def test_session_tokens_do_not_see_persona_prompts(server: ServerProcess) -> None:
    p = server.create_persona(system_prompt="SECRET RULES", scenario="hidden", description="public")
    token = {"Authorization": f"Bearer {_token(server, 'u')}"}
    got = httpx.get(f"{server.url}/v1/personas/{p['id']}", headers=token).json()
    assert got["description"] == "public" and got["slug"] == p["slug"]
    assert "system_prompt" not in got and "scenario" not in got
    listed = httpx.get(f"{server.url}/v1/personas", headers=token).json()["data"]
    assert all("system_prompt" not in x for x in listed)
    assert httpx.get(f"{server.url}/v1/personas/{p['id']}/card", headers=token).status_code == 403
    full = httpx.get(f"{server.url}/v1/personas/{p['id']}", headers=server.auth).json()
    assert full["system_prompt"] == "SECRET RULES"


async def test_a_persona_bound_token_sees_only_its_persona(server: ServerProcess) -> None:
    mine, other = server.create_persona(), server.create_persona()
    # the same user talks to the other persona through the backend's API key
    c = await connect(server)
    conv = (await c.start(other["id"], user="bound-user"))["conversation_id"]
    await c.close()
    token = {"Authorization": f"Bearer {_token(server, 'bound-user', mine['id'])}"}
    listed = httpx.get(f"{server.url}/v1/personas", headers=token).json()["data"]
    assert [x["id"] for x in listed] == [mine["id"]]
    assert httpx.get(f"{server.url}/v1/personas/{other['id']}", headers=token).status_code == 404
    r = httpx.get(f"{server.url}/v1/conversations/{conv}/messages", headers=token)
    assert r.status_code == 404


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"user": "u" * 201}, 400),
        ({"extra_headers": {"Idempotency-Key": "k" * 201}}, 400),
        ({"system": "s" * 9000}, 400),
    ],
)
async def test_openai_inputs_are_bounded(
    server: ServerProcess, persona: dict[str, Any], kwargs: dict[str, Any], code: int
) -> None:
    client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key=server.key, max_retries=0)
    messages: list[dict[str, str]] = [{"role": "user", "content": "hi"}]
    system = kwargs.pop("system", None)
    if system:
        messages.insert(0, {"role": "system", "content": system})
    with pytest.raises(openai.APIStatusError) as info:
        await client.chat.completions.create(model=persona["slug"], messages=messages, **kwargs)  # type: ignore[arg-type]
    assert info.value.status_code == code
    await client.close()


def test_session_user_id_is_bounded(server: ServerProcess) -> None:
    r = httpx.post(
        server.url + "/v1/sessions", headers=server.auth, json={"user": {"id": "x" * 201}}
    )
    assert r.status_code == 400


async def test_per_user_limit_spans_connections_and_the_openai_api(make_server: Any) -> None:
    srv: ServerProcess = make_server(SALON_USER_MESSAGES_PER_MINUTE="2")
    p = srv.create_persona()
    a, b = await connect(srv), await connect(srv)
    conv = (await a.start(p["id"], user="chatty"))["conversation_id"]
    await b.start(p["id"], user="chatty", conversation_id=conv)
    await a.send({"type": "message.create", "id": "1", "text": "one"})
    await a.until("message.accepted")
    await b.send({"type": "message.create", "id": "2", "text": "two"})
    await b.until("message.accepted")
    await b.send({"type": "message.create", "id": "3", "text": "three"})
    err = await b.until("error")
    assert err["code"] == "rate_limited" and err["id"] == "3"
    client = openai.AsyncOpenAI(base_url=srv.url + "/v1", api_key=srv.key, max_retries=0)
    with pytest.raises(openai.RateLimitError):
        await client.chat.completions.create(
            model=p["slug"], user="chatty", messages=[{"role": "user", "content": "x"}]
        )
    await client.close()
    await a.close()
    await b.close()


async def test_a_store_failure_is_an_error_frame_not_a_dropped_socket(
    server: ServerProcess,
) -> None:
    p = server.create_persona()
    c = await connect(server)
    await c.start(p["id"], user="orphan")
    assert (
        httpx.delete(f"{server.url}/v1/personas/{p['id']}", headers=server.auth).status_code == 204
    )
    await c.send({"type": "message.create", "id": "m", "text": "anyone there?"})
    err = await c.until("error")
    assert err["code"] in ("unavailable", "conversation_not_found") and err["id"] == "m"
    await c.send({"type": "ping", "id": "alive"})
    assert (await c.until("pong"))["id"] == "alive"
    await c.close()
