"""Comment automation's platform-independent parts: policies, credentials at rest, the store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from integrations.social.crypto import CredentialsError, Vault
from integrations.social.policy import check_policy, fit_reply, quiet_until, why_ignored
from memory.social_store import CommentRecord, SocialStore
from memory.store import Store
from tests.test_store_contract import STORE_BACKENDS

# -- policies -------------------------------------------------------------------------


def test_policy_defaults_and_validation() -> None:
    policy = check_policy(None)
    assert policy["mode"] == "approval" and policy["max_replies_per_hour"] == 60
    assert check_policy({"mode": "auto"})["mode"] == "auto"
    for bad, words in (
        ({"mode": "sometimes"}, "mode"),
        ({"colour": 1}, "unknown"),
        ({"ignore_keywords": "spam"}, "ignore_keywords"),
        ({"max_replies_per_hour": -1}, "max_replies_per_hour"),
        ({"quiet_hours": {"start": "22h", "end": "07:00"}}, "HH:MM"),
        ({"quiet_hours": {"start": "22:00", "end": "07:00", "timezone": "Mars/Olympus"}}, "IANA"),
        ({"reply_to_replies": "yes"}, "reply_to_replies"),
    ):
        with pytest.raises(ValueError, match=words):
            check_policy(bad)


def test_quiet_hours_over_midnight_in_the_accounts_time_zone() -> None:
    policy = check_policy(
        {"quiet_hours": {"start": "22:00", "end": "07:00", "timezone": "Europe/Paris"}}
    )
    # 21:30 UTC is 22:30 in Paris (winter): quiet until 07:00 Paris = 06:00 UTC next day.
    late = datetime(2026, 1, 10, 21, 30, tzinfo=UTC)
    assert quiet_until(policy, late) == datetime(2026, 1, 11, 6, 0, tzinfo=UTC)
    early = datetime(2026, 1, 11, 5, 0, tzinfo=UTC)  # 06:00 in Paris
    assert quiet_until(policy, early) == datetime(2026, 1, 11, 6, 0, tzinfo=UTC)
    noon = datetime(2026, 1, 11, 11, 0, tzinfo=UTC)
    assert quiet_until(policy, noon) is None
    assert quiet_until(check_policy({}), late) is None
    day = check_policy({"quiet_hours": {"start": "12:00", "end": "14:00", "timezone": "UTC"}})
    assert quiet_until(day, noon) is None and quiet_until(
        day, noon + timedelta(hours=1, minutes=30)
    )


def _comment(**fields: object) -> CommentRecord:
    now = datetime.now(UTC)
    base: dict[str, object] = {
        "id": "scom_1",
        "tenant_id": "t",
        "account_pk": "a",
        "platform": "instagram",
        "comment_id": "c1",
        "post_id": "p1",
        "parent_id": None,
        "author_id": "u1",
        "author_name": "Una",
        "author_is_account": False,
        "kind": "comment",
        "text": "love this photo!",
        "user_id": None,
        "conversation_id": None,
        "status": "received",
        "reason": None,
        "reply_text": None,
        "reply_id": None,
        "attempts": 0,
        "next_attempt_at": None,
        "error": None,
        "decided_by": None,
        "created_at": now,
        "received_at": now,
        "updated_at": now,
    }
    base.update(fields)
    return CommentRecord(**base)  # type: ignore[arg-type]


def test_what_is_never_answered() -> None:
    policy = check_policy({"mode": "auto", "ignore_keywords": ["Refund"]})
    assert why_ignored(_comment(), policy) is None
    assert why_ignored(_comment(author_is_account=True), policy) == "own_comment"
    assert why_ignored(_comment(), check_policy({"mode": "off"})) == "policy_off"
    assert why_ignored(_comment(text="I want a refund now"), policy) == "keyword"
    assert why_ignored(_comment(text="  "), policy) == "empty"
    assert (
        why_ignored(_comment(text="free followers at http://x.io and www.y.io"), policy) == "spam"
    )
    threads = check_policy({"reply_to_replies": False})
    assert why_ignored(_comment(parent_id="c0"), threads) == "reply_in_thread"


# -- credentials at rest ------------------------------------------------------------------


def test_credentials_are_sealed_and_only_this_key_opens_them() -> None:
    vault = Vault("a passphrase-like key")
    sealed = vault.seal({"access_token": "EAAB-secret"})
    assert "EAAB-secret" not in sealed and sealed
    assert vault.open(sealed) == {"access_token": "EAAB-secret"}
    assert vault.seal({}) == "" and vault.open("") == {}
    with pytest.raises(CredentialsError, match="SALON_SOCIAL_CREDENTIALS_KEY"):
        Vault("another key").open(sealed)
    with pytest.raises(CredentialsError):
        vault.open(sealed[:-4] + "AAAA")  # tampered
    from cryptography.fernet import Fernet

    real = Fernet.generate_key()
    assert Vault(real).open(Vault(real.decode()).seal({"k": 1})) == {"k": 1}


# -- the store, on every database ---------------------------------------------------------


@pytest.fixture(params=list(STORE_BACKENDS))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    async with STORE_BACKENDS[request.param](request, tmp_path) as s:
        yield s


async def test_accounts_route_comments_once_and_states_move_atomically(store: Store) -> None:
    social = SocialStore(store)
    tenant = (await store.create_tenant("t")).id
    other = (await store.create_tenant("o")).id
    persona = await store.create_persona(tenant, slug="ada", name="Ada", data={})
    account = await social.create_account(
        tenant,
        platform="instagram",
        account_id="1784",
        persona_id=persona.id,
        name="shop",
        credentials="sealed",
        policy=check_policy({}),
    )
    assert account is not None and account.to_public()["has_credentials"] is True
    assert "credentials" not in account.to_public()
    theirs = await store.create_persona(other, slug="bob", name="Bob", data={})
    assert (
        await social.create_account(  # one platform account belongs to one tenant
            other,
            platform="instagram",
            account_id="1784",
            persona_id=theirs.id,
            name="",
            credentials="",
            policy={},
        )
        is None
    )
    assert (await social.route("instagram", "1784")) == account
    assert await social.route("facebook", "1784") is None
    assert await social.get_account(other, account.id) is None

    fields = {"platform": "instagram", "comment_id": "c1", "author_id": "u1", "text": "hi"}
    first = await social.add_comment(tenant, account.id, **fields)
    assert first is not None and first.status == "received"
    assert await social.add_comment(tenant, account.id, **fields) is None  # duplicate delivery

    claimed = await social.transition(tenant, first.id, ("received",), "processing")
    assert claimed is not None and claimed.status == "processing"
    assert await social.transition(tenant, first.id, ("received",), "processing") is None  # taken
    with pytest.raises(ValueError):
        await social.transition(tenant, first.id, ("processing",), "exploded")
    later = datetime.now(UTC) - timedelta(seconds=1)
    approved = await social.transition(
        tenant, first.id, ("processing",), "approved", reply_text="thanks!", next_attempt_at=later
    )
    assert approved is not None and approved.reply_text == "thanks!"
    assert [c.id for c in await social.due(datetime.now(UTC))] == [first.id]
    assert [c.id for c in await social.list_comments(tenant, status=["approved"])] == [first.id]
    assert await social.list_comments(other) == []
    assert await social.stale(("approved",), datetime.now(UTC) + timedelta(seconds=1))

    await social.log_delivery("meta", "accepted", delivery_id="d1", comments=1, new_comments=1)
    assert await social.seen_delivery("meta", "d1") and not await social.seen_delivery("x", "d1")
    assert (await social.deliveries())[0]["delivery_id"] == "d1"
    assert await social.trim_deliveries(timedelta(seconds=-1)) == 1


def test_replies_fit_the_platforms_limit() -> None:
    long = "word " * 100
    tweet = fit_reply("x", long)
    assert len(tweet) <= 280 and tweet.endswith("…") and not tweet.endswith(" …")
    assert fit_reply("instagram", long) == long.strip()
    assert fit_reply("x", "  short  ") == "short"
    assert len(fit_reply("x", "a" * 500)) == 280  # no space to cut at: a hard cut
