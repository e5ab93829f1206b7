"""X: the Account Activity webhook (CRC, signature, age, parsing) and the reply client.

Deliveries are built from X's documented payload shapes and signed like X
signs them (tests/fakes/x_server.py); replies go to a fake ``POST /2/tweets``
on loopback speaking X API v2's format.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from integrations.social.base import InboundComment, ReplyError, WebhookError
from integrations.social.x import XReplyClient, XWebhook, map_x_error
from tests.fakes.loopback import free_port
from tests.fakes.x_server import (
    ACCOUNT,
    ACCOUNT_ID,
    FAN,
    FakeX,
    direct_message_delivery,
    favorite_delivery,
    follow_delivery,
    mention_of_account,
    own_reply,
    reply_to_account,
    retweet_of_account,
    sample_tweet,
    signed_delivery,
    tweet_delivery,
)

SECRET = "consumer-secret-of-the-deployment-app"
TENANT_SECRET = "consumer-secret-of-a-tenant-app"
SECRETS = {"consumer_secret:default": SECRET}
TOKEN = "user-context-oauth2-token"
NOW = 1_700_000_000.0


@pytest.fixture
def hook() -> XWebhook:
    return XWebhook()


def _now() -> datetime:
    return datetime.now(UTC)


def _refused(call: object, code: str) -> WebhookError:
    assert callable(call)
    with pytest.raises(WebhookError) as info:
        call()
    assert info.value.code == code, info.value.message
    return info.value


# -- CRC -----------------------------------------------------------------------------


def test_crc_answer_matches_x_documented_algorithm(hook: XWebhook) -> None:
    token = "9b4507b3-9040-4669-9ba0-9b2f4f9a4d3e"
    answer = hook.challenge({"crc_token": token}, SECRETS)
    # X: response_token = "sha256=" + base64(HMAC-SHA256(key=consumer secret, msg=crc_token))
    digest = hmac.new(SECRET.encode(), msg=token.encode(), digestmod=hashlib.sha256).digest()
    assert json.loads(answer.body) == {
        "response_token": "sha256=" + base64.b64encode(digest).decode()
    }
    assert answer.media_type == "application/json"


def test_crc_uses_the_first_candidate_and_ignores_other_secret_names(hook: XWebhook) -> None:
    secrets = {"verify_token:x": "other", "consumer_secret:t1": TENANT_SECRET, **SECRETS}
    body = json.loads(hook.challenge({"crc_token": "abc"}, secrets).body)
    tenant = hmac.new(TENANT_SECRET.encode(), b"abc", hashlib.sha256).digest()
    assert body["response_token"] == "sha256=" + base64.b64encode(tenant).decode()


@pytest.mark.parametrize("query", [{}, {"crc_token": ""}, {"nonce": "x"}])
def test_crc_without_token_fails(hook: XWebhook, query: dict[str, str]) -> None:
    error = _refused(lambda: hook.challenge(query, SECRETS), "verification_failed")
    assert error.status == 403


def test_crc_without_consumer_secret_fails(hook: XWebhook) -> None:
    _refused(
        lambda: hook.challenge({"crc_token": "abc"}, {"consumer_secret:x": ""}),
        "verification_failed",
    )


# -- signature -----------------------------------------------------------------------


def test_signed_delivery_passes(hook: XWebhook) -> None:
    raw, headers = signed_delivery(tweet_delivery([reply_to_account("hi")]), SECRET)
    hook.verify(raw, headers, SECRETS, _now())  # no exception
    # Header names are case-insensitive, also in a plain dict.
    upper = {k.title(): v for k, v in headers.items()}
    hook.verify(raw, upper, SECRETS, _now())


def test_any_candidate_secret_passes(hook: XWebhook) -> None:
    raw, headers = signed_delivery(tweet_delivery([reply_to_account("hi")]), TENANT_SECRET)
    hook.verify(raw, headers, {**SECRETS, "consumer_secret:t1": TENANT_SECRET}, _now())
    _refused(lambda: hook.verify(raw, headers, SECRETS, _now()), "bad_signature")


def test_wrong_secret_is_bad_signature(hook: XWebhook) -> None:
    raw, headers = signed_delivery(tweet_delivery([reply_to_account("hi")]), "attacker")
    error = _refused(lambda: hook.verify(raw, headers, SECRETS, _now()), "bad_signature")
    assert error.status == 401


def test_missing_signature_is_bad_signature(hook: XWebhook) -> None:
    raw, _headers = signed_delivery(tweet_delivery([reply_to_account("hi")]), SECRET)
    _refused(
        lambda: hook.verify(raw, {"content-type": "application/json"}, SECRETS, _now()),
        "bad_signature",
    )


@pytest.mark.parametrize(
    "value",
    [
        "sha256=",
        "sha256=not base64 at all!",
        "sha1=" + "A" * 43 + "=",
        "sha256=" + hashlib.sha256(b"x").hexdigest(),  # hex, as Meta signs, not base64
        "sha256=" + base64.b64encode(b"short").decode(),
    ],
)
def test_garbled_signature_is_bad_signature(hook: XWebhook, value: str) -> None:
    raw, headers = signed_delivery(tweet_delivery([reply_to_account("hi")]), SECRET)
    headers["x-twitter-webhooks-signature"] = value
    _refused(lambda: hook.verify(raw, headers, SECRETS, _now()), "bad_signature")


def test_altered_body_is_bad_signature(hook: XWebhook) -> None:
    raw, headers = signed_delivery(tweet_delivery([reply_to_account("nice product")]), SECRET)
    altered = raw.replace(b"nice product", b"send me money")
    assert altered != raw
    _refused(lambda: hook.verify(altered, headers, SECRETS, _now()), "bad_signature")


def test_a_secret_under_another_name_or_empty_does_not_verify(hook: XWebhook) -> None:
    raw, headers = signed_delivery(tweet_delivery([reply_to_account("hi")]), SECRET)
    _refused(
        lambda: hook.verify(raw, headers, {"app_secret:meta": SECRET}, _now()), "bad_signature"
    )
    raw, headers = signed_delivery(tweet_delivery([reply_to_account("hi")]), "")
    _refused(lambda: hook.verify(raw, headers, {"consumer_secret:x": ""}, _now()), "bad_signature")


# -- replays and duplicates ----------------------------------------------------------


def test_replayed_delivery_older_than_dedupe_window_is_stale(hook: XWebhook) -> None:
    old = _now() - timedelta(days=4)
    raw, headers = signed_delivery(tweet_delivery([reply_to_account("hi", when=old)]), SECRET)
    error = _refused(lambda: hook.verify(raw, headers, SECRETS, _now()), "stale")
    assert error.status == 401
    # The same bytes were fine when they were new.
    hook.verify(raw, headers, SECRETS, old + timedelta(seconds=3))


def test_x_retry_minutes_later_is_not_stale(hook: XWebhook) -> None:
    # X retries for about five minutes, Activity Replay up to days: both pass.
    tweet = reply_to_account("hi", when=_now() - timedelta(minutes=9))
    raw, headers = signed_delivery(tweet_delivery([tweet]), SECRET)
    hook.verify(raw, headers, SECRETS, _now())
    replayed = reply_to_account("hi", when=_now() - timedelta(days=2))
    raw, headers = signed_delivery(tweet_delivery([replayed]), SECRET)
    hook.verify(raw, headers, SECRETS, _now())


def test_age_check_can_be_turned_off_and_follows_settings() -> None:
    old = _now() - timedelta(days=30)
    raw, headers = signed_delivery(tweet_delivery([reply_to_account("hi", when=old)]), SECRET)
    XWebhook(max_age_seconds=None).verify(raw, headers, SECRETS, _now())
    short = XWebhook(max_skew_seconds=0, max_age_seconds=60)
    fresh = tweet_delivery([reply_to_account("hi", when=_now() - timedelta(seconds=120))])
    raw, headers = signed_delivery(fresh, SECRET)
    _refused(lambda: short.verify(raw, headers, SECRETS, _now()), "stale")


def test_duplicate_delivery_yields_the_same_comment_ids(hook: XWebhook) -> None:
    # X sends no delivery id: a duplicate is caught by the pipeline on tweet ids.
    raw, headers = signed_delivery(tweet_delivery([reply_to_account("hi")]), SECRET)
    first = hook.parse(raw)
    again = hook.parse(raw)
    assert hook.delivery_id(raw, headers) is None
    assert [c.comment_id for c in first] == [c.comment_id for c in again]
    assert len(first) == 1


# -- parsing -------------------------------------------------------------------------


def _parse_one(hook: XWebhook, tweet: dict[str, Any]) -> InboundComment:
    comments = hook.parse(json.dumps(tweet_delivery([tweet])).encode())
    assert len(comments) == 1
    return comments[0]


def test_parse_reply(hook: XWebhook) -> None:
    when = datetime(2025, 3, 4, 12, 30, 5, 250000, tzinfo=UTC)
    tweet = reply_to_account("love the new episode", in_reply_to_status_id="1111", when=when)
    comment = _parse_one(hook, tweet)
    assert comment == InboundComment(
        platform="x",
        account_id=ACCOUNT_ID,
        comment_id=tweet["id_str"],
        text="@XDevelopers love the new episode",
        author_id=FAN["id_str"],
        author_name=FAN["screen_name"],
        author_is_account=False,
        post_id="1111",
        parent_id="1111",
        created_at=when,
        kind="reply",
        raw=tweet,
    )


def test_parse_mention(hook: XWebhook) -> None:
    comment = _parse_one(hook, mention_of_account("what do you think"))
    assert comment.kind == "mention"
    assert comment.text == "what do you think @XDevelopers"
    assert (comment.parent_id, comment.post_id, comment.author_is_account) == (None, None, False)


def test_parse_extended_tweet_full_text_and_entities(hook: XWebhook) -> None:
    # Over 140 characters, the mention at the end is only in extended_tweet.
    long = "a long and thoughtful question about the show " * 4 + "@XDevelopers"
    tweet = sample_tweet(long, mentions=[ACCOUNT])
    assert tweet["truncated"] is True
    assert tweet["entities"]["user_mentions"] == []
    comment = _parse_one(hook, tweet)
    assert comment.text == long
    assert comment.kind == "mention"


def test_parse_unescapes_html_entities_and_falls_back_to_created_at(hook: XWebhook) -> None:
    tweet = reply_to_account("fish &amp; chips &lt;3")
    del tweet["timestamp_ms"]
    tweet["created_at"] = "Wed Oct 10 20:19:24 +0000 2018"
    comment = _parse_one(hook, tweet)
    assert comment.text.endswith("fish & chips <3")
    assert comment.created_at == datetime(2018, 10, 10, 20, 19, 24, tzinfo=UTC)


def test_parse_conversation_root_is_the_post(hook: XWebhook) -> None:
    tweet = reply_to_account("deep in a thread", in_reply_to_status_id="2222")
    tweet["conversation_id_str"] = "1000"
    comment = _parse_one(hook, tweet)
    assert (comment.post_id, comment.parent_id) == ("1000", "2222")


def test_retweet_is_skipped(hook: XWebhook) -> None:
    reply = reply_to_account("hi")
    comments = hook.parse(json.dumps(tweet_delivery([retweet_of_account(), reply])).encode())
    assert [c.comment_id for c in comments] == [reply["id_str"]]


def test_own_tweet_is_returned_flagged(hook: XWebhook) -> None:
    comment = _parse_one(hook, own_reply("thanks!", in_reply_to_status_id="3333"))
    assert comment.author_is_account is True
    assert comment.author_id == ACCOUNT_ID
    assert (comment.kind, comment.parent_id) == ("reply", "3333")


def test_tweets_not_addressed_to_the_account_are_skipped(hook: XWebhook) -> None:
    other = sample_tweet("just a quote tweet")
    other["is_quote_status"] = True
    other["quoted_status"] = sample_tweet("Big news", user=ACCOUNT)
    assert hook.parse(json.dumps(tweet_delivery([other])).encode()) == []


def test_mention_by_a_blocked_user_is_skipped(hook: XWebhook) -> None:
    raw = json.dumps(tweet_delivery([mention_of_account("hey")], user_has_blocked="true")).encode()
    assert hook.parse(raw) == []
    raw = json.dumps(tweet_delivery([mention_of_account("hey")], is_blocked_by=True)).encode()
    assert hook.parse(raw) == []
    raw = json.dumps(tweet_delivery([mention_of_account("hey")], user_has_blocked="false")).encode()
    assert len(hook.parse(raw)) == 1


@pytest.mark.parametrize(
    "payload",
    [
        favorite_delivery(),
        follow_delivery(),
        direct_message_delivery("a private question"),
        {
            "replay_job_status": {
                "webhook_id": "1",
                "job_state": "Complete",
                "job_state_description": "done",
            }
        },
    ],
    ids=["favorite", "follow", "dm", "replay-status"],
)
def test_other_events_are_skipped(hook: XWebhook, payload: dict[str, object]) -> None:
    raw, headers = signed_delivery(payload, SECRET)
    hook.verify(raw, headers, SECRETS, _now())  # signed and fresh: accepted, nothing in it
    assert hook.parse(raw) == []


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"",
        b"[1, 2]",
        json.dumps({"tweet_create_events": [reply_to_account("no for_user_id")]}).encode(),
        json.dumps({"for_user_id": ACCOUNT_ID, "tweet_create_events": {"id_str": "1"}}).encode(),
        json.dumps({"for_user_id": ACCOUNT_ID, "tweet_create_events": ["x"]}).encode(),
        json.dumps(
            {"for_user_id": ACCOUNT_ID, "tweet_create_events": [{"text": "no ids"}]}
        ).encode(),
    ],
    ids=["text", "empty", "array", "no-user", "events-object", "event-string", "tweet-no-id"],
)
def test_malformed_delivery(hook: XWebhook, raw: bytes) -> None:
    error = _refused(lambda: hook.parse(raw), "malformed")
    assert error.status == 400


def test_malformed_but_signed_body_passes_verify_then_fails_parse(hook: XWebhook) -> None:
    raw, headers = signed_delivery(b"{not json", SECRET)
    hook.verify(raw, headers, SECRETS, _now())
    _refused(lambda: hook.parse(raw), "malformed")


# -- replies -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fake_x() -> Iterator[FakeX]:
    server = FakeX(tokens={TOKEN}).start()
    yield server
    server.stop()


@pytest.fixture
async def client(fake_x: FakeX) -> AsyncIterator[XReplyClient]:
    fake_x.reset()
    replier = XReplyClient(fake_x.base_url, timeout=2.0, clock=lambda: NOW)
    yield replier
    await replier.close()


def _comment(comment_id: str = "1850000000000000123") -> InboundComment:
    return InboundComment(
        platform="x",
        account_id=ACCOUNT_ID,
        comment_id=comment_id,
        text="@XDevelopers hi",
        author_id=FAN["id_str"],
        kind="reply",
    )


async def _reply_error(
    client: XReplyClient, text: str = "Thanks!", token: str = TOKEN
) -> ReplyError:
    with pytest.raises(ReplyError) as info:
        await client.reply({"access_token": token}, _comment(), text, idempotency_key="k1")
    return info.value


async def test_reply_request_shape_and_token(client: XReplyClient, fake_x: FakeX) -> None:
    result = await client.reply(
        {"access_token": TOKEN}, _comment(), "Thanks for watching!", idempotency_key="k1"
    )
    assert len(fake_x.calls) == 1
    call = fake_x.calls[0]
    assert call.token == TOKEN
    assert call.body == {
        "text": "Thanks for watching!",
        "reply": {"in_reply_to_tweet_id": "1850000000000000123"},
    }
    assert (call.text, call.in_reply_to, call.status) == (
        "Thanks for watching!",
        "1850000000000000123",
        201,
    )
    assert fake_x.posted[result.reply_id]["text"] == "Thanks for watching!"


async def test_rate_limited_with_retry_after_from_reset(
    client: XReplyClient, fake_x: FakeX
) -> None:
    fake_x.rate_limit_next(reset=int(NOW) + 420)
    error = await _reply_error(client)
    assert (error.code, error.retryable, error.retry_after) == ("rate_limited", True, 420.0)


async def test_rate_limited_by_the_24_hour_user_cap(client: XReplyClient, fake_x: FakeX) -> None:
    headers = {
        "x-rate-limit-remaining": "150",
        "x-rate-limit-reset": str(int(NOW) + 60),
        "x-user-limit-24hour-limit": "100",
        "x-user-limit-24hour-remaining": "0",
        "x-user-limit-24hour-reset": str(int(NOW) + 7200),
    }
    fake_x.fail_next(429, headers=headers)
    error = await _reply_error(client)
    assert (error.code, error.retry_after) == ("rate_limited", 7200.0)


async def test_outage_is_retryable_and_the_retry_posts(client: XReplyClient, fake_x: FakeX) -> None:
    fake_x.fail_next(500)
    error = await _reply_error(client)
    assert (error.code, error.retryable) == ("unavailable", True)
    assert not fake_x.posted
    result = await client.reply(
        {"access_token": TOKEN}, _comment(), "Thanks!", idempotency_key="k1"
    )
    assert list(fake_x.posted) == [result.reply_id]


async def test_unauthorized(client: XReplyClient, fake_x: FakeX) -> None:
    error = await _reply_error(client, token="revoked-token")
    assert (error.code, error.retryable) == ("unauthorized", False)
    assert fake_x.calls[0].status == 401


async def test_missing_token_is_unauthorized_without_a_call(
    client: XReplyClient, fake_x: FakeX
) -> None:
    with pytest.raises(ReplyError) as info:
        await client.reply({}, _comment(), "hi", idempotency_key="k1")
    assert info.value.code == "unauthorized"
    assert fake_x.calls == []


async def test_forbidden(client: XReplyClient, fake_x: FakeX) -> None:
    fake_x.fail_next(
        403, "Reply to this conversation is not allowed because you have not been mentioned."
    )
    error = await _reply_error(client)
    assert (error.code, error.retryable) == ("forbidden", False)


async def test_duplicate_after_lost_answer_is_not_posted_twice(
    client: XReplyClient, fake_x: FakeX
) -> None:
    quick = XReplyClient(fake_x.base_url, timeout=0.2)
    try:
        fake_x.stall_next(0.6)  # X posts the tweet, but we stop waiting first
        with pytest.raises(ReplyError) as info:
            await quick.reply(
                {"access_token": TOKEN}, _comment(), "Same words", idempotency_key="k1"
            )
        assert (info.value.code, info.value.retryable) == ("unavailable", True)
        for _ in range(100):
            if fake_x.posted:
                break
            await asyncio.sleep(0.02)
        assert len(fake_x.posted) == 1
        error = await _reply_error(quick, text="Same words")  # the caller's retry
    finally:
        await quick.close()
    assert (error.code, error.retryable) == ("invalid", False)
    assert "duplicate content" in error.message
    assert len(fake_x.posted) == 1


async def test_reply_to_deleted_tweet_is_not_found(client: XReplyClient, fake_x: FakeX) -> None:
    fake_x.deleted.add(_comment().comment_id)
    error = await _reply_error(client)
    assert (error.code, error.retryable) == ("not_found", False)


@pytest.mark.parametrize(
    ("status", "code"), [(400, "invalid"), (404, "not_found"), (503, "unavailable")]
)
async def test_other_statuses(client: XReplyClient, fake_x: FakeX, status: int, code: str) -> None:
    fake_x.fail_next(status)
    error = await _reply_error(client)
    assert error.code == code
    assert error.retryable is (code == "unavailable")


async def test_connection_refused_is_unavailable() -> None:
    replier = XReplyClient(f"http://127.0.0.1:{free_port()}", timeout=2.0)
    try:
        error = await _reply_error(replier)
    finally:
        await replier.close()
    assert (error.code, error.retryable) == ("unavailable", True)


async def test_refuses_foreign_comments_and_odd_ids(client: XReplyClient, fake_x: FakeX) -> None:
    youtube = InboundComment(
        platform="youtube", account_id="c", comment_id="Ugx", text="", author_id="a"
    )
    with pytest.raises(ReplyError) as info:
        await client.reply({"access_token": TOKEN}, youtube, "hi", idempotency_key="k")
    assert info.value.code == "invalid"
    with pytest.raises(ReplyError) as info:
        await client.reply(
            {"access_token": TOKEN}, _comment("../2/users"), "hi", idempotency_key="k"
        )
    assert info.value.code == "invalid"
    assert fake_x.calls == []


def test_error_messages_keep_x_details() -> None:
    validation = {
        "errors": [{"message": "$.reply.in_reply_to_tweet_id: string expected"}],
        "title": "Invalid Request",
        "detail": "One or more parameters to your request was invalid.",
        "type": "https://api.twitter.com/2/problems/invalid-request",
    }
    error = map_x_error(400, validation, httpx.Headers(), NOW)
    assert error.code == "invalid"
    assert "in_reply_to_tweet_id" in error.message
    too_long = {"title": "Forbidden", "status": 403, "detail": "Your Tweet text is too long."}
    assert map_x_error(403, too_long, httpx.Headers(), NOW).code == "invalid"
    # A 429 without any reset header: retry later, at the caller's own pace.
    assert map_x_error(429, None, httpx.Headers(), NOW).retry_after is None
