"""Session tokens, bearer parsing, authentication, the origin allowlist, rate limits."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from memory.db import create_engine, normalize_database_url
from memory.migrate import migrate
from memory.store import Store
from server.auth import (
    TOKEN_PREFIX,
    Principal,
    SessionTokens,
    TokenError,
    authenticate,
    bearer_token,
)
from server.limits import TokenBucket, origin_allowed

NOW = 1_700_000_000.0


def _mint(tokens: SessionTokens, *, ttl: int = 60, now: float | None = NOW, **kw: object) -> str:
    fields: dict[str, object] = {
        "tenant_id": "ten_1",
        "user_id": "usr_1",
        "user_name": "Ann",
        "persona": "ada",
    }
    fields.update(kw)
    token, _ = tokens.mint(ttl_seconds=ttl, now=now, **fields)  # type: ignore[arg-type]
    return token


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _split(token: str) -> tuple[str, str]:
    body, sig = token[len(TOKEN_PREFIX) :].split(".")
    return body, sig


def _payload(token: str) -> dict[str, object]:
    body, _ = _split(token)
    return dict(json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))))


# -- session tokens ---------------------------------------------------------------


def test_mint_verify_round_trip() -> None:
    tokens = SessionTokens("secret-a")
    token, expires = tokens.mint(
        tenant_id="ten_1", user_id="usr_1", user_name="Ann", persona="ada", ttl_seconds=60, now=NOW
    )
    assert expires == int(NOW + 60)
    assert token.startswith(TOKEN_PREFIX)
    assert token.count(".") == 2
    assert _payload(token)["e"] == expires

    p = tokens.verify(token, now=NOW + 30)
    assert p == Principal(
        tenant_id="ten_1",
        kind="session",
        role="user",
        user_id="usr_1",
        user_name="Ann",
        persona="ada",
    )
    assert p.is_session

    unbound = _mint(tokens, user_name=None, persona=None)
    q = tokens.verify(unbound, now=NOW)
    assert (q.user_id, q.user_name, q.persona) == ("usr_1", None, None)

    # Non-ASCII names survive the round trip.
    named = _mint(tokens, user_name="Zoë 🙂")
    assert tokens.verify(named, now=NOW).user_name == "Zoë 🙂"


def test_token_is_valid_until_it_expires() -> None:
    tokens = SessionTokens("secret-a")
    token = _mint(tokens, ttl=60)
    assert tokens.verify(token, now=NOW + 60).user_id == "usr_1"  # the last valid second
    with pytest.raises(TokenError, match="expired"):
        tokens.verify(token, now=NOW + 61)
    with pytest.raises(TokenError):
        tokens.verify(token, now=NOW + 86_400)
    # Without an explicit clock, a token minted long ago is expired now.
    with pytest.raises(TokenError):
        tokens.verify(token)
    fresh = _mint(tokens, now=None)
    assert tokens.verify(fresh).tenant_id == "ten_1"


def test_tampered_payload_is_rejected() -> None:
    tokens = SessionTokens("secret-a")
    token = _mint(tokens)
    _, sig = _split(token)
    payload = _payload(token)
    for field, value in (("u", "usr_admin"), ("t", "ten_other"), ("e", 9_999_999_999)):
        forged = _b64(json.dumps({**payload, field: value}, separators=(",", ":")).encode())
        with pytest.raises(TokenError):
            tokens.verify(f"{TOKEN_PREFIX}{forged}.{sig}", now=NOW)


def test_tampered_signature_is_rejected() -> None:
    tokens = SessionTokens("secret-a")
    token = _mint(tokens)
    body, sig = _split(token)
    flipped = sig[:-1] + ("A" if sig[-1] != "A" else "B")
    for bad in (flipped, sig[:-1], sig + "A", "", sig.upper() if sig != sig.upper() else sig[1:]):
        with pytest.raises(TokenError):
            tokens.verify(f"{TOKEN_PREFIX}{body}.{bad}", now=NOW)


def test_token_from_another_secret_is_rejected() -> None:
    token = _mint(SessionTokens("secret-a"))
    with pytest.raises(TokenError):
        SessionTokens("secret-b").verify(token, now=NOW)
    assert SessionTokens("secret-a").verify(token, now=NOW).user_id == "usr_1"


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "st1",
        "st1.",
        "st1..",
        "st1.abc",
        "st1.abc.def",
        "st1.!!!.???",
        "st2.abc.def",
        "sk_salon_abc",
        "Bearer st1.abc.def",
        "st1.e30.e30",  # "{}" . "{}"
    ],
)
def test_garbage_tokens_are_rejected(garbage: str) -> None:
    with pytest.raises(TokenError):
        SessionTokens("secret-a").verify(garbage, now=NOW)


def test_extra_segments_are_rejected() -> None:
    tokens = SessionTokens("secret-a")
    token = _mint(tokens)
    with pytest.raises(TokenError):
        tokens.verify(token + ".extra", now=NOW)
    with pytest.raises(TokenError):
        tokens.verify(" " + token, now=NOW)


def test_non_ascii_signature_is_a_token_error() -> None:
    tokens = SessionTokens("secret-a")
    body, _ = _split(_mint(tokens))
    with pytest.raises(TokenError):
        tokens.verify(f"{TOKEN_PREFIX}{body}.é", now=NOW)


def test_explicit_zero_clock_is_honoured() -> None:
    tokens = SessionTokens("secret-a")
    _, expires = tokens.mint(
        tenant_id="t", user_id="u", user_name=None, persona=None, ttl_seconds=60, now=0.0
    )
    assert expires == 60


# -- bearer header ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("Bearer abc", "abc"),
        ("bearer abc", "abc"),
        ("BEARER abc", "abc"),
        ("Bearer    abc  ", "abc"),
        ("Bearer st1.x.y", "st1.x.y"),
        ("Bearer", None),
        ("Bearer ", None),
        ("Bearer    ", None),
        ("Bearerabc", None),
        ("Basic dXNlcjpwYXNz", None),
        ("Token abc", None),
        ("abc", None),
        (" Bearer abc", None),
    ],
)
def test_bearer_token(header: str | None, expected: str | None) -> None:
    assert bearer_token(header) == expected


# -- authenticate -------------------------------------------------------------------


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    engine = create_engine(normalize_database_url(None, tmp_path))
    await migrate(engine)
    s = Store(engine)
    try:
        yield s
    finally:
        await s.close()


async def test_authenticate(store: Store) -> None:
    tenant = await store.create_tenant("t")
    other = await store.create_tenant("o")
    _, admin_key = await store.create_api_key(tenant.id, "admin", role="admin")
    _, member_key = await store.create_api_key(other.id, "member", role="member")
    tokens = SessionTokens(await store.get_or_create_secret("session"))
    session = _mint(tokens, now=None, tenant_id=tenant.id, user_id="usr_9", persona=None)

    assert await authenticate(store, tokens, admin_key) == Principal(
        tenant_id=tenant.id, kind="api_key", role="admin"
    )
    member = await authenticate(store, tokens, member_key)
    assert member is not None
    assert (member.tenant_id, member.kind, member.role) == (other.id, "api_key", "member")
    assert not member.is_session and member.user_id is None

    p = await authenticate(store, tokens, session)
    assert p is not None and p.is_session
    assert (p.tenant_id, p.kind, p.role, p.user_id, p.user_name, p.persona) == (
        tenant.id,
        "session",
        "user",
        "usr_9",
        "Ann",
        None,
    )

    # Where only session tokens are accepted (browsers), API keys are refused.
    assert await authenticate(store, tokens, admin_key, allow_api_key=False) is None
    assert await authenticate(store, tokens, session, allow_api_key=False) == p

    # Unknown, malformed, expired, or foreign credentials: no principal, no exception.
    expired = _mint(tokens, now=time.time() - 3600, ttl=60, tenant_id=tenant.id)
    foreign = _mint(SessionTokens("another-secret"), now=None, tenant_id=tenant.id)
    for bad in (
        None,
        "",
        "sk_salon_" + "x" * 43,
        admin_key + "x",
        "st1.garbage",
        "st1.a.b",
        expired,
        foreign,
    ):
        assert await authenticate(store, tokens, bad) is None, bad


async def test_authenticate_non_ascii_token_is_refused(store: Store) -> None:
    tokens = SessionTokens("secret-a")
    assert await authenticate(store, tokens, "st1.abc.é") is None


# -- origins ---------------------------------------------------------------------

APP = "https://app.example.com"


@pytest.mark.parametrize(
    ("origin", "host", "allowed", "ok"),
    [
        # No Origin header (apps, servers): allowed; auth still applies.
        (None, "api.example.com", [], True),
        (None, None, [], True),
        # Same host as the request (the console).
        ("http://localhost:8000", "localhost:8000", [], True),
        ("http://LocalHost:8000", "localhost:8000", [], True),
        ("https://api.example.com", "API.example.com", [], True),
        ("https://api.example.com/", "api.example.com", [], True),
        # Listed, with and without a trailing slash on the Origin.
        (APP, "api.example.com", [APP], True),
        (APP + "/", "api.example.com", [APP], True),
        (APP, "api.example.com", ["https://other.example.com", APP], True),
        # Wildcard.
        ("https://anything.test", "api.example.com", ["*"], True),
        ("null", "api.example.com", ["*"], True),
        # Everything else is refused.
        ("https://evil.test", "api.example.com", [APP], False),
        ("https://evil.test", "api.example.com", [], False),
        ("https://evil.test", None, [APP], False),
        ("https://evil.test", "", [], False),
        ("http://app.example.com", "api.example.com", [APP], False),  # scheme differs
        (APP + ".evil.test", "api.example.com", [APP], False),  # prefix match is not a match
        ("https://example.com", "api.example.com", [APP], False),
        ("null", "api.example.com", [APP], False),
        ("", "api.example.com", [], False),
        # Same hostname, different port: a different origin.
        ("http://localhost:9000", "localhost:8000", [], False),
        ("http://localhost:8000", "localhost", [], False),
        ("http://localhost", "localhost:8000", [], False),
    ],
)
def test_origin_allowed(origin: str | None, host: str | None, allowed: list[str], ok: bool) -> None:
    assert origin_allowed(origin, host, allowed) is ok


# -- token bucket -----------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_burst_then_refuse() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=2, burst=3, clock=clock)
    assert [bucket.take() for _ in range(5)] == [True, True, True, False, False]
    assert bucket.tokens >= 0


def test_token_bucket_refills_at_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=2, burst=3, clock=clock)
    for _ in range(3):
        assert bucket.take()
    assert not bucket.take()

    clock.now += 0.25  # half a token
    assert not bucket.take()
    clock.now += 0.25  # refusals do not reset accrual: now a whole token
    assert bucket.take()
    assert not bucket.take()

    clock.now += 1.0  # two tokens
    assert [bucket.take() for _ in range(3)] == [True, True, False]

    clock.now += 1.0
    assert not bucket.take(cost=2.5)  # a costly take is refused without spending
    assert bucket.take(cost=2.0)
    assert not bucket.take()


def test_token_bucket_never_exceeds_burst() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=5, burst=4, clock=clock)
    clock.now += 3600  # an hour idle saves up no more than the burst
    assert [bucket.take() for _ in range(6)] == [True] * 4 + [False] * 2
    assert bucket.tokens <= bucket.burst

    for _ in range(50):
        clock.now += 10
        bucket.take(cost=0)
        assert bucket.tokens <= bucket.burst
    assert not bucket.take(cost=4.5)  # more than the burst can never succeed
    assert bucket.take(cost=4)


def test_token_bucket_defaults_to_a_real_clock() -> None:
    bucket = TokenBucket(rate=1, burst=1)
    assert bucket.take()
    assert not bucket.take()
