"""Meta (Instagram, Facebook Pages): webhook verification and parsing, Graph replies.

Deliveries are built from Meta's documented sample payloads and signed as
Meta signs them (tests/fakes/meta_server.py); replies go to a fake Graph API
on loopback that records calls and fails on demand.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from starlette.datastructures import Headers

from integrations.social.base import InboundComment, ReplyError, WebhookError
from integrations.social.meta import MetaReplyClient, MetaWebhook, map_graph_error
from integrations.social.settings import SocialSettings
from tests.fakes.loopback import free_port
from tests.fakes.meta_server import (
    PERMISSION_MISSING,
    RATE_LIMITED,
    SERVER_ERROR,
    FakeGraph,
    challenge_query,
    delivery,
    graph_error,
    ig_comment,
    ig_live_comment,
    meta_json,
    page_comment,
    page_post,
    sign,
    signed_delivery,
)

IG_ACCOUNT = "17841405822304914"
PAGE_ID = "44444444"
SECRETS = {
    "app_secret:default": "deployment-app-secret",
    "app_secret:1234567890": "tenant-app-secret",
    "verify_token:default": "deployment-verify-token",
    "verify_token:1234567890": "tenant-verify-token",
}
NOW = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
hook = MetaWebhook()


def verified(
    payload: dict[str, Any], secret: str = "deployment-app-secret"
) -> list[InboundComment]:
    """Sign, verify and parse ``payload`` as the endpoint does."""
    raw, headers = signed_delivery(payload, secret)
    hook.verify(raw, headers, SECRETS, NOW)
    return hook.parse(raw)


def refused(call: Any, *args: Any) -> WebhookError:
    with pytest.raises(WebhookError) as info:
        call(*args)
    return info.value


# -- verification GET ---------------------------------------------------------------


@pytest.mark.parametrize("token", ["deployment-verify-token", "tenant-verify-token"])
def test_challenge_answers_with_any_candidate_token(token: str) -> None:
    answer = hook.challenge(challenge_query(token, "1158201444"), SECRETS)
    assert answer.body == "1158201444"
    assert answer.media_type == "text/plain"


@pytest.mark.parametrize(
    "query",
    [
        challenge_query("wrong-token"),
        challenge_query("deployment-verify-token", mode="unsubscribe"),
        {"hub.mode": "subscribe", "hub.verify_token": "deployment-verify-token"},  # no challenge
        {"hub.mode": "subscribe", "hub.challenge": "1"},  # no token
        challenge_query("deployment-verify-token-and-more"),
    ],
)
def test_challenge_refused(query: dict[str, str]) -> None:
    error = refused(hook.challenge, query, SECRETS)
    assert error.code == "verification_failed"
    assert error.status == 403


def test_challenge_empty_configured_token_matches_nothing() -> None:
    secrets = {"verify_token:default": "", "app_secret:default": "x"}
    assert refused(hook.challenge, challenge_query(""), secrets).code == "verification_failed"
    assert refused(hook.challenge, challenge_query("x"), secrets).code == "verification_failed"


# -- signatures ---------------------------------------------------------------------


@pytest.mark.parametrize("secret", ["deployment-app-secret", "tenant-app-secret"])
def test_signature_with_each_candidate_secret(secret: str) -> None:
    comments = verified(delivery("instagram", IG_ACCOUNT, ig_comment()), secret)
    assert [c.comment_id for c in comments] == ["17865799348089039"]


def test_signature_header_name_is_case_insensitive() -> None:
    raw, headers = signed_delivery(
        delivery("instagram", IG_ACCOUNT, ig_comment()), "tenant-app-secret"
    )
    lower = {k.lower(): v for k, v in headers.items()}
    hook.verify(raw, lower, SECRETS, NOW)
    starlette = Headers(raw=[(k.lower().encode(), v.encode()) for k, v in headers.items()])
    hook.verify(raw, starlette, SECRETS, NOW)
    upper_hex = {"X-HUB-SIGNATURE-256": "sha256=" + headers["X-Hub-Signature-256"][7:].upper()}
    hook.verify(raw, upper_hex, SECRETS, NOW)


def test_signature_with_an_unknown_secret_is_refused() -> None:
    raw, headers = signed_delivery(delivery("instagram", IG_ACCOUNT, ig_comment()), "attacker")
    error = refused(hook.verify, raw, headers, SECRETS, NOW)
    assert error.code == "bad_signature"
    assert error.status == 401


def test_missing_signature_is_refused() -> None:
    raw, headers = signed_delivery(delivery("instagram", IG_ACCOUNT, ig_comment()), "x")
    del headers["X-Hub-Signature-256"]  # the SHA-1 header alone is not accepted
    assert refused(hook.verify, raw, headers, SECRETS, NOW).code == "bad_signature"


@pytest.mark.parametrize(
    "value",
    [
        "",
        "sha256=",
        "sha256=not-hex-at-all",
        "sha256=" + "a" * 63,
        "sha256=" + "a" * 65,
        "sha1=" + "a" * 40,
        "a" * 64,
        "sha256=" + "é" * 64,
    ],
)
def test_garbled_signature_header_is_refused(value: str) -> None:
    raw = meta_json(delivery("instagram", IG_ACCOUNT, ig_comment()))
    headers = {"X-Hub-Signature-256": value}
    assert refused(hook.verify, raw, headers, SECRETS, NOW).code == "bad_signature"


def test_body_altered_by_one_byte_after_signing_is_refused() -> None:
    raw, headers = signed_delivery(
        delivery("instagram", IG_ACCOUNT, ig_comment(text="hi")), "tenant-app-secret"
    )
    hook.verify(raw, headers, SECRETS, NOW)
    altered = raw.replace(b'"hi"', b'"ho"')
    assert altered != raw and len(altered) == len(raw)
    assert refused(hook.verify, altered, headers, SECRETS, NOW).code == "bad_signature"


def test_signature_is_over_the_raw_bytes_as_sent() -> None:
    payload = delivery("instagram", IG_ACCOUNT, ig_comment(text="café 🎉 http://x.test/a"))
    raw, headers = signed_delivery(payload, "deployment-app-secret")
    assert b"\\u00e9" in raw and b"\\/" in raw  # Meta's escaping is what is signed
    hook.verify(raw, headers, SECRETS, NOW)
    assert hook.parse(raw)[0].text == "café 🎉 http://x.test/a"
    # The same JSON re-serialized (other whitespace, or UTF-8) no longer matches.
    for reserialized in (
        json.dumps(payload).encode(),
        json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode(),
        raw + b"\n",
    ):
        assert json.loads(reserialized) == payload
        assert refused(hook.verify, reserialized, headers, SECRETS, NOW).code == "bad_signature"


def test_no_configured_or_an_empty_app_secret_refuses_everything() -> None:
    raw = meta_json(delivery("instagram", IG_ACCOUNT, ig_comment()))
    headers = {"X-Hub-Signature-256": sign(raw, "")}  # anyone can compute this one
    assert (
        refused(hook.verify, raw, headers, {"app_secret:default": ""}, NOW).code == "bad_signature"
    )
    assert refused(hook.verify, raw, headers, {}, NOW).code == "bad_signature"


def test_replayed_delivery_passes_verification_and_dedupes_by_comment_id() -> None:
    # Meta retries for ~36 h with the original entry time: age is no reason to refuse.
    sent = int((NOW - timedelta(hours=30)).timestamp())
    payload = delivery("page", PAGE_ID, page_comment("44444444_999"), sent=sent)
    raw, headers = signed_delivery(payload, "deployment-app-secret")
    hook.verify(raw, headers, SECRETS, NOW)
    hook.verify(raw, headers, SECRETS, NOW + timedelta(hours=6))  # the replay
    assert hook.delivery_id(raw, headers) is None  # Meta sends none: comments dedupe alone
    assert hook.parse(raw)[0].comment_id == "44444444_999"


def test_duplicate_comment_in_two_deliveries_keeps_its_id() -> None:
    first = verified(delivery("instagram", IG_ACCOUNT, ig_comment("178001")))
    second = verified(delivery("instagram", IG_ACCOUNT, ig_comment("178002"), ig_comment("178001")))
    assert first[0].comment_id == "178001"
    assert [c.comment_id for c in second] == ["178002", "178001"]
    assert second[1] == first[0]


# -- parsing ------------------------------------------------------------------------


def test_parse_instagram_comment() -> None:
    (c,) = verified(delivery("instagram", IG_ACCOUNT, ig_comment()))
    assert c.platform == "instagram"
    assert c.account_id == IG_ACCOUNT
    assert c.comment_id == "17865799348089039"
    assert c.text == "This is an example."
    assert (c.author_id, c.author_name) == ("232323232", "test")
    assert c.post_id == "123123123"
    assert c.parent_id is None
    assert c.kind == "comment"
    assert c.author_is_account is False
    assert c.raw["media"]["media_product_type"] == "FEED"


def test_parse_instagram_live_comment() -> None:
    (c,) = verified(delivery("instagram", IG_ACCOUNT, ig_live_comment("1790001", "hi live")))
    assert (c.kind, c.comment_id, c.text, c.post_id) == (
        "live_comment",
        "1790001",
        "hi live",
        "123123123",
    )


def test_parse_instagram_reply() -> None:
    (c,) = verified(delivery("instagram", IG_ACCOUNT, ig_comment("1790002", parent_id="1790001")))
    assert c.kind == "reply"
    assert c.parent_id == "1790001"


def test_own_instagram_comment_is_flagged() -> None:
    (c,) = verified(
        delivery("instagram", IG_ACCOUNT, ig_comment(from_id=IG_ACCOUNT, username="brand"))
    )
    assert c.author_is_account is True


def test_parse_page_comment_added() -> None:
    (c,) = verified(delivery("page", PAGE_ID, page_comment()))
    assert c.platform == "facebook"
    assert c.account_id == PAGE_ID
    assert c.comment_id == "44444444_444444444"
    assert c.text == "Nice post!"
    assert (c.author_id, c.author_name) == ("1234567890321", "Test Page Fan")
    assert c.post_id == "44444444_111111111"
    assert c.parent_id is None  # Meta's parent_id is the post itself: a top-level comment
    assert c.kind == "comment"
    assert c.created_at == datetime.fromtimestamp(1_720_000_000, UTC)
    assert c.author_is_account is False


def test_parse_page_comment_edited_and_reply() -> None:
    edited = page_comment("44444444_5", "fixed typo", verb="edited")
    reply = page_comment("44444444_6", "me too", parent_id="44444444_444444444")
    a, b = verified(delivery("page", PAGE_ID, edited, reply))
    assert (a.comment_id, a.text, a.kind) == ("44444444_5", "fixed typo", "comment")
    assert (b.kind, b.parent_id) == ("reply", "44444444_444444444")


@pytest.mark.parametrize("verb", ["remove", "hide", "unhide"])
def test_page_comment_removal_is_skipped(verb: str) -> None:
    assert verified(delivery("page", PAGE_ID, page_comment(verb=verb))) == []


def test_page_post_is_not_a_comment() -> None:
    assert verified(delivery("page", PAGE_ID, page_post(), page_comment("44444444_7"))) != []
    assert verified(delivery("page", PAGE_ID, page_post())) == []


def test_own_page_comment_is_flagged() -> None:
    (c,) = verified(delivery("page", PAGE_ID, page_comment(from_id=PAGE_ID, from_name="Test Page")))
    assert c.author_is_account is True


def test_many_entries_and_changes_in_order() -> None:
    payload = delivery("instagram", IG_ACCOUNT, ig_comment("1"), ig_live_comment("2"))
    payload["entry"].append(delivery("instagram", "999", ig_comment("3"))["entry"][0])
    comments = verified(payload)
    assert [(c.account_id, c.comment_id) for c in comments] == [
        (IG_ACCOUNT, "1"),
        (IG_ACCOUNT, "2"),
        ("999", "3"),
    ]


@pytest.mark.parametrize(
    "payload",
    [
        {"object": "user", "entry": [{"id": "1", "time": 1, "changed_fields": ["feed"]}]},
        {
            "object": "whatsapp_business_account",
            "entry": [{"id": "1", "changes": [{"field": "messages", "value": {"messages": []}}]}],
        },
        delivery(
            "instagram",
            IG_ACCOUNT,
            {"field": "mentions", "value": {"comment_id": "1", "media_id": "2"}},
        ),
        delivery("instagram", IG_ACCOUNT, {"field": "story_insights", "value": {"media_id": "1"}}),
        delivery("page", PAGE_ID, {"field": "ratings", "value": {"item": "rating", "verb": "add"}}),
        delivery("page", PAGE_ID, {"field": "feed", "value": {"item": "reaction", "verb": "add"}}),
        {"object": "page", "entry": [{"id": PAGE_ID, "time": 1, "messaging": [{"message": {}}]}]},
        delivery("instagram", IG_ACCOUNT, {"field": "comments", "value": {"text": "no id"}}),
        delivery("page", PAGE_ID, {"field": "feed", "value": {"item": "comment", "verb": "add"}}),
    ],
)
def test_other_events_are_skipped_not_errors(payload: dict[str, Any]) -> None:
    assert verified(payload) == []


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b"\xff\xfe{}",
        b"[]",
        b'"instagram"',
        b'{"entry": []}',
        b'{"object": 5, "entry": []}',
        b'{"object": "instagram", "entry": {}}',
        b'{"object": "instagram", "entry": ["x"]}',
        b'{"object": "instagram", "entry": [{"time": 1, "changes": []}]}',
        b'{"object": "instagram", "entry": [{"id": ["1"], "changes": []}]}',
        b'{"object": "instagram", "entry": [{"id": "1", "changes": {}}]}',
        b'{"object": "page", "entry": [{"id": "1", "changes": [7]}]}',
        b'{"object": "page", "entry": [{"id": "1", "changes": [{"value": {}}]}]}',
    ],
)
def test_malformed_delivery(raw: bytes) -> None:
    error = refused(hook.parse, raw)
    assert error.code == "malformed"
    assert error.status == 400


# -- replies ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def graph() -> Iterator[FakeGraph]:
    server = FakeGraph(tokens={"IG_TOKEN", "PAGE_TOKEN"}).start()
    yield server
    server.stop()


@pytest.fixture
async def client(graph: FakeGraph) -> AsyncIterator[MetaReplyClient]:
    graph.reset()
    meta = MetaReplyClient(graph.base_url, timeout=2.0)
    yield meta
    await meta.close()


IG = {"access_token": "IG_TOKEN"}
PAGE = {"access_token": "PAGE_TOKEN"}


def ig(comment_id: str = "17865799348089039", **kw: Any) -> InboundComment:
    return InboundComment("instagram", IG_ACCOUNT, comment_id, "hi", "232323232", **kw)


def fb(comment_id: str = "44444444_444444444", **kw: Any) -> InboundComment:
    return InboundComment("facebook", PAGE_ID, comment_id, "hi", "1234567890321", **kw)


async def failed(
    client: MetaReplyClient, comment: InboundComment, creds: dict[str, str] = IG
) -> ReplyError:
    with pytest.raises(ReplyError) as info:
        await client.reply(creds, comment, "thanks!", idempotency_key="k1")
    return info.value


async def test_instagram_reply(client: MetaReplyClient, graph: FakeGraph) -> None:
    result = await client.reply(IG, ig(), "Thank you! 💛", idempotency_key="k1")
    (call,) = graph.calls
    assert call["path"] == "/17865799348089039/replies"
    assert call["message"] == "Thank you! 💛"
    assert call["token"] == "IG_TOKEN"
    assert result.reply_id.isdigit()


async def test_instagram_reply_to_a_reply_goes_to_the_top_level_comment(
    client: MetaReplyClient, graph: FakeGraph
) -> None:
    await client.reply(
        IG, ig("1790002", parent_id="1790001", kind="reply"), "ok", idempotency_key="k"
    )
    assert graph.calls[0]["path"] == "/1790001/replies"


async def test_instagram_live_comment_gets_a_private_reply(
    client: MetaReplyClient, graph: FakeGraph
) -> None:
    result = await client.reply(
        IG, ig("1790009", kind="live_comment"), "hello!", idempotency_key="k"
    )
    (call,) = graph.calls
    assert (call["path"], call["comment_id"], call["message"]) == (
        "/me/messages",
        "1790009",
        "hello!",
    )
    assert result.reply_id.startswith("aWdf")


async def test_facebook_reply(client: MetaReplyClient, graph: FakeGraph) -> None:
    result = await client.reply(PAGE, fb(), "Glad you like it", idempotency_key="k1")
    (call,) = graph.calls
    assert call["path"] == "/44444444_444444444/comments"
    assert call["message"] == "Glad you like it"
    assert call["token"] == "PAGE_TOKEN"
    assert call["content_type"].startswith("application/x-www-form-urlencoded")
    assert result.reply_id.startswith("44444444_")


async def test_facebook_reply_to_a_reply(client: MetaReplyClient, graph: FakeGraph) -> None:
    await client.reply(
        PAGE, fb("44444444_6", parent_id="44444444_5", kind="reply"), "x", idempotency_key="k"
    )
    assert graph.calls[0]["path"] == "/44444444_5/comments"


async def test_429_is_rate_limited_with_retry_after(
    client: MetaReplyClient, graph: FakeGraph
) -> None:
    graph.fail_next(429, RATE_LIMITED, headers={"Retry-After": "120"})
    error = await failed(client, ig())
    assert (error.code, error.retryable, error.retry_after) == ("rate_limited", True, 120.0)


async def test_graph_rate_limit_code_uses_business_usage_header(
    client: MetaReplyClient, graph: FakeGraph
) -> None:
    usage = {
        "44444444": [{"type": "pages", "call_count": 100, "estimated_time_to_regain_access": 5}]
    }
    body = graph_error(80001, "There have been too many calls to this Page account.")
    graph.fail_next(400, body, headers={"X-Business-Use-Case-Usage": json.dumps(usage)})
    error = await failed(client, fb(), PAGE)
    assert (error.code, error.retryable, error.retry_after) == ("rate_limited", True, 300.0)


async def test_500_is_unavailable_and_retryable(client: MetaReplyClient, graph: FakeGraph) -> None:
    graph.fail_next(500, SERVER_ERROR)
    error = await failed(client, ig())
    assert (error.code, error.retryable) == ("unavailable", True)
    graph.fail_next(502, "<html>Bad Gateway</html>")
    assert (await failed(client, ig())).code == "unavailable"


async def test_outage_then_recovery_posts_once_per_attempt(
    client: MetaReplyClient, graph: FakeGraph
) -> None:
    # No hidden retries inside the client: the caller's idempotency record stays exact.
    graph.fail_next(503, SERVER_ERROR)
    assert (await failed(client, fb(), PAGE)).retryable
    assert len(graph.calls) == 1
    result = await client.reply(PAGE, fb(), "thanks!", idempotency_key="k1")
    assert len(graph.calls) == 2 and result.reply_id


async def test_bad_token_is_unauthorized(client: MetaReplyClient, graph: FakeGraph) -> None:
    error = await failed(client, ig(), {"access_token": "revoked"})
    assert (error.code, error.retryable) == ("unauthorized", False)
    assert graph.calls[0]["token"] == "revoked"


async def test_expired_token_190(client: MetaReplyClient, graph: FakeGraph) -> None:
    graph.fail_next(400, graph_error(190, "Error validating access token", subcode=463))
    assert (await failed(client, ig())).code == "unauthorized"


async def test_missing_token_is_unauthorized_without_a_call(
    client: MetaReplyClient, graph: FakeGraph
) -> None:
    assert (await failed(client, ig(), {})).code == "unauthorized"
    assert graph.calls == []


async def test_permission_error_is_forbidden(client: MetaReplyClient, graph: FakeGraph) -> None:
    graph.fail_next(403, PERMISSION_MISSING)
    error = await failed(client, ig())
    assert (error.code, error.retryable) == ("forbidden", False)


async def test_deleted_comment_is_not_found(client: MetaReplyClient, graph: FakeGraph) -> None:
    graph.deleted.add("44444444_444444444")
    error = await failed(client, fb(), PAGE)
    assert (error.code, error.retryable) == ("not_found", False)
    graph.fail_next(404, {"error": {"message": "Not found", "code": 803}})
    assert (await failed(client, ig())).code == "not_found"


async def test_other_400_is_invalid(client: MetaReplyClient, graph: FakeGraph) -> None:
    graph.fail_next(400, graph_error(100, "(#100) Param message must be at most 2200 characters"))
    error = await failed(client, ig())
    assert (error.code, error.retryable) == ("invalid", False)


async def test_connection_refused_is_unavailable() -> None:
    meta = MetaReplyClient(f"http://127.0.0.1:{free_port()}/v21.0", timeout=2.0)
    try:
        error = await failed(meta, ig())
    finally:
        await meta.close()
    assert (error.code, error.retryable) == ("unavailable", True)


async def test_timeout_is_unavailable_and_says_the_reply_may_exist(graph: FakeGraph) -> None:
    graph.reset()
    graph.delay_next(1.5)
    meta = MetaReplyClient(graph.base_url, timeout=0.2)
    try:
        error = await failed(meta, ig())
    finally:
        await meta.close()
    assert (error.code, error.retryable) == ("unavailable", True)
    assert "may exist" in error.message


@pytest.mark.parametrize(
    "comment",
    [
        ig("../../me/feed"),
        ig("1?x=1"),
        InboundComment("x", "1", "2", "t", "3"),
    ],
)
async def test_refused_before_any_call(
    client: MetaReplyClient, graph: FakeGraph, comment: InboundComment
) -> None:
    assert (await failed(client, comment)).code == "invalid"
    assert graph.calls == []


async def test_empty_text_is_invalid(client: MetaReplyClient, graph: FakeGraph) -> None:
    with pytest.raises(ReplyError) as info:
        await client.reply(IG, ig(), "  ", idempotency_key="k")
    assert info.value.code == "invalid"
    assert graph.calls == []


async def test_from_settings() -> None:
    settings = SocialSettings(
        meta_graph_url="http://graph.test/v99.0/", social_request_timeout_seconds=7
    )
    meta = MetaReplyClient.from_settings(settings)
    try:
        assert meta.graph_url == "http://graph.test/v99.0"
        assert meta.timeout == 7
    finally:
        await meta.close()
        await meta.close()  # idempotent: the same client is registered for both platforms


@pytest.mark.parametrize(
    ("status", "body", "code", "retryable"),
    [
        (400, graph_error(17, "User request limit reached"), "rate_limited", True),
        (400, graph_error(32, "Page request limit reached"), "rate_limited", True),
        (400, graph_error(613, "Calls within one hour exceeded"), "rate_limited", True),
        (400, graph_error(102, "Session key invalid"), "unauthorized", False),
        (401, None, "unauthorized", False),
        (400, graph_error(200, "Permissions error"), "forbidden", False),
        (400, graph_error(299, "Permission"), "forbidden", False),
        (400, graph_error(100, "Object does not exist"), "not_found", False),
        (400, graph_error(100, "Invalid parameter"), "invalid", False),
        (400, graph_error(1, "An unknown error occurred"), "unavailable", True),
        (400, graph_error(9999, "Odd", is_transient=True), "unavailable", True),
        (503, None, "unavailable", True),
        (418, "teapot", "invalid", False),
    ],
)
def test_graph_error_mapping(status: int, body: Any, code: str, retryable: bool) -> None:
    error = map_graph_error(status, body, httpx.Headers())
    assert (error.code, error.retryable) == (code, retryable)
