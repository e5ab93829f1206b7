"""Comment automation through a real ``salon serve``: signed deliveries in, replies out.

Meta's Graph API and X's API are loopback fakes speaking their real formats
(tests/fakes/meta_server.py, x_server.py); deliveries are built from the
platforms' documented samples and signed as they sign them. The persona's
replies come from the fake LLM through the normal conversation path.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import ServerProcess, server_env
from tests.fakes import meta_server, x_server
from tests.fakes.meta_server import FakeGraph
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.x_server import FakeX

APP_SECRET = "meta-app-secret-for-tests"
VERIFY_TOKEN = "verify-me"
X_SECRET = "x-consumer-secret-for-tests"
TOKEN = "EAAB-page-token"
IG_ACCOUNT = "17841400000000001"
PAGE = "44444444"


@pytest.fixture(scope="module")
def graph() -> Iterator[FakeGraph]:
    server = FakeGraph().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def xapi() -> Iterator[FakeX]:
    server = FakeX().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def srv(
    fake_llm: FakeOpenAI, graph: FakeGraph, xapi: FakeX, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    data_dir = tmp_path_factory.mktemp("salon-social")
    env = server_env(
        data_dir,
        fake_llm,
        SALON_META_APP_SECRET=APP_SECRET,
        SALON_META_VERIFY_TOKEN=VERIFY_TOKEN,
        SALON_META_GRAPH_URL=graph.base_url,
        SALON_X_CONSUMER_SECRET=X_SECRET,
        SALON_X_API_URL=xapi.base_url,
        SALON_YOUTUBE_POLL="false",
        SALON_SOCIAL_SWEEP_SECONDS="0.2",
        SALON_SOCIAL_RETRY_BASE_SECONDS="0.2",
    )
    proc = ServerProcess(data_dir, env).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def persona(srv: ServerProcess) -> dict[str, Any]:
    return srv.create_persona(name="Ada", description="a friendly shop assistant")


def connect_account(srv: ServerProcess, persona: dict[str, Any], **fields: Any) -> dict[str, Any]:
    body = {"persona": persona["id"], "credentials": {"access_token": TOKEN}, **fields}
    r = httpx.post(srv.url + "/v1/social/accounts", headers=srv.auth, json=body)
    assert r.status_code == 201, r.text
    return dict(r.json())


def post_meta(
    srv: ServerProcess, payload: dict[str, Any], secret: str = APP_SECRET, query: str = ""
) -> httpx.Response:
    raw, headers = meta_server.signed_delivery(payload, secret)
    return httpx.post(srv.url + "/v1/webhooks/meta" + query, content=raw, headers=headers)


def replies(srv: ServerProcess, **params: str) -> list[dict[str, Any]]:
    r = httpx.get(srv.url + "/v1/replies", headers=srv.auth, params=params)
    assert r.status_code == 200, r.text
    return list(r.json()["data"])


def wait_for(check: Callable[[], Any], timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out")


def by_comment(
    srv: ServerProcess, comment_id: str, status: str | None = None
) -> dict[str, Any] | None:
    for item in replies(srv, limit="500"):
        if item["comment_id"] == comment_id and (status is None or item["status"] == status):
            return item
    return None


def test_meta_verification(srv: ServerProcess) -> None:
    ok = httpx.get(
        srv.url + "/v1/webhooks/meta", params=meta_server.challenge_query(VERIFY_TOKEN, "12345")
    )
    assert ok.status_code == 200 and ok.text == "12345"
    wrong = httpx.get(srv.url + "/v1/webhooks/meta", params=meta_server.challenge_query("nope"))
    assert wrong.status_code == 403
    assert httpx.get(srv.url + "/v1/webhooks/nowhere").status_code == 404


def test_approval_queue_edit_approve_send(
    srv: ServerProcess, persona: dict[str, Any], graph: FakeGraph
) -> None:
    connect_account(
        srv, persona, platform="instagram", account_id=IG_ACCOUNT, policy={"mode": "approval"}
    )
    started = time.monotonic()
    r = post_meta(
        srv,
        meta_server.delivery(
            "instagram", IG_ACCOUNT, meta_server.ig_comment("c-appr-1", "Do you ship to Lyon?")
        ),
    )
    assert r.status_code == 200 and r.json()["new"] == 1
    assert time.monotonic() - started < 1.0  # acknowledged fast; processing is in the background

    pending = wait_for(lambda: by_comment(srv, "c-appr-1", "pending"))
    assert pending["reply"]["text"] and pending["author"]["name"] == "test"
    assert pending["conversation_id"] and pending["user"]
    assert not [c for c in graph.calls if c.get("object_id") == "c-appr-1"]  # nothing sent yet

    edited = httpx.patch(
        f"{srv.url}/v1/replies/{pending['id']}",
        headers=srv.auth,
        json={"text": "Yes, we ship to Lyon!"},
    )
    assert edited.status_code == 200 and edited.json()["reply"]["text"] == "Yes, we ship to Lyon!"
    approved = httpx.post(f"{srv.url}/v1/replies/{pending['id']}/approve", headers=srv.auth)
    assert approved.status_code == 200
    sent = wait_for(lambda: by_comment(srv, "c-appr-1", "sent"))
    call = next(c for c in graph.calls if c.get("object_id") == "c-appr-1")
    assert (
        call["edge"] == "replies"
        and call["message"] == "Yes, we ship to Lyon!"
        and call["token"] == TOKEN
    )
    assert sent["reply"]["id"] and sent["decided_by"]
    # A decided reply cannot be approved or edited again.
    assert (
        httpx.post(f"{srv.url}/v1/replies/{pending['id']}/approve", headers=srv.auth).status_code
        == 409
    )
    # The commenter is a user of the persona, with the comment in their conversation.
    history = httpx.get(
        f"{srv.url}/v1/conversations/{sent['conversation_id']}/messages", headers=srv.auth
    ).json()["data"]
    assert [m["content"] for m in history if m["role"] == "user"] == ["Do you ship to Lyon?"]


def test_auto_replies_dedupe_and_refusals(
    srv: ServerProcess, persona: dict[str, Any], graph: FakeGraph
) -> None:
    connect_account(
        srv,
        persona,
        platform="facebook",
        account_id=PAGE,
        policy={"mode": "auto", "ignore_keywords": ["refund"]},
    )
    payload = meta_server.delivery(
        "page",
        PAGE,
        meta_server.page_comment("44444444_555", "Lovely!", post_id=f"{PAGE}_111"),
    )
    assert post_meta(srv, payload).json()["new"] == 1
    assert post_meta(srv, payload).json()["new"] == 0  # the same delivery again
    wait_for(lambda: by_comment(srv, "44444444_555", "sent"))
    time.sleep(0.5)
    assert len([c for c in graph.calls if c.get("object_id") == "44444444_555"]) == 1

    # Bad signature: 401, nothing recorded. Malformed: 400.
    bad = meta_server.delivery("page", PAGE, meta_server.page_comment("44444444_666", "sneaky"))
    assert post_meta(srv, bad, secret="not-the-secret").status_code == 401
    raw, headers = meta_server.signed_delivery({"object": "page", "entry": "nope"}, APP_SECRET)
    assert (
        httpx.post(srv.url + "/v1/webhooks/meta", content=raw, headers=headers).status_code == 400
    )
    unsigned = httpx.post(srv.url + "/v1/webhooks/meta", content=b"{}")
    assert unsigned.status_code == 401
    assert by_comment(srv, "44444444_666") is None
    log = httpx.get(srv.url + "/v1/social/deliveries", headers=srv.auth).json()["data"]
    assert {"refused", "accepted"} <= {d["status"] for d in log}
    assert any(d["code"] == "bad_signature" for d in log) and any(
        d["code"] == "malformed" for d in log
    )

    # Policy: a keyword, and the page's own comment, are never answered.
    keyword = meta_server.delivery(
        "page", PAGE, meta_server.page_comment("44444444_777", "I want a refund")
    )
    post_meta(srv, keyword)
    assert wait_for(lambda: by_comment(srv, "44444444_777", "ignored"))["reason"] == "keyword"


def test_a_platform_outage_is_retried_and_a_revoked_token_fails(
    srv: ServerProcess, persona: dict[str, Any], graph: FakeGraph
) -> None:
    graph.fail_next(500, meta_server.SERVER_ERROR, times=2)
    post_meta(
        srv,
        meta_server.delivery("page", PAGE, meta_server.page_comment("44444444_888", "Hi there")),
    )
    sent = wait_for(lambda: by_comment(srv, "44444444_888", "sent"))
    assert sent["attempts"] == 3  # two 500s, then through

    graph.fail_next(400, meta_server.TOKEN_EXPIRED, times=1)
    post_meta(
        srv, meta_server.delivery("page", PAGE, meta_server.page_comment("44444444_999", "Hello?"))
    )
    failed = wait_for(lambda: by_comment(srv, "44444444_999", "failed"))
    assert failed["attempts"] == 1 and "unauthorized" in failed["error"]
    rejected = httpx.post(
        f"{srv.url}/v1/replies/{failed['id']}/reject",
        headers=srv.auth,
        json={"reason": "token revoked"},
    )
    assert rejected.status_code == 200 and rejected.json()["status"] == "rejected"


def test_x_crc_and_a_reply_tweet(srv: ServerProcess, persona: dict[str, Any], xapi: FakeX) -> None:
    crc = httpx.get(srv.url + "/v1/webhooks/x", params={"crc_token": "challenge"})
    assert crc.status_code == 200 and crc.json()["response_token"].startswith("sha256=")
    connect_account(
        srv, persona, platform="x", account_id=x_server.ACCOUNT_ID, policy={"mode": "auto"}
    )
    tweet = x_server.reply_to_account("what time do you open?")
    raw, headers = x_server.signed_delivery(x_server.tweet_delivery([tweet]), X_SECRET)
    assert httpx.post(srv.url + "/v1/webhooks/x", content=raw, headers=headers).json()["new"] == 1
    wait_for(lambda: by_comment(srv, tweet["id_str"], "sent"))
    call = next(c for c in xapi.calls if c.in_reply_to == tweet["id_str"])
    assert call.token == TOKEN and call.text
    raw, headers = x_server.signed_delivery(
        x_server.tweet_delivery([x_server.reply_to_account("hi")]), "wrong"
    )
    assert httpx.post(srv.url + "/v1/webhooks/x", content=raw, headers=headers).status_code == 401


def test_a_tenants_own_app_and_account_management(
    srv: ServerProcess, persona: dict[str, Any]
) -> None:
    app = httpx.post(
        srv.url + "/v1/social/apps",
        headers=srv.auth,
        json={"platform": "meta", "app_secret": "tenant-secret", "verify_token": "tenant-verify"},
    )
    assert app.status_code == 201
    app_id = app.json()["id"]
    assert app.json()["webhook_url"] == f"/v1/webhooks/meta?app={app_id}"
    listed = httpx.get(srv.url + "/v1/social/apps", headers=srv.auth).json()["data"]
    assert app_id in [a["id"] for a in listed] and "tenant-secret" not in json.dumps(listed)
    ok = httpx.get(
        srv.url + "/v1/webhooks/meta",
        params={**meta_server.challenge_query("tenant-verify", "77"), "app": app_id},
    )
    assert ok.text == "77"

    account = connect_account(
        srv,
        persona,
        platform="instagram",
        account_id="17841499999999999",
        app=app_id,
        policy={"mode": "off"},
    )
    payload = meta_server.delivery(
        "instagram", "17841499999999999", meta_server.ig_comment("c-tenant-1", "nice")
    )
    assert (
        post_meta(srv, payload, secret="tenant-secret", query=f"?app={app_id}").status_code == 200
    )
    assert post_meta(srv, payload, secret=APP_SECRET, query=f"?app={app_id}").status_code == 401
    assert wait_for(lambda: by_comment(srv, "c-tenant-1", "ignored"))["reason"] == "policy_off"

    # Credentials are write-only; the same platform account cannot be connected twice.
    got = httpx.get(f"{srv.url}/v1/social/accounts/{account['id']}", headers=srv.auth).json()
    assert got["has_credentials"] is True and TOKEN not in json.dumps(got)
    again = httpx.post(
        srv.url + "/v1/social/accounts",
        headers=srv.auth,
        json={"platform": "instagram", "account_id": "17841499999999999", "persona": persona["id"]},
    )
    assert again.status_code == 409
    bad = httpx.patch(
        f"{srv.url}/v1/social/accounts/{account['id']}",
        headers=srv.auth,
        json={"policy": {"mode": "sometimes"}},
    )
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_policy"
    assert (
        httpx.patch(
            f"{srv.url}/v1/social/accounts/{account['id']}",
            headers=srv.auth,
            json={"policy": {"mode": "auto"}},
        ).json()["policy"]["mode"]
        == "auto"
    )
    session = httpx.post(
        srv.url + "/v1/sessions", headers=srv.auth, json={"user": {"id": "fan"}}
    ).json()["token"]
    assert (
        httpx.get(
            srv.url + "/v1/replies", headers={"Authorization": f"Bearer {session}"}
        ).status_code
        == 403
    )
    assert httpx.delete(
        f"{srv.url}/v1/social/accounts/{account['id']}", headers=srv.auth
    ).json() == {"deleted": True}


@pytest.fixture(scope="module")
def youtube() -> Iterator[Any]:
    from tests.fakes.youtube_server import YouTubeServer

    server = YouTubeServer().start()
    yield server
    server.stop()


def test_youtube_comments_are_polled_and_answered(
    fake_llm: FakeOpenAI, youtube: Any, make_server: Any
) -> None:
    """No webhook: the poller reads new comments, the persona answers with comments.insert."""
    from datetime import UTC, datetime, timedelta

    from tests.fakes import youtube_server

    youtube.add_video("vid1")
    youtube.add_comment(
        "vid1", "old comment, before connecting", datetime.now(UTC) - timedelta(hours=1)
    )
    srv = make_server(
        SALON_YOUTUBE_API_URL=youtube.url,
        SALON_YOUTUBE_POLL_SECONDS="0.3",
        SALON_SOCIAL_SWEEP_SECONDS="0.2",
    )
    persona = srv.create_persona(name="Vee")
    connect_account(
        srv,
        persona,
        platform="youtube",
        account_id=youtube_server.OWNER,
        credentials={"access_token": youtube_server.OWNER_TOKEN},
        policy={"mode": "auto"},
    )
    time.sleep(1.0)  # the first poll only takes a cursor: history is not answered
    new = youtube.add_comment("vid1", "How did you film this?", datetime.now(UTC))
    sent = wait_for(lambda: by_comment(srv, new, "sent"), timeout=30)
    assert sent["platform"] == "youtube" and sent["post_id"] == "vid1"
    assert [i for i in youtube.inserted if i["parentId"] == new and i["textOriginal"]]
    assert all(item["text"] != "old comment, before connecting" for item in replies(srv))
