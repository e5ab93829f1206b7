"""The OpenAI-compatible API, driven by the official `openai` SDK against `salon serve`."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import ServerProcess
from tests.fakes.openai_server import FakeOpenAI

FAKE_REPLY = "Hello from the fake model."


@pytest.fixture
async def client(server: ServerProcess) -> AsyncIterator[openai.AsyncOpenAI]:
    c = openai.AsyncOpenAI(
        base_url=server.url + "/v1", api_key=server.key, max_retries=0, timeout=20
    )
    yield c
    await c.close()


def _user() -> str:
    return "api-user-" + uuid.uuid4().hex[:8]


def _salon(resp: Any) -> dict[str, Any]:
    extra = resp.model_extra or {}
    assert "salon" in extra, resp.to_dict()
    return dict(extra["salon"])


def _history(server: ServerProcess, conv: str) -> list[tuple[str, str]]:
    r = httpx.get(f"{server.url}/v1/conversations/{conv}/messages", headers=server.auth, timeout=10)
    assert r.status_code == 200, r.text
    return [(m["role"], m["content"]) for m in r.json()["data"]]


async def test_completion_returns_the_model_reply(
    client: openai.AsyncOpenAI, persona: dict[str, Any]
) -> None:
    resp = await client.chat.completions.create(
        model=persona["id"], messages=[{"role": "user", "content": "hi"}], user=_user()
    )
    assert resp.object == "chat.completion"
    assert resp.id.startswith("chatcmpl-")
    assert resp.model == persona["slug"]
    assert len(resp.choices) == 1
    choice = resp.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == FAKE_REPLY
    assert choice.finish_reason == "stop"
    assert resp.usage is not None
    assert resp.usage.prompt_tokens > 0 and resp.usage.completion_tokens > 0
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens
    salon = _salon(resp)
    assert salon["conversation_id"] and salon["message_id"].startswith("msg_")


async def test_streaming_yields_the_same_text(
    client: openai.AsyncOpenAI, persona: dict[str, Any]
) -> None:
    stream = await client.chat.completions.create(
        model=persona["slug"],
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        user=_user(),
    )
    chunks = [chunk async for chunk in stream]
    assert len(chunks) >= 3
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == FAKE_REPLY
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])


async def test_streaming_raw_sse_ends_with_done(
    server: ServerProcess, persona: dict[str, Any]
) -> None:
    body = {
        "model": persona["slug"],
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "user": _user(),
    }
    async with (
        httpx.AsyncClient(timeout=20) as http,
        http.stream(
            "POST", server.url + "/v1/chat/completions", json=body, headers=server.auth
        ) as r,
    ):
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line async for line in r.aiter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    assert lines.count("data: [DONE]") == 1


@pytest.mark.parametrize("ref", ["id", "slug"])
async def test_model_may_be_persona_id_or_slug(
    client: openai.AsyncOpenAI, persona: dict[str, Any], ref: str
) -> None:
    resp = await client.chat.completions.create(
        model=persona[ref], messages=[{"role": "user", "content": "hi"}], user=_user()
    )
    assert resp.choices[0].message.content == FAKE_REPLY
    assert resp.model == persona["slug"]


async def test_user_owns_one_conversation_per_persona(
    server: ServerProcess, client: openai.AsyncOpenAI, persona: dict[str, Any]
) -> None:
    alice = _user()
    first = await client.chat.completions.create(
        model=persona["slug"], messages=[{"role": "user", "content": "first"}], user=alice
    )
    conv = _salon(first)["conversation_id"]
    as_dict: dict[str, Any] = dict(first.to_dict())
    assert as_dict["salon"]["conversation_id"] == conv
    assert _history(server, conv) == [("user", "first"), ("assistant", FAKE_REPLY)]

    second = await client.chat.completions.create(
        model=persona["id"], messages=[{"role": "user", "content": "second"}], user=alice
    )
    assert _salon(second)["conversation_id"] == conv
    assert _history(server, conv) == [
        ("user", "first"),
        ("assistant", FAKE_REPLY),
        ("user", "second"),
        ("assistant", FAKE_REPLY),
    ]

    bob = await client.chat.completions.create(
        model=persona["slug"], messages=[{"role": "user", "content": "bob here"}], user=_user()
    )
    bob_conv = _salon(bob)["conversation_id"]
    assert bob_conv != conv
    assert _history(server, bob_conv) == [("user", "bob here"), ("assistant", FAKE_REPLY)]
    assert len(_history(server, conv)) == 4

    # the same user with another persona is another conversation too
    other = server.create_persona()
    third = await client.chat.completions.create(
        model=other["slug"], messages=[{"role": "user", "content": "hi"}], user=alice
    )
    assert _salon(third)["conversation_id"] not in (conv, bob_conv)


async def test_streamed_reply_lands_in_the_users_history(
    server: ServerProcess, client: openai.AsyncOpenAI, persona: dict[str, Any]
) -> None:
    user = _user()
    stream = await client.chat.completions.create(
        model=persona["slug"],
        messages=[{"role": "user", "content": "streamed"}],
        stream=True,
        user=user,
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream])
    resp = await client.chat.completions.create(
        model=persona["slug"], messages=[{"role": "user", "content": "after"}], user=user
    )
    conv = _salon(resp)["conversation_id"]
    assert _history(server, conv) == [
        ("user", "streamed"),
        ("assistant", text),
        ("user", "after"),
        ("assistant", FAKE_REPLY),
    ]


async def test_client_history_is_not_new_input(
    server: ServerProcess, client: openai.AsyncOpenAI, persona: dict[str, Any]
) -> None:
    """Salon owns the history: only the last user message of `messages` is stored."""
    resp = await client.chat.completions.create(
        model=persona["slug"],
        messages=[
            {"role": "user", "content": "old question"},
            {"role": "assistant", "content": "old answer"},
            {"role": "user", "content": "new question"},
        ],
        user=_user(),
    )
    assert _history(server, _salon(resp)["conversation_id"]) == [
        ("user", "new question"),
        ("assistant", FAKE_REPLY),
    ]


async def test_client_system_message_becomes_extra_instructions(
    client: openai.AsyncOpenAI, persona: dict[str, Any], fake_llm: FakeOpenAI
) -> None:
    marker = "Always answer in haiku " + uuid.uuid4().hex[:6]
    resp = await client.chat.completions.create(
        model=persona["slug"],
        messages=[
            {"role": "system", "content": marker},
            {"role": "user", "content": "[echo] who are you"},
        ],
        user=_user(),
    )
    echoed = resp.choices[0].message.content or ""
    assert marker in echoed
    assert f"You are {persona['name']}" in echoed  # added to the persona's prompt, not replacing it
    sent = next(r for r in reversed(fake_llm.requests) if marker in r["messages"][0]["content"])
    assert sent["messages"][0]["role"] == "system"
    assert not any(m["content"] == marker for m in sent["messages"][1:])


async def test_system_instructions_apply_to_that_reply_only(
    client: openai.AsyncOpenAI, persona: dict[str, Any]
) -> None:
    user = _user()
    marker = "Speak like a pirate " + uuid.uuid4().hex[:6]
    await client.chat.completions.create(
        model=persona["slug"],
        messages=[{"role": "system", "content": marker}, {"role": "user", "content": "hi"}],
        user=user,
    )
    later = await client.chat.completions.create(
        model=persona["slug"], messages=[{"role": "user", "content": "[echo] again"}], user=user
    )
    assert marker not in (later.choices[0].message.content or "")


async def test_unknown_model_is_not_found(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        await client.chat.completions.create(
            model="no-such-persona", messages=[{"role": "user", "content": "hi"}]
        )
    assert info.value.status_code == 404
    assert info.value.code == "unknown_persona"


@pytest.mark.parametrize("key", ["wrong-key", "st1.forged.token"])
async def test_wrong_key_is_an_authentication_error(
    server: ServerProcess, persona: dict[str, Any], key: str
) -> None:
    async with openai.AsyncOpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0) as bad:
        with pytest.raises(openai.AuthenticationError) as info:
            await bad.chat.completions.create(
                model=persona["slug"], messages=[{"role": "user", "content": "hi"}]
            )
        assert info.value.status_code == 401
        with pytest.raises(openai.AuthenticationError):
            await bad.models.list()


async def test_missing_key_is_an_authentication_error(
    server: ServerProcess, persona: dict[str, Any]
) -> None:
    r = httpx.post(
        server.url + "/v1/chat/completions",
        json={"model": persona["slug"], "messages": [{"role": "user", "content": "hi"}]},
        timeout=10,
    )
    assert r.status_code == 401
    assert r.json()["error"]["type"] == "authentication_error"
    assert r.json()["error"]["code"] == "unauthorized"


@pytest.mark.parametrize(
    ("method", "path"), [("POST", "/v1/chat/completions"), ("GET", "/v1/models")]
)
def test_openai_401_has_www_authenticate(server: ServerProcess, method: str, path: str) -> None:
    r = httpx.request(
        method,
        server.url + path,
        json={"model": "x", "messages": [{"role": "user", "content": "hi"}]},
        timeout=10,
    )
    assert r.status_code == 401
    assert r.headers["www-authenticate"].lower().startswith("bearer")


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
        [{"role": "system", "content": "be nice"}],
    ],
    ids=["assistant-last", "system-only"],
)
async def test_last_message_must_be_from_the_user(
    client: openai.AsyncOpenAI, persona: dict[str, Any], messages: list[dict[str, str]]
) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await client.chat.completions.create(model=persona["slug"], messages=messages)  # type: ignore[arg-type]
    assert info.value.status_code == 400
    assert "user" in info.value.message


@pytest.mark.parametrize(
    "extra",
    [
        {"messages": []},
        {"max_tokens": 0},
        {"max_tokens": 100_000},
        {"temperature": 3},
    ],
    ids=["no-messages", "max-tokens-0", "max-tokens-huge", "temperature-3"],
)
async def test_bad_parameters_are_bad_requests(
    client: openai.AsyncOpenAI, persona: dict[str, Any], extra: dict[str, Any]
) -> None:
    kwargs: dict[str, Any] = {
        "model": persona["slug"],
        "messages": [{"role": "user", "content": "hi"}],
        **extra,
    }
    with pytest.raises(openai.BadRequestError):
        await client.chat.completions.create(**kwargs)


async def test_content_parts_are_read_as_text(
    server: ServerProcess, client: openai.AsyncOpenAI, persona: dict[str, Any]
) -> None:
    resp = await client.chat.completions.create(
        model=persona["slug"],
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "part one, "},
                    {"type": "text", "text": "two"},
                ],
            }
        ],
        user=_user(),
    )
    assert _history(server, _salon(resp)["conversation_id"])[0] == ("user", "part one, two")


async def test_provider_failure_is_a_502(
    server: ServerProcess, client: openai.AsyncOpenAI, persona: dict[str, Any]
) -> None:
    user = _user()
    with pytest.raises(openai.APIStatusError) as info:
        await client.chat.completions.create(
            model=persona["slug"], messages=[{"role": "user", "content": "[500] boom"}], user=user
        )
    assert info.value.status_code == 502
    assert not isinstance(info.value, openai.BadRequestError | openai.AuthenticationError)
    # the user's message is kept, and the conversation still works afterwards
    resp = await client.chat.completions.create(
        model=persona["slug"], messages=[{"role": "user", "content": "again"}], user=user
    )
    assert resp.choices[0].message.content == FAKE_REPLY
    history = _history(server, _salon(resp)["conversation_id"])
    assert history[0] == ("user", "[500] boom")
    assert history[-2:] == [("user", "again"), ("assistant", FAKE_REPLY)]


async def test_provider_failure_while_streaming_raises(
    client: openai.AsyncOpenAI, persona: dict[str, Any]
) -> None:
    stream = await client.chat.completions.create(
        model=persona["slug"],
        messages=[{"role": "user", "content": "[stall] go"}],
        stream=True,
        user=_user(),
    )
    got: list[str] = []
    with pytest.raises(openai.APIError) as info:
        async for chunk in stream:
            got.append(chunk.choices[0].delta.content or "")
    assert "".join(got) == "Hello from the"  # the pieces before the stall arrived
    assert info.value.code == "llm_timeout"
    assert info.value.type == "api_error" and "in time" in info.value.message


async def test_idempotency_key_does_not_store_the_message_twice(
    server: ServerProcess, client: openai.AsyncOpenAI, persona: dict[str, Any], fake_llm: FakeOpenAI
) -> None:
    user = _user()
    key = "idem-" + uuid.uuid4().hex
    kwargs: dict[str, Any] = {
        "model": persona["slug"],
        "messages": [{"role": "user", "content": "only once"}],
        "user": user,
        "extra_headers": {"Idempotency-Key": key},
    }
    first = await client.chat.completions.create(**kwargs)
    conv = _salon(first)["conversation_id"]
    calls = len(fake_llm.requests)
    # a retry (say, after a lost response) gets the original reply back
    again = await client.with_options(timeout=8).chat.completions.create(**kwargs)
    assert again.id == first.id
    assert _salon(again) == _salon(first)
    assert again.choices[0].message.content == FAKE_REPLY
    stream = await client.with_options(timeout=8).chat.completions.create(**kwargs, stream=True)
    assert "".join([c.choices[0].delta.content or "" async for c in stream]) == FAKE_REPLY
    assert _history(server, conv) == [("user", "only once"), ("assistant", FAKE_REPLY)]
    assert len(fake_llm.requests) == calls, "the repeat must not call the model again"
    # another key is another message
    other = await client.chat.completions.create(
        **{**kwargs, "extra_headers": {"Idempotency-Key": key + "-2"}}
    )
    assert other.id != first.id
    assert len(_history(server, conv)) == 4


async def test_idempotency_key_whose_reply_left_the_log_is_a_conflict(
    make_server: Any,
) -> None:
    srv: ServerProcess = make_server(SALON_EVENT_LOG_MAX_EVENTS="3")
    p = srv.create_persona()
    kwargs: dict[str, Any] = {
        "model": p["slug"],
        "messages": [{"role": "user", "content": "hi"}],
        "user": "u",
        "extra_headers": {"Idempotency-Key": "k-old"},
    }
    async with openai.AsyncOpenAI(
        base_url=srv.url + "/v1", api_key=srv.key, max_retries=0, timeout=10
    ) as c:
        first = await c.chat.completions.create(**kwargs)
        with pytest.raises(openai.ConflictError) as info:
            await c.chat.completions.create(**kwargs)
    assert info.value.code == "duplicate_request"
    conv = _salon(first)["conversation_id"]
    assert conv in info.value.message
    assert _history(srv, conv) == [("user", "hi"), ("assistant", FAKE_REPLY)]


async def test_models_lists_persona_slugs(
    server: ServerProcess, client: openai.AsyncOpenAI
) -> None:
    a = server.create_persona()
    b = server.create_persona()
    page = await client.models.list()
    ids = [m.id for m in page.data]
    assert a["slug"] in ids and b["slug"] in ids
    assert len(ids) == len(set(ids))
    model = next(m for m in page.data if m.id == a["slug"])
    assert model.object == "model" and model.owned_by == "salon" and model.created > 0
    listed = httpx.get(server.url + "/v1/personas", headers=server.auth, timeout=10).json()
    assert sorted(ids) == sorted(p["slug"] for p in listed["data"])


def _session_token(server: ServerProcess, user: str, persona: str | None = None) -> str:
    body: dict[str, Any] = {"user": user}
    if persona:
        body["persona"] = persona
    r = httpx.post(server.url + "/v1/sessions", json=body, headers=server.auth, timeout=10)
    assert r.status_code == 201, r.text
    return str(r.json()["token"])


async def test_session_token_speaks_for_its_own_user_only(
    server: ServerProcess, persona: dict[str, Any]
) -> None:
    me = _user()
    token = _session_token(server, me)
    async with openai.AsyncOpenAI(
        base_url=server.url + "/v1", api_key=token, max_retries=0, timeout=20
    ) as c:
        resp = await c.chat.completions.create(
            model=persona["slug"],
            messages=[{"role": "user", "content": "as someone else"}],
            user="victim-" + uuid.uuid4().hex[:6],
        )
    conv = _salon(resp)["conversation_id"]
    # the message landed in the token user's conversation: that user can read it
    r = httpx.get(
        f"{server.url}/v1/conversations/{conv}/messages",
        headers={"Authorization": f"Bearer {_session_token(server, me)}"},
        timeout=10,
    )
    assert r.status_code == 200
    assert r.json()["data"][0]["content"] == "as someone else"


async def test_persona_bound_session_token_cannot_use_another_persona(
    server: ServerProcess, persona: dict[str, Any]
) -> None:
    other = server.create_persona()
    token = _session_token(server, _user(), persona=persona["id"])
    async with openai.AsyncOpenAI(
        base_url=server.url + "/v1", api_key=token, max_retries=0, timeout=20
    ) as c:
        ok = await c.chat.completions.create(
            model=persona["slug"], messages=[{"role": "user", "content": "hi"}]
        )
        assert ok.choices[0].message.content == FAKE_REPLY
        with pytest.raises(openai.PermissionDeniedError):
            await c.chat.completions.create(
                model=other["slug"], messages=[{"role": "user", "content": "hi"}]
            )
