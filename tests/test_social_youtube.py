"""YouTube comments: the poller and the reply client against a fake Data API on loopback."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from integrations.social.base import InboundComment, ReplyError
from integrations.social.settings import SocialSettings
from integrations.social.youtube import (
    YouTubePoller,
    YouTubeReplyClient,
    seconds_until_quota_reset,
)
from tests.fakes.loopback import free_port
from tests.fakes.youtube_server import API_KEY, OWNER, OWNER_TOKEN, YouTubeServer

CREDS = {"access_token": OWNER_TOKEN}
T0 = datetime(2026, 5, 4, 12, 0, 0, tzinfo=UTC)
CHANNEL = f"channel:{OWNER}"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.fixture(scope="module")
def server() -> Iterator[YouTubeServer]:
    fake = YouTubeServer().start()
    yield fake
    fake.stop()


@pytest.fixture
def yt(server: YouTubeServer) -> YouTubeServer:
    server.reset()
    server.add_video("vidA")
    return server


@pytest.fixture
async def poller(yt: YouTubeServer) -> AsyncIterator[Callable[..., YouTubePoller]]:
    made: list[YouTubePoller] = []

    def make(**options: Any) -> YouTubePoller:
        options.setdefault("token_url", f"{yt.url}/token")
        made.append(YouTubePoller(options.pop("api_url", yt.url), **options))
        return made[-1]

    yield make
    for p in made:
        await p.close()


@pytest.fixture
async def replier(yt: YouTubeServer) -> AsyncIterator[Callable[..., YouTubeReplyClient]]:
    made: list[YouTubeReplyClient] = []

    def make(**options: Any) -> YouTubeReplyClient:
        options.setdefault("token_url", f"{yt.url}/token")
        made.append(YouTubeReplyClient(options.pop("api_url", yt.url), **options))
        return made[-1]

    yield make
    for c in made:
        await c.close()


async def connected(p: YouTubePoller, creds: dict[str, Any] = CREDS) -> dict[str, Any]:
    """The first poll of an account: its cursor (and it must return nothing)."""
    first = await p.poll(creds, OWNER, {})
    assert first.comments == [] and first.retry_after is None
    return first.cursor


# -- polling ---------------------------------------------------------------------------


async def test_first_poll_takes_only_a_cursor(yt: YouTubeServer, poller: Any) -> None:
    for s in (0, 10, 20):
        yt.add_comment("vidA", f"old {s}", at(s))
    p = poller()
    result = await p.poll(CREDS, OWNER, {})
    assert result.comments == [] and result.quota_used == 1 and result.retry_after is None
    (request,) = yt.hits("GET", "/commentThreads")
    assert request["params"] == {
        "part": "snippet,replies",
        "order": "time",
        "maxResults": "100",
        "textFormat": "plainText",
        "allThreadsRelatedToChannelId": OWNER,
    }
    assert request["headers"]["authorization"] == f"Bearer {OWNER_TOKEN}"
    assert result.cursor["sources"][CHANNEL]["since"] == at(20).isoformat()
    json.dumps(result.cursor)  # stored as JSON by the pipeline

    again = await p.poll(CREDS, OWNER, result.cursor)
    assert again.comments == [] and again.quota_used == 1


async def test_later_polls_return_only_new_comments_with_their_fields(
    yt: YouTubeServer, poller: Any
) -> None:
    yt.add_comment("vidA", "before connecting", at(0))
    p = poller()
    cursor = await connected(p)
    fan = yt.add_comment("vidA", "I <3 this & that", at(30), author="UCfan", name="Ana")
    own = yt.add_comment("vidA", "pinned by us", at(40), author=OWNER, name="Owner")
    result = await p.poll(CREDS, OWNER, cursor)
    assert [c.comment_id for c in result.comments] == [fan, own]  # oldest first
    first = result.comments[0]
    assert first == InboundComment(
        platform="youtube",
        account_id=OWNER,
        comment_id=fan,
        text="I <3 this & that",  # textDisplay as plain text: not HTML-escaped
        author_id="UCfan",
        author_name="Ana",
        author_is_account=False,
        post_id="vidA",
        parent_id=None,
        created_at=at(30),
        kind="comment",
        raw=first.raw,
    )
    assert first.raw["id"] == fan and "textOriginal" not in first.raw["snippet"]
    assert result.comments[1].author_is_account is True
    assert result.cursor["sources"][CHANNEL]["since"] == at(40).isoformat()
    assert (await p.poll(CREDS, OWNER, result.cursor)).comments == []


@pytest.mark.parametrize("lookback", [0.0, 60.0])
async def test_same_second_comments_are_neither_missed_nor_repeated(
    yt: YouTubeServer, poller: Any, lookback: float
) -> None:
    yt.add_comment("vidA", "a", at(100))
    p = poller(lookback_seconds=lookback)
    cursor = await connected(p)
    b = yt.add_comment("vidA", "b", at(100))  # published in the second the cursor ends on
    c = yt.add_comment("vidA", "c", at(100))
    second = await p.poll(CREDS, OWNER, cursor)
    assert sorted(x.comment_id for x in second.comments) == sorted([b, c])
    d = yt.add_comment("vidA", "d", at(100))
    third = await p.poll(CREDS, OWNER, second.cursor)
    assert [x.comment_id for x in third.comments] == [d]
    assert (await p.poll(CREDS, OWNER, third.cursor)).comments == []


async def test_same_second_comments_split_across_pages(yt: YouTubeServer, poller: Any) -> None:
    yt.add_comment("vidA", "old", at(0))
    p = poller(page_size=2, lookback_seconds=0)
    cursor = await connected(p)
    ids = [yt.add_comment("vidA", f"n{i}", at(50)) for i in range(5)]
    result = await p.poll(CREDS, OWNER, cursor)
    assert sorted(c.comment_id for c in result.comments) == sorted(ids)
    assert (await p.poll(CREDS, OWNER, result.cursor)).comments == []


async def test_late_comment_inside_the_lookback_window_is_returned(
    yt: YouTubeServer, poller: Any
) -> None:
    yt.add_comment("vidA", "seen", at(100))
    p, strict = poller(lookback_seconds=60), poller(lookback_seconds=0)
    cursor = await connected(p)
    late = yt.add_comment("vidA", "indexed late", at(80))  # visible after the 100 s one
    assert [c.comment_id for c in (await p.poll(CREDS, OWNER, cursor)).comments] == [late]
    assert (await strict.poll(CREDS, OWNER, cursor)).comments == []


async def test_pages_until_older_threads_and_counts_quota(yt: YouTubeServer, poller: Any) -> None:
    for s in range(6):
        yt.add_comment("vidA", f"old {s}", at(s))
    p = poller(page_size=2, lookback_seconds=0)
    cursor = await connected(p)
    assert len(yt.hits("GET", "/commentThreads")) == 1  # connecting reads one page, not history
    new = [yt.add_comment("vidA", f"new {s}", at(100 + s)) for s in range(5)]
    yt.requests.clear()
    result = await p.poll(CREDS, OWNER, cursor)
    assert [c.comment_id for c in result.comments] == new
    # 104,103 | 102,101 | 100,5 | 4,3 <- older than the cursor: stop (2,1 and 0 never read)
    pages = yt.hits("GET", "/commentThreads")
    assert result.quota_used == len(pages) == 4
    assert [r["params"].get("pageToken") for r in pages] == [
        None,
        *(yt.page_token(n) for n in (2, 4, 6)),
    ]


async def test_page_cap_keeps_the_newest_part_of_a_burst(yt: YouTubeServer, poller: Any) -> None:
    yt.add_comment("vidA", "old", at(0))
    p = poller(page_size=2, max_pages=2, lookback_seconds=0)
    cursor = await connected(p)
    burst = [yt.add_comment("vidA", f"b{s}", at(10 + s)) for s in range(5)]
    result = await p.poll(CREDS, OWNER, cursor)
    assert [c.comment_id for c in result.comments] == burst[1:]
    assert result.quota_used == 2
    # documented: the oldest of a burst larger than the cap is not answered later either
    assert (await p.poll(CREDS, OWNER, result.cursor)).comments == []


async def test_replies_come_with_their_parent(yt: YouTubeServer, poller: Any) -> None:
    thread = yt.add_comment("vidA", "question", at(0))
    p = poller()
    cursor = await connected(p)
    reply = yt.add_reply(thread, "follow-up", at(200), author="UCfan", name="Ana")
    ours = yt.add_reply(thread, "our answer", at(210), author=OWNER, name="Owner")
    fresh = yt.add_comment("vidA", "new thread", at(220))
    fresh_reply = yt.add_reply(fresh, "me too", at(230), author="UCbob")
    result = await p.poll(CREDS, OWNER, cursor)
    by_id = {c.comment_id: c for c in result.comments}
    assert list(by_id) == [reply, ours, fresh, fresh_reply]
    assert by_id[reply].kind == "reply" and by_id[reply].parent_id == thread
    assert by_id[reply].post_id == "vidA" and by_id[reply].author_id == "UCfan"
    assert by_id[ours].author_is_account is True and by_id[ours].text == "our answer"
    assert by_id[fresh].kind == "comment" and by_id[fresh].parent_id is None
    assert by_id[fresh_reply].parent_id == fresh


@pytest.mark.parametrize("video_ids", [["vidA", "vidB"], "vidA, vidB"])
async def test_video_ids_narrow_the_poll(
    yt: YouTubeServer, poller: Any, video_ids: list[str] | str
) -> None:
    yt.add_video("vidB")
    yt.add_video("vidC")
    creds = {**CREDS, "video_ids": video_ids}
    p = poller()
    cursor = await connected(p, creds)
    assert set(cursor["sources"]) == {"video:vidA", "video:vidB"}
    assert [r["params"]["videoId"] for r in yt.hits("GET", "/commentThreads")] == ["vidA", "vidB"]
    assert all("allThreadsRelatedToChannelId" not in r["params"] for r in yt.requests)
    a = yt.add_comment("vidA", "on A", at(10))
    b = yt.add_comment("vidB", "on B", at(20))
    yt.add_comment("vidC", "on C", at(30))
    result = await p.poll(creds, OWNER, cursor)
    assert [(c.comment_id, c.post_id) for c in result.comments] == [(a, "vidA"), (b, "vidB")]
    assert result.quota_used == 2


async def test_video_with_comments_disabled_is_skipped(yt: YouTubeServer, poller: Any) -> None:
    yt.add_video("vidB")
    yt.add_comment("vidA", "history", at(0))
    yt.disabled.add("vidA")
    creds = {**CREDS, "video_ids": ["vidA", "vidB"]}
    p = poller()
    cursor = await connected(p, creds)
    assert cursor["skipped"] == {"video:vidA": "commentsDisabled"}
    assert set(cursor["sources"]) == {"video:vidB"}
    b = yt.add_comment("vidB", "still open", at(10))
    result = await p.poll(creds, OWNER, cursor)
    assert [c.comment_id for c in result.comments] == [b] and result.retry_after is None

    yt.disabled.discard("vidA")  # comments back on: its history is not answered
    reopened = await p.poll(creds, OWNER, result.cursor)
    assert reopened.comments == [] and "skipped" not in reopened.cursor
    assert set(reopened.cursor["sources"]) == {"video:vidA", "video:vidB"}


@pytest.mark.parametrize(
    ("now", "hours"),
    [
        (datetime(2026, 7, 15, 20, 0, tzinfo=UTC), 11),  # 13:00 PDT
        (datetime(2026, 1, 15, 20, 0, tzinfo=UTC), 12),  # 12:00 PST
    ],
)
async def test_quota_exceeded_waits_for_the_pacific_midnight(
    yt: YouTubeServer, poller: Any, now: datetime, hours: int
) -> None:
    p = poller(clock=lambda: now, quota_reset_slack_seconds=300)
    cursor = await connected(p)
    yt.add_comment("vidA", "waits for tomorrow", at(10))
    yt.fail("GET", "/commentThreads", 403, "quotaExceeded")
    result = await p.poll(CREDS, OWNER, cursor)
    assert result.comments == [] and result.quota_used == 0
    assert result.retry_after == hours * 3600 + 300
    assert result.cursor["sources"] == cursor["sources"]


async def test_outage_backs_off_and_loses_nothing(yt: YouTubeServer, poller: Any) -> None:
    p = poller(backoff_seconds=30)
    cursor = await connected(p)
    new = yt.add_comment("vidA", "during the outage", at(10))
    yt.fail("GET", "/commentThreads", 500, "backendError")
    down = await p.poll(CREDS, OWNER, cursor)
    assert down.comments == [] and down.retry_after == 30 and down.quota_used == 1
    assert down.cursor["sources"] == cursor["sources"] and "error" not in down.cursor
    back = await p.poll(CREDS, OWNER, down.cursor)
    assert [c.comment_id for c in back.comments] == [new] and back.retry_after is None


async def test_outage_mid_pagination_keeps_the_old_cursor(yt: YouTubeServer, poller: Any) -> None:
    yt.add_comment("vidA", "old", at(0))
    p = poller(page_size=2, lookback_seconds=0)
    cursor = await connected(p)
    new = [yt.add_comment("vidA", f"n{s}", at(10 + s)) for s in range(3)]
    yt.fail("GET", "/commentThreads", 503, "backendError", pageToken=yt.page_token(2))
    down = await p.poll(CREDS, OWNER, cursor)
    assert down.comments == [] and down.quota_used == 2 and down.retry_after == 30
    assert down.cursor["sources"] == cursor["sources"]  # no half-read page advances it
    back = await p.poll(CREDS, OWNER, down.cursor)
    assert [c.comment_id for c in back.comments] == new


async def test_quota_units_match_what_google_bills(yt: YouTubeServer, poller: Any) -> None:
    p = poller(page_size=2, lookback_seconds=0)
    cursor = await connected(p)
    spent = [1]
    yt.fail("GET", "/commentThreads", 500, "backendError")  # billed
    spent.append((await p.poll(CREDS, OWNER, cursor)).quota_used)
    for s in range(3):
        yt.add_comment("vidA", f"n{s}", at(10 + s))
    ok = await p.poll(CREDS, OWNER, cursor)
    assert len(ok.comments) == 3
    spent.append(ok.quota_used)
    yt.daily_quota = yt.quota_used  # the real exhaustion: not billed, nothing read
    out = await p.poll(CREDS, OWNER, ok.cursor)
    assert out.retry_after is not None and out.retry_after > 300
    spent.append(out.quota_used)
    assert spent == [1, 1, 2, 0] and sum(spent) == yt.quota_used


async def test_rate_limit_honours_retry_after(yt: YouTubeServer, poller: Any) -> None:
    p = poller()
    cursor = await connected(p)
    yt.fail("GET", "/commentThreads", 429, "rateLimitExceeded", retry_after="120")
    result = await p.poll(CREDS, OWNER, cursor)
    assert result.retry_after == 120 and result.cursor["sources"] == cursor["sources"]


async def test_unreachable_api_backs_off(yt: YouTubeServer, poller: Any) -> None:
    cursor = await connected(poller())
    p = poller(api_url=f"http://127.0.0.1:{free_port()}", backoff_seconds=45)
    result = await p.poll(CREDS, OWNER, cursor)
    assert result.retry_after == 45 and result.quota_used == 0
    assert result.cursor["sources"] == cursor["sources"]


async def test_revoked_credentials_are_reported_in_the_cursor(
    yt: YouTubeServer, poller: Any
) -> None:
    p = poller(error_backoff_seconds=900)
    cursor = await connected(p)
    bad = await p.poll({"access_token": "ya29.revoked"}, OWNER, cursor)
    assert bad.retry_after == 900 and bad.comments == []
    assert bad.cursor["error"]["status"] == 401 and bad.cursor["error"]["reason"] == "authError"
    assert bad.cursor["sources"] == cursor["sources"]
    good = await p.poll(CREDS, OWNER, bad.cursor)
    assert "error" not in good.cursor and good.retry_after is None


async def test_api_key_reads_without_oauth(yt: YouTubeServer, poller: Any) -> None:
    creds = {"api_key": API_KEY}
    p = poller()
    cursor = await connected(p, creds)
    own = yt.add_comment("vidA", "from the channel", at(5), author=OWNER)
    result = await p.poll(creds, OWNER, cursor)
    assert [(c.comment_id, c.author_is_account) for c in result.comments] == [(own, True)]
    request = yt.hits("GET", "/commentThreads")[-1]
    assert request["headers"]["x-goog-api-key"] == API_KEY and "key" not in request["params"]
    assert "authorization" not in request["headers"]


async def test_expired_access_token_is_refreshed(yt: YouTubeServer, poller: Any) -> None:
    yt.refresh_tokens["1//refresh"] = OWNER
    creds = {
        "access_token": "ya29.expired",
        "refresh_token": "1//refresh",
        "client_id": "cid",
        "client_secret": "csecret",
    }
    p = poller()
    cursor = await connected(p, creds)
    assert len(yt.hits("POST", "/token")) == 1
    await p.poll(creds, OWNER, cursor)
    assert len(yt.hits("POST", "/token")) == 1  # the minted token is reused
    minted = yt.hits("GET", "/commentThreads")[-1]["headers"]["authorization"]
    assert minted.startswith("Bearer ya29.minted-")

    revoked = {**creds, "refresh_token": "1//revoked"}
    result = await poller().poll(revoked, OWNER, cursor)
    assert result.cursor["error"]["reason"] == "invalid_grant"


def test_from_settings_reads_the_api_url_and_timeout() -> None:
    settings = SocialSettings(
        youtube_api_url="http://yt.example/v3/", social_request_timeout_seconds=7
    )
    p = YouTubePoller.from_settings(settings)
    c = YouTubeReplyClient.from_settings(settings)
    assert p.api_url == c.api_url == "http://yt.example/v3"
    assert p.timeout == c.timeout == 7


# -- the quota day ---------------------------------------------------------------------


def test_quota_reset_is_the_next_pacific_midnight_across_dst() -> None:
    def reset(now: datetime) -> float:
        return seconds_until_quota_reset(now, slack_seconds=0)

    # 2026-03-08 is the spring-forward Sunday: 01:00 PST now, the next midnight is PDT.
    assert reset(datetime(2026, 3, 8, 9, 0, tzinfo=UTC)) == 22 * 3600
    # 2026-11-01 falls back: 00:30 PDT now, the day has 25 hours.
    assert reset(datetime(2026, 11, 1, 7, 30, tzinfo=UTC)) == 24.5 * 3600
    assert reset(datetime(2026, 7, 15, 6, 59, 59, tzinfo=UTC)) == 1  # 23:59:59 PDT
    assert reset(datetime(2026, 1, 15, 8, 0, tzinfo=UTC)) == 24 * 3600  # 00:00 PST exactly
    # A naive ``now`` is UTC.
    assert reset(datetime(2026, 1, 15, 7, 0)) == 3600
    # Just after midnight (inside the skew margin): only the rest of the margin.
    after = datetime(2026, 11, 2, 8, 1, tzinfo=UTC)  # 00:01 PST
    assert seconds_until_quota_reset(after, slack_seconds=300) == 240


# -- replying --------------------------------------------------------------------------


def inbound(comment_id: str, parent_id: str | None = None) -> InboundComment:
    return InboundComment(
        platform="youtube",
        account_id=OWNER,
        comment_id=comment_id,
        text="hi",
        author_id="UCfan",
        post_id="vidA",
        parent_id=parent_id,
        kind="reply" if parent_id else "comment",
    )


async def test_reply_request_shape(yt: YouTubeServer, replier: Any) -> None:
    thread = yt.add_comment("vidA", "love it", at(0))
    result = await replier().reply(CREDS, inbound(thread), "Thank you!", idempotency_key="k1")
    (call,) = yt.hits("POST", "/comments")
    assert call["params"] == {"part": "snippet"}
    assert json.loads(call["body"]) == {
        "snippet": {"parentId": thread, "textOriginal": "Thank you!"}
    }
    assert call["headers"]["authorization"] == f"Bearer {OWNER_TOKEN}"
    assert result.reply_id == yt.inserted[0]["id"] and result.reply_id.startswith(f"{thread}.")
    assert yt.quota_used == 50


async def test_reply_to_a_reply_goes_to_its_thread(yt: YouTubeServer, replier: Any) -> None:
    thread = yt.add_comment("vidA", "question", at(0))
    reply = yt.add_reply(thread, "me too", at(5))
    await replier().reply(
        CREDS, inbound(reply, parent_id=thread), "Both of you!", idempotency_key="k"
    )
    assert yt.inserted[0]["parentId"] == thread


@pytest.mark.parametrize(
    ("status", "reason", "code", "retryable"),
    [
        (401, "authError", "unauthorized", False),
        (403, "commentsDisabled", "forbidden", False),
        (403, "forbidden", "forbidden", False),
        (403, "insufficientPermissions", "forbidden", False),
        (404, "commentNotFound", "not_found", False),
        (400, "processingFailure", "invalid", False),
        (429, "rateLimitExceeded", "rate_limited", True),
        (403, "rateLimitExceeded", "rate_limited", True),
        (500, "backendError", "unavailable", True),
        (503, "backendError", "unavailable", True),
    ],
)
async def test_reply_errors_are_mapped(
    yt: YouTubeServer, replier: Any, status: int, reason: str, code: str, retryable: bool
) -> None:
    thread = yt.add_comment("vidA", "x", at(0))
    yt.fail("POST", "/comments", status, reason)
    with pytest.raises(ReplyError) as info:
        await replier(backoff_seconds=30).reply(CREDS, inbound(thread), "hey", idempotency_key="k")
    assert (info.value.code, info.value.retryable) == (code, retryable)
    if code == "rate_limited":
        assert info.value.retry_after == 30
    assert yt.inserted == []


async def test_reply_quota_exceeded_waits_for_the_reset(yt: YouTubeServer, replier: Any) -> None:
    thread = yt.add_comment("vidA", "x", at(0))
    yt.fail("POST", "/comments", 403, "quotaExceeded")
    now = datetime(2026, 7, 15, 20, 0, tzinfo=UTC)  # 13:00 PDT: 11 h to midnight
    client = replier(clock=lambda: now, quota_reset_slack_seconds=0)
    with pytest.raises(ReplyError) as info:
        await client.reply(CREDS, inbound(thread), "hey", idempotency_key="k")
    assert info.value.code == "rate_limited" and info.value.retryable
    assert info.value.retry_after == 11 * 3600


async def test_reply_errors_from_real_state(yt: YouTubeServer, replier: Any) -> None:
    client = replier()
    thread = yt.add_comment("vidA", "x", at(0))
    yt.disabled.add("vidA")
    with pytest.raises(ReplyError) as disabled:
        await client.reply(CREDS, inbound(thread), "hey", idempotency_key="a")
    assert (disabled.value.code, disabled.value.retryable) == ("forbidden", False)
    with pytest.raises(ReplyError) as gone:
        await client.reply(CREDS, inbound("Ugzdeleted"), "hey", idempotency_key="b")
    assert gone.value.code == "not_found"
    with pytest.raises(ReplyError) as read_only:
        await client.reply({"api_key": API_KEY}, inbound(thread), "hey", idempotency_key="c")
    assert read_only.value.code == "unauthorized"
    with pytest.raises(ReplyError) as empty:
        await client.reply(CREDS, inbound(thread), "  ", idempotency_key="d")
    assert empty.value.code == "invalid"
    assert yt.inserted == [] and len(yt.hits("POST", "/comments")) == 2  # no call without a token


async def test_reply_connection_refused_is_unavailable(replier: Any) -> None:
    client = replier(api_url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(ReplyError) as info:
        await client.reply(CREDS, inbound("Ugz1"), "hey", idempotency_key="k")
    assert (info.value.code, info.value.retryable) == ("unavailable", True)


async def test_retry_after_a_timeout_does_not_post_twice(yt: YouTubeServer, replier: Any) -> None:
    thread = yt.add_comment("vidA", "x", at(0))
    client = replier(timeout=0.5)
    yt.post_delay = 2.0  # posted, but the answer comes after the client gave up
    with pytest.raises(ReplyError) as info:
        await client.reply(CREDS, inbound(thread), "Thanks!", idempotency_key="k1")
    assert (info.value.code, info.value.retryable) == ("unavailable", True)
    assert len(yt.inserted) == 1
    yt.post_delay = 0.0
    again = await client.reply(CREDS, inbound(thread), "Thanks!", idempotency_key="k1")
    assert again.reply_id == yt.inserted[0]["id"] and len(yt.inserted) == 1
    assert yt.hits("GET", "/comments")[-1]["params"]["parentId"] == thread
    # Another key is another reply, even with the same words.
    await client.reply(CREDS, inbound(thread), "Thanks!", idempotency_key="k2")
    assert len(yt.inserted) == 2


async def test_reply_refreshes_an_expired_token(yt: YouTubeServer, replier: Any) -> None:
    yt.refresh_tokens["1//r"] = OWNER
    thread = yt.add_comment("vidA", "x", at(0))
    creds = {"refresh_token": "1//r", "client_id": "cid", "client_secret": "s"}
    result = await replier().reply(creds, inbound(thread), "hey", idempotency_key="k")
    assert result.reply_id == yt.inserted[0]["id"] and yt.inserted[0]["channel"] == OWNER
    assert len(yt.hits("POST", "/token")) == 1
