"""Feeds without a database: parsing, keyphrases, sentiment, trends, URL checks, fetching."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from integrations.rss.analyze import TextAnalyzer, normalise_phrase
from integrations.rss.fetch import Fetcher, FetchError, _check_resolved, check_url
from integrations.rss.parse import ParseError, parse_feed, plain_text
from integrations.rss.service import format_context
from integrations.rss.trends import TrendItem, score, trending
from tests.fakes.feed_server import FIXTURES, FeedServer, rss
from tests.fakes.openai_server import free_port


@pytest.fixture(scope="module")
def feeds() -> Iterator[FeedServer]:
    server = FeedServer().start()
    yield server
    server.stop()


def _fetcher(**overrides: object) -> Fetcher:
    options: dict[str, object] = {
        "allow_private": True,
        "timeout_seconds": 5.0,
        "max_bytes": 1024 * 1024,
        "max_redirects": 3,
        "user_agent": "salon-tests",
    }
    options.update(overrides)
    return Fetcher(**options)  # type: ignore[arg-type]


# -- parsing ---------------------------------------------------------------------


def test_parses_rss_and_atom_fixtures() -> None:
    news = parse_feed((FIXTURES / "news.xml").read_bytes())
    assert news.title == "Fixture RSS News" and not news.malformed
    assert [i.title for i in news.items] == [
        "City opens new bicycle lanes",
        "Bakery wins national bread award",
        "No link, no guid item",
    ]
    first = news.items[0]
    assert first.summary == "The city council opened 12 km of protected bicycle lanes."
    assert first.published_at == datetime(2026, 11, 19, 8, tzinfo=UTC)
    assert news.items[2].link is None and news.items[2].published_at is None
    # guid, link and text identities are all different and stable.
    again = parse_feed((FIXTURES / "news.xml").read_bytes())
    assert [i.dedupe_key for i in again.items] == [i.dedupe_key for i in news.items]
    assert len({i.dedupe_key for i in news.items}) == 3

    atom = parse_feed((FIXTURES / "atom.xml").read_bytes())
    assert atom.title == "Fixture Atom Science"
    assert atom.items[0].link == "http://example.test/atom/comet"
    assert atom.items[0].summary == "Astronomers say the comet will be visible for a week."


def test_garbage_is_a_parse_error_and_sloppy_feeds_are_read() -> None:
    for junk in ((FIXTURES / "malformed.xml").read_bytes(), b"", b"\x00\x01garbage", b"{}"):
        with pytest.raises(ParseError, match="not an RSS or Atom feed"):
            parse_feed(junk)
    sloppy = parse_feed((FIXTURES / "broken_but_readable.xml").read_bytes())
    assert sloppy.malformed
    assert [i.title for i in sloppy.items] == ["Harbor festival draws crowds & boats"]


def test_unsafe_item_links_are_dropped_and_html_is_text() -> None:
    doc = rss([{"title": "<b>Bold</b> &amp; news", "link": "javascript:alert(1)", "guid": "g"}])
    (item,) = parse_feed(doc).items
    assert item.title == "Bold & news" and item.link is None
    assert plain_text("<p>a<br/>b &lt;c&gt;</p>", 100) == "a b <c>"


def test_dedupe_key_prefers_guid_then_link() -> None:
    a = rss([{"title": "One", "guid": "same", "link": "http://x.test/1"}])
    b = rss([{"title": "One, edited", "guid": "same", "link": "http://x.test/2"}])
    assert parse_feed(a).items[0].dedupe_key == parse_feed(b).items[0].dedupe_key
    c = rss([{"title": "Two", "link": "http://x.test/2"}])
    d = rss([{"title": "Two, edited", "link": "http://x.test/2"}])
    assert parse_feed(c).items[0].dedupe_key == parse_feed(d).items[0].dedupe_key


# -- analysis --------------------------------------------------------------------

KAGGLE = (
    "Google is acquiring Kaggle, a platform that hosts data science and machine learning "
    "competitions. Details about the transaction remain somewhat vague, but Google is hosting "
    "its Cloud Next conference in San Francisco this week, and the official announcement could "
    "come as early as tomorrow. Kaggle co-founder Anthony Goldbloom declined to comment. Google "
    "itself declined to comment on the rumors. Kaggle has about half a million data scientists "
    "on its platform."
)


def test_yake_keyphrases_of_a_known_text() -> None:
    phrases = TextAnalyzer().keyphrases_of(KAGGLE)
    assert len(phrases) == 10
    for expected in ("machine learning", "google", "kaggle", "san francisco", "data science"):
        assert expected in phrases, phrases
    assert all(p == normalise_phrase(p) for p in phrases)
    assert TextAnalyzer().keyphrases_of("   ") == []


def test_vader_sentiment_per_item() -> None:
    analyzer = TextAnalyzer()
    good = analyzer.analyze("Festival is a wonderful success", "Visitors loved it.")
    bad = analyzer.analyze("Floods destroy homes", "Terrible floods killed dozens.")
    assert good.sentiment > 0.5 and bad.sentiment < -0.5
    assert "floods" in bad.keyphrases


# -- trends ----------------------------------------------------------------------

NOW = datetime(2026, 11, 24, 12, tzinfo=UTC)
DAY = timedelta(days=1)


def _stream(phrase: str, per_day: list[int]) -> list[TrendItem]:
    """``per_day[k]`` items with ``phrase`` on day k before now (index 0 = the last 24 h)."""
    items = []
    for days_ago, count in enumerate(per_day):
        for n in range(count):
            at = NOW - days_ago * DAY - timedelta(hours=1 + n)
            items.append(
                TrendItem(at, [phrase, f"noise {phrase} {days_ago} {n}"], f"{phrase} {at}")
            )
    return items


def test_rising_term_trends_flat_and_falling_do_not() -> None:
    items = (
        _stream("rising", [8, 1, 0, 1, 0, 1, 0, 1])  # baseline ~0.6/day, now 8
        + _stream("flat", [3, 3, 3, 3, 3, 3, 3, 3])
        + _stream("falling", [1, 6, 6, 6, 6, 6, 6, 6])
        + _stream("new", [3])  # never seen before: rising from nothing
        + _stream("single", [1])  # below min_count
    )
    found = trending(items, now=NOW, window=DAY, baseline_windows=7)
    phrases = [t.phrase for t in found]
    assert phrases[0] == "rising"
    assert set(phrases) == {"rising", "new"}
    rising = found[0]
    assert rising.count == 8 and rising.baseline == pytest.approx(4 / 7)
    assert rising.items[0].at > rising.items[-1].at  # newest first

    # The formula as documented.
    e, ratio, z = score(8, 4, 7)
    assert (e, ratio) == (pytest.approx(4 / 7), pytest.approx(9 / (4 / 7 + 1)))
    assert z == pytest.approx((8 - 4 / 7) / (4 / 7 + 1) ** 0.5)
    assert score(3, 21, 7)[2] == 0  # flat
    assert score(1, 42, 7)[2] < 0  # falling


def test_trends_ignore_future_and_old_items_and_count_a_story_once() -> None:
    same_story = [TrendItem(NOW - timedelta(hours=h), ["topic"], "Same headline") for h in (1, 2)]
    assert trending(same_story, now=NOW, window=DAY) == []  # one story in two feeds
    future = [TrendItem(NOW + timedelta(hours=1), ["late"], f"t{i}") for i in range(5)]
    ancient = [TrendItem(NOW - 30 * DAY, ["old"], f"o{i}") for i in range(5)]
    assert trending(future + ancient, now=NOW, window=DAY) == []


def test_nested_phrases_fold_into_one_topic() -> None:
    items = [
        TrendItem(NOW - timedelta(hours=i + 1), ["quantum battery", "quantum", "battery"], f"t{i}")
        for i in range(4)
    ]
    found = trending(items, now=NOW, window=DAY)
    assert len(found) == 1
    block = format_context(found)
    assert block.startswith("Topics in the news you follow right now")
    assert "(4 stories" in block and '"t0"' in block


# -- URL checks ------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://example.com/feed",
        "javascript:alert(1)",
        "gopher://example.com/",
        "http://",
        "http://user:pw@example.com/feed",
        "not a url",
        "http://example.com:99999/",
    ],
)
def test_non_http_urls_are_refused(url: str) -> None:
    with pytest.raises(FetchError):
        check_url(url, allow_private=True)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/feed",
        "http://localhost:8000/feed",
        "http://10.1.2.3/",
        "http://192.168.0.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://0.0.0.0/",
    ],
)
def test_private_addresses_are_refused_unless_allowed(url: str) -> None:
    with pytest.raises(FetchError, match="SALON_FEEDS_ALLOW_PRIVATE"):
        check_url(url, allow_private=False)
    assert check_url(url, allow_private=True) == url


async def test_names_that_resolve_to_private_addresses_are_refused() -> None:
    check_url("https://example.com/feed.xml", allow_private=False)  # public syntax: fine
    with pytest.raises(FetchError, match="not public"):
        await _check_resolved("localhost", 80)
    fetcher = _fetcher(allow_private=False)
    try:
        with pytest.raises(FetchError):
            await fetcher.fetch("http://127.0.0.1:9/feed")
    finally:
        await fetcher.close()


# -- fetching --------------------------------------------------------------------


async def test_conditional_get_gives_304(feeds: FeedServer) -> None:
    url = feeds.put("cond.xml", rss([{"title": "A", "guid": "a"}]))
    fetcher = _fetcher()
    try:
        first = await fetcher.fetch(url)
        assert first.status == 200 and first.body and first.etag and first.last_modified
        second = await fetcher.fetch(url, etag=first.etag, last_modified=first.last_modified)
        assert second.not_modified and second.body is None
        sent = feeds.hits("cond.xml")[-1]["headers"]
        assert sent["if-none-match"] == first.etag
        assert sent["if-modified-since"] == first.last_modified
        # Last-Modified alone works too.
        third = await fetcher.fetch(url, last_modified=first.last_modified)
        assert third.not_modified
        feeds.put("cond.xml", rss([{"title": "B", "guid": "b"}]))
        fourth = await fetcher.fetch(url, etag=first.etag, last_modified=first.last_modified)
        assert fourth.status == 200 and fourth.etag != first.etag
    finally:
        await fetcher.close()


async def test_failures_are_fetch_errors(feeds: FeedServer) -> None:
    fetcher = _fetcher(timeout_seconds=1.0, max_bytes=64 * 1024)
    try:
        with pytest.raises(FetchError, match="HTTP 500") as err:
            await fetcher.fetch(feeds.url("status/500"))
        assert err.value.status == 500
        with pytest.raises(FetchError, match="HTTP 404"):
            await fetcher.fetch(feeds.url("missing.xml"))
        with pytest.raises(FetchError, match="connection failed"):
            await fetcher.fetch(f"http://127.0.0.1:{free_port()}/feed.xml")
        with pytest.raises(FetchError, match="scheme 'file' is not allowed"):
            await fetcher.fetch(feeds.url("redirect?to=file:///etc/passwd"))
        with pytest.raises(FetchError, match="byte limit"):
            await fetcher.fetch(feeds.url("huge"))
        with pytest.raises(FetchError, match="timed out"):
            await fetcher.fetch(feeds.url("slow"))
        # A redirect to an http URL is followed.
        target = feeds.put("target.xml", rss([{"title": "T", "guid": "t"}]))
        moved = await fetcher.fetch(feeds.url(f"redirect?to={target}"))
        assert moved.status == 200 and moved.url == target
    finally:
        await fetcher.close()


async def test_redirect_loops_stop(feeds: FeedServer) -> None:
    fetcher = _fetcher(max_redirects=2)
    loop = feeds.url("redirect?to=" + feeds.url("redirect?to=" + feeds.url("redirect?to=/x")))
    try:
        with pytest.raises(FetchError, match="more than 2 redirects"):
            await fetcher.fetch(loop)
    finally:
        await fetcher.close()


def test_fixture_files_exist() -> None:
    assert {p.name for p in Path(FIXTURES).iterdir()} >= {"news.xml", "atom.xml", "malformed.xml"}
