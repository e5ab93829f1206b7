"""Analysis through a real `salon serve`, on SQLite and on Postgres: a message is
analysed in the background, announced as ``message.analysis``, returned in history,
and counted in ``/v1/analytics/*``, for its own tenant only."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx
import pytest

from tests.conftest import Client, ServerProcess, connect
from tests.test_cli import salon

HAPPY = "I am so happy and grateful today, what a wonderful and beautiful day!"
ANGRY = "I hate this, it is infuriating and disgusting. I am furious!"


async def _talk(srv: ServerProcess, persona: str, user: str, text: str) -> dict[str, Any]:
    """Send one message; return the conversation id, ids and the analysis events seen."""
    c: Client = await connect(srv)
    ready = await c.start(persona, user=user)
    assert ready["type"] == "session.ready", ready
    await c.send({"type": "message.create", "id": "m1", "text": text})
    accepted = await c.until("message.accepted")
    done: dict[str, Any] | None = None
    analyses: dict[str, dict[str, Any]] = {}
    deadline = asyncio.get_running_loop().time() + 30
    while done is None or done["message_id"] not in analyses:
        left = deadline - asyncio.get_running_loop().time()
        event = await c.until(("message.analysis", "response.done", "error"), timeout=left)
        assert event["type"] != "error", event
        if event["type"] == "response.done":
            done = event
        else:
            analyses[event["message_id"]] = event
    if accepted["message_id"] not in analyses:
        analyses[accepted["message_id"]] = await c.until("message.analysis")
    await c.close()
    return {
        "conversation_id": ready["conversation_id"],
        "user_message": accepted["message_id"],
        "reply": done["message_id"],
        "events": analyses,
    }


def _get(srv: ServerProcess, path: str, key: str | None = None, **params: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else srv.auth
    return httpx.get(srv.url + path, params=params, headers=headers, timeout=10)


def _top(emotions: dict[str, float]) -> str:
    return max(emotions, key=lambda k: emotions[k])


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> dict[str, str]:
    if request.param == "postgres":
        return {"SALON_DATABASE_URL": request.getfixturevalue("postgres_url")}
    return {}


async def test_messages_are_analysed_announced_kept_and_aggregated(
    make_server: Any, backend: dict[str, str]
) -> None:
    srv: ServerProcess = make_server(**backend)
    persona = srv.create_persona(name="Ada", slug="ada")
    happy = await _talk(srv, persona["id"], "joy", HAPPY)
    angry = await _talk(srv, "ada", "grumpy", ANGRY)

    # the live event, for the person's message and for the reply
    event = happy["events"][happy["user_message"]]
    assert event["conversation_id"] == happy["conversation_id"] and event["role"] == "user"
    analysis = event["analysis"]
    assert set(analysis) == {"sentiment", "emotions", "language"}
    assert analysis["sentiment"]["compound"] > 0.5
    assert _top(analysis["emotions"]) == "joy"
    assert analysis["language"] == "en"
    assert happy["events"][happy["reply"]]["role"] == "assistant"
    assert angry["events"][angry["user_message"]]["analysis"]["sentiment"]["compound"] < -0.5

    # history carries the same analysis for both messages
    r = _get(srv, f"/v1/conversations/{happy['conversation_id']}/messages")
    assert r.status_code == 200
    by_id = {m["id"]: m for m in r.json()["data"]}
    assert by_id[happy["user_message"]]["analysis"] == analysis
    assert by_id[happy["reply"]]["analysis"] == happy["events"][happy["reply"]]["analysis"]
    one = _get(srv, f"/v1/analytics/messages/{happy['user_message']}")
    assert one.status_code == 200 and one.json()["analysis"] == analysis

    # a client that resumes from the start replays the analysis events in order
    c = await connect(srv)
    await c.start(
        persona["id"], user="joy", conversation_id=happy["conversation_id"], resume_after=0
    )
    seen = []
    while len(seen) < 2:
        seen.append(await c.until("message.analysis"))
    await c.close()
    assert {e["message_id"] for e in seen} == {happy["user_message"], happy["reply"]}
    assert seen[0]["seq"] < seen[1]["seq"]

    # aggregates: people's messages by default, filters narrow the slice
    series = _get(srv, "/v1/analytics/sentiment", bucket="hour").json()
    assert series["bucket"] == "hour" and series["filters"]["role"] == "user"
    assert series["overall"]["count"] == 2
    assert sum(p["count"] for p in series["data"]) == 2
    joy = _get(srv, "/v1/analytics/sentiment", bucket="hour", user="joy").json()
    assert joy["overall"]["count"] == 1
    assert joy["overall"]["sentiment"]["compound"] == analysis["sentiment"]["compound"]
    grumpy = _get(srv, "/v1/analytics/emotions", user="grumpy", persona="ada").json()
    assert _top(grumpy["overall"]["emotions"]) in {"anger", "disgust"}
    assert "sentiment" not in grumpy["data"][0]
    everyone = _get(srv, "/v1/analytics/sentiment", role="all", channel="ws").json()
    assert everyone["overall"]["count"] == 4
    api = _get(srv, "/v1/analytics/sentiment", channel="api").json()
    assert api["data"] == [] and api["overall"] is None

    # bad requests, credentials and tenants
    assert _get(srv, "/v1/analytics/sentiment", bucket="week").status_code == 400
    assert _get(srv, "/v1/analytics/sentiment", role="bot").status_code == 400
    assert _get(srv, "/v1/analytics/sentiment", persona="nobody").status_code == 404
    assert _get(srv, "/v1/analytics/sentiment", user="nobody").status_code == 404
    assert _get(srv, "/v1/analytics/sentiment", **{"from": "yesterday"}).status_code == 400
    assert (
        _get(srv, "/v1/analytics/sentiment", bucket="hour", **{"from": "2020-01-01"}).status_code
        == 400
    )  # too many buckets
    assert _get(srv, "/v1/analytics/sentiment", key="sk_wrong").status_code == 401
    token = httpx.post(
        srv.url + "/v1/sessions", json={"user": {"id": "joy"}}, headers=srv.auth, timeout=10
    ).json()["token"]
    assert _get(srv, "/v1/analytics/sentiment", key=token).status_code == 403

    created = salon("tenants", "create", "other", data_dir=srv.data_dir, **backend)
    assert created.returncode == 0, created.stderr
    other_key = re.findall(r"sk_salon_\S+", created.stdout)[-1]
    theirs = _get(srv, "/v1/analytics/sentiment", key=other_key).json()
    assert theirs["data"] == [] and theirs["overall"] is None
    assert _get(srv, "/v1/analytics/sentiment", key=other_key, persona="ada").status_code == 404
    gone = _get(srv, f"/v1/analytics/messages/{happy['user_message']}", key=other_key)
    assert gone.status_code == 404


async def test_analysis_can_be_switched_off(make_server: Any) -> None:
    srv: ServerProcess = make_server(SALON_ANALYSIS_ENABLED="false")
    persona = srv.create_persona()
    c = await connect(srv)
    ready = await c.start(persona["id"], user="u")
    await c.send({"type": "message.create", "id": "m1", "text": HAPPY})
    await c.until("response.done", timeout=30)
    with pytest.raises(TimeoutError):
        await c.until("message.analysis", timeout=0.5)
    await c.close()
    r = _get(srv, f"/v1/conversations/{ready['conversation_id']}/messages")
    assert [m["analysis"] for m in r.json()["data"]] == [None, None]
    off = _get(srv, "/v1/analytics/sentiment")
    assert off.status_code == 404 and off.json()["error"]["code"] == "analysis_disabled"
