"""/v1/feeds through a real `salon serve`: add, refresh, status, topics, the persona's prompt.

The feeds are served by a loopback feed server, so the servers here run with
``SALON_FEEDS_ALLOW_PRIVATE=true``; the background fetcher is off
(``SALON_FEEDS_POLL=false``) except in the test that checks it.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import SALON_BIN, ServerProcess, connect
from tests.fakes.feed_server import FeedServer, rss
from tests.fakes.openai_server import FakeOpenAI

FEEDS_ENV = {"SALON_FEEDS_ALLOW_PRIVATE": "true", "SALON_FEEDS_POLL": "false"}

HEADLINES = [
    ("Quantum battery startup raises record funding", "Investors are thrilled."),
    ("Quantum battery passes first safety test", "Engineers celebrate the quantum battery."),
    ("Regulators review quantum battery claims", "Some experts doubt the numbers."),
    ("Quantum battery factory opens in Ohio", "Hundreds of jobs for the region."),
    ("Local bakery wins bread award", "The sourdough impressed the judges."),
    ("Chess club celebrates anniversary", "Fifty years of chess in town."),
]


@pytest.fixture(scope="module")
def feeds() -> Iterator[FeedServer]:
    server = FeedServer().start()
    yield server
    server.stop()


def _news(prefix: str) -> bytes:
    now = datetime.now(UTC)
    return rss(
        [
            {
                "title": title,
                "description": text,
                "guid": f"{prefix}-{i}",
                "link": f"http://example.test/{prefix}/{i}",
                "date": now - timedelta(minutes=5 + i),
            }
            for i, (title, text) in enumerate(HEADLINES)
        ]
    )


def _new_tenant(srv: ServerProcess, name: str) -> dict[str, str]:
    """`salon tenants create NAME` against the server's database; its admin key as headers."""
    env = {k: v for k, v in srv.env.items()}
    r = subprocess.run(
        [SALON_BIN, "tenants", "create", name],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    key = r.stdout.strip().splitlines()[-1].strip()
    assert key.startswith("sk_salon_"), r.stdout
    return {"Authorization": f"Bearer {key}"}


def _system_prompt_for(fake: FakeOpenAI, persona_name: str) -> str:
    for request in reversed(fake.requests):
        system = request["messages"][0]["content"]
        if persona_name in system:
            return str(system)
    raise AssertionError(f"no LLM request for {persona_name}")


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_feed_topics_reach_the_persona_prompt(
    backend: str,
    make_server: Any,
    feeds: FeedServer,
    fake_llm: FakeOpenAI,
    request: pytest.FixtureRequest,
) -> None:
    extra = (
        {"SALON_DATABASE_URL": request.getfixturevalue("postgres_url")}
        if backend == "postgres"
        else {}
    )
    srv: ServerProcess = make_server(**FEEDS_ENV, **extra)
    persona = srv.create_persona(name="Nova Newsreader")
    url = feeds.put(f"e2e-{persona['id']}.xml", _news(persona["id"]))
    base, auth = srv.url + "/v1/feeds", srv.auth

    r = httpx.post(base, json={"persona": persona["slug"], "url": url}, headers=auth, timeout=10)
    assert r.status_code == 201, r.text
    feed = r.json()
    assert feed["persona"] == persona["id"] and feed["status"] == "pending"
    assert feed["interval_seconds"] == 900 and feed["failures"] == 0
    again = httpx.post(base, json={"persona": persona["id"], "url": url}, headers=auth, timeout=10)
    assert again.status_code == 409

    refreshed = httpx.post(f"{base}/{feed['id']}/refresh", headers=auth, timeout=30)
    assert refreshed.status_code == 200, refreshed.text
    assert refreshed.json()["status"] == "ok" and refreshed.json()["new_items"] == len(HEADLINES)
    assert refreshed.json()["feed"]["title"] == "Fixture News"
    not_modified = httpx.post(f"{base}/{feed['id']}/refresh", headers=auth, timeout=30).json()
    assert not_modified["status"] == "not_modified" and not_modified["new_items"] == 0

    listed = httpx.get(base, params={"persona": persona["slug"]}, headers=auth, timeout=10).json()
    (status,) = listed["data"]
    assert status["status"] == "ok" and status["last_ok_at"] and status["last_error"] is None
    items = httpx.get(f"{base}/{feed['id']}/items", headers=auth, timeout=10).json()["data"]
    assert len(items) == len(HEADLINES) and all(i["keyphrases"] for i in items)

    topics = httpx.get(
        base + "/topics", params={"persona": persona["slug"]}, headers=auth, timeout=10
    ).json()
    phrases = [t["phrase"] for t in topics["data"]]
    assert phrases and ("quantum" in phrases[0] or "battery" in phrases[0]), phrases
    assert topics["data"][0]["count"] == 4

    c = await connect(srv)
    await c.start(persona["id"], user="reader")
    await c.send({"type": "message.create", "id": "m1", "text": "Anything new today?"})
    await c.until("response.done", timeout=20)
    await c.close()
    system = _system_prompt_for(fake_llm, "Nova Newsreader")
    assert "Topics in the news you follow right now" in system
    assert phrases[0] in system
    assert "Quantum battery" in system  # a headline, for the persona to talk about

    # Unsubscribing removes the items, so the topics go too.
    assert httpx.delete(f"{base}/{feed['id']}", headers=auth, timeout=10).status_code == 204
    assert httpx.get(f"{base}/{feed['id']}", headers=auth, timeout=10).status_code == 404


def test_a_down_feed_is_reported_not_fatal(make_server: Any, feeds: FeedServer) -> None:
    srv: ServerProcess = make_server(**FEEDS_ENV)
    persona = srv.create_persona()
    base, auth = srv.url + "/v1/feeds", srv.auth
    body = {"persona": persona["id"], "url": feeds.url("status/500"), "interval_seconds": 120}
    feed = httpx.post(base, json=body, headers=auth, timeout=10).json()

    r = httpx.post(f"{base}/{feed['id']}/refresh", headers=auth, timeout=30)
    assert r.status_code == 200 and r.json()["status"] == "error"
    status = httpx.get(f"{base}/{feed['id']}", headers=auth, timeout=10).json()
    assert status["status"] == "error" and status["failures"] == 1
    assert status["last_error"].startswith("HTTP 500") and status["last_status"] == 500
    assert status["last_ok_at"] is None
    wait = datetime.fromisoformat(status["next_fetch_at"]) - datetime.fromisoformat(
        status["last_fetch_at"]
    )
    assert timedelta(seconds=240) <= wait <= timedelta(seconds=265)  # 2 * interval + jitter

    garbage = feeds.put(f"garbage-{persona['id']}.html", b"<html>not a feed", "text/html")
    feed2 = httpx.post(
        base, json={"persona": persona["id"], "url": garbage}, headers=auth, timeout=10
    ).json()
    r = httpx.post(f"{base}/{feed2['id']}/refresh", headers=auth, timeout=30)
    assert r.json()["status"] == "error" and "not an RSS or Atom feed" in r.json()["error"]
    # The server is fine, and so is chat.
    assert httpx.get(srv.url + "/readyz", timeout=10).status_code == 200


def test_the_background_fetcher_fetches_when_asked(make_server: Any, feeds: FeedServer) -> None:
    srv: ServerProcess = make_server(
        SALON_FEEDS_ALLOW_PRIVATE="true", SALON_FEEDS_POLL="true", SALON_FEEDS_TICK_SECONDS="0.2"
    )
    persona = srv.create_persona()
    path = f"polled-{persona['id']}.xml"
    url = feeds.put(path, _news("polled"))
    feed = httpx.post(
        srv.url + "/v1/feeds", json={"persona": persona["id"], "url": url}, headers=srv.auth
    ).json()
    deadline = time.time() + 20
    while time.time() < deadline:
        status = httpx.get(f"{srv.url}/v1/feeds/{feed['id']}", headers=srv.auth).json()
        if status["status"] == "ok":
            break
        time.sleep(0.2)
    assert status["status"] == "ok", status
    time.sleep(1)  # several more ticks: not due again, so not fetched again
    assert len(feeds.hits(path)) == 1


def test_feed_requests_are_validated(server: ServerProcess, feeds: FeedServer) -> None:
    persona = server.create_persona()
    base, auth = server.url + "/v1/feeds", server.auth

    def post(**body: Any) -> httpx.Response:
        return httpx.post(base, json={"persona": persona["id"], **body}, headers=auth, timeout=10)

    # The shared server does not allow private addresses: loopback fixtures are refused.
    r = post(url=feeds.url("news.xml"))
    assert r.status_code == 422 and "SALON_FEEDS_ALLOW_PRIVATE" in r.json()["error"]["message"]
    assert post(url="http://169.254.169.254/latest/meta-data/").status_code == 422
    for bad in ("file:///etc/passwd", "ftp://example.com/f", "javascript:alert(1)", "", 7):
        r = post(url=bad)
        assert r.status_code == 422, bad
        assert r.json()["error"]["code"] == "invalid_feed_url"
    assert post(url="https://example.com/f.xml", interval_seconds=5).status_code == 422
    assert post(url="https://example.com/f.xml", interval_seconds="60").status_code == 422
    assert post(url="https://example.com/f.xml", colour="red").status_code == 422
    r = httpx.post(base, json={"persona": "nobody", "url": "https://e.com/"}, headers=auth)
    assert r.status_code == 404
    assert httpx.post(base, json={"url": "https://e.com/"}, headers=auth).status_code == 400
    assert httpx.get(base + "/topics", headers=auth).status_code == 400
    assert httpx.get(base + "/feed_nope", headers=auth).status_code == 404
    assert httpx.get(base).status_code == 401


def test_feeds_are_tenant_scoped(make_server: Any, feeds: FeedServer, tmp_path: Path) -> None:
    srv: ServerProcess = make_server(**FEEDS_ENV)
    persona = srv.create_persona(name="Private Reader")
    url = feeds.put(f"tenant-{persona['id']}.xml", _news("tenant"))
    base, auth = srv.url + "/v1/feeds", srv.auth
    feed = httpx.post(base, json={"persona": persona["id"], "url": url}, headers=auth).json()
    assert httpx.post(f"{base}/{feed['id']}/refresh", headers=auth, timeout=30).status_code == 200

    other = _new_tenant(srv, "other")
    assert httpx.get(base, headers=other).json() == {"data": []}
    for method, path in (
        ("GET", f"/{feed['id']}"),
        ("GET", f"/{feed['id']}/items"),
        ("POST", f"/{feed['id']}/refresh"),
        ("DELETE", f"/{feed['id']}"),
    ):
        assert httpx.request(method, base + path, headers=other).status_code == 404, path
    r = httpx.get(base + "/topics", params={"persona": persona["id"]}, headers=other)
    assert r.status_code == 404
    r = httpx.post(base, json={"persona": persona["id"], "url": url}, headers=other)
    assert r.status_code == 404
    # Still there for its owner.
    assert httpx.get(f"{base}/{feed['id']}", headers=auth).status_code == 200

    # A session token (a person's browser) cannot manage feeds.
    token = httpx.post(
        srv.url + "/v1/sessions", json={"user": {"id": "someone"}}, headers=auth
    ).json()
    session = {"Authorization": f"Bearer {token['token']}"}
    assert httpx.get(base, headers=session).status_code == 403


def test_feeds_can_be_disabled(make_server: Any) -> None:
    srv: ServerProcess = make_server(SALON_FEEDS_ENABLED="false")
    r = httpx.get(srv.url + "/v1/feeds", headers=srv.auth)
    assert r.status_code == 404 and r.json()["error"]["code"] == "feeds_disabled"
