"""The comment pipeline: deliveries in, policy, the persona's reply, approval, replies out.

A webhook delivery (or a YouTube poll) is verified and parsed by its platform
module (integrations/social/meta.py, x.py, youtube.py), each comment routed to
its connected account and recorded once (the platform's comment id is the
deduplication key), and its processing started in the background: the
endpoint answers at once. The job applies the account's policy (own comments, ``off``, ignored
keywords, spam, moderation of the comment), makes the commenter a user of the
persona (``<platform>:<author id>``, so memory and sentiment follow them
across comments and DMs), gets the persona's reply through the normal
conversation path (its channel ``comments:<platform>``: memory, moderation of
the reply, analysis), then either sends it (``auto``) or queues it for an
operator (``approval``). Sending retries with exponential backoff on
retryable platform errors, never twice for one comment (state transitions are
atomic). Operators see everything on the operator channel (``ops:<tenant>``).
docs/integrations.md has the whole story.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import structlog

from agents.replies import finished_reply
from integrations.social.base import (
    CommentPoller,
    InboundComment,
    ReplyClient,
    ReplyError,
    WebhookError,
    WebhookReceiver,
)
from integrations.social.crypto import Vault
from integrations.social.policy import check_policy, fit_reply, quiet_until, why_ignored
from integrations.social.settings import SocialSettings
from memory.social_store import AccountRecord, CommentRecord, SocialStore

log = structlog.get_logger(__name__)


def ops_stream(tenant_id: str) -> str:
    return f"ops:{tenant_id}"


@dataclass
class Platforms:
    """The platform modules this server knows, by name."""

    receivers: dict[str, WebhookReceiver]
    repliers: dict[str, ReplyClient]  # by comment platform: instagram, facebook, x, youtube
    pollers: dict[str, CommentPoller]


class CommentService:
    def __init__(
        self,
        store: SocialStore,
        main_store: Any,
        events: Any,
        settings: SocialSettings,
        vault: Vault,
        platforms: Platforms,
        *,
        moderation: Any = None,
        hot: Any = None,
    ) -> None:
        self.store = store
        self.hot = hot  # memory.hotstate: poll locks and the quota counter across replicas
        self.owner = uuid.uuid4().hex
        self.main_store = main_store
        self.events = events
        self.settings = settings
        self.vault = vault
        self.platforms = platforms
        self.moderation = moderation
        self.conversations: Any = None  # agents.conversations.ConversationService, set after
        self._tasks: list[asyncio.Task[None]] = []
        self._running: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(4)

    # -- webhooks ------------------------------------------------------------------

    async def secrets_for(self, receiver: str, app_id: str | None) -> dict[str, str]:
        """Candidate secrets: a tenant app's (``?app=``), else the deployment-wide app's."""
        if app_id:
            found = await self.store.app_secrets(app_id)
            if found is None:
                return {}
            _tenant, platform, sealed = found
            if platform != receiver:
                return {}
            return {f"{k}:{app_id}": str(v) for k, v in self.vault.open(sealed).items()}
        s = self.settings
        out: dict[str, str] = {}
        if receiver == "meta":
            if s.meta_app_secret:
                out["app_secret:default"] = s.meta_app_secret.get_secret_value()
            if s.meta_verify_token:
                out["verify_token:default"] = s.meta_verify_token.get_secret_value()
        elif receiver == "x" and s.x_consumer_secret:
            out["consumer_secret:default"] = s.x_consumer_secret.get_secret_value()
        return out

    async def receive(
        self, name: str, raw: bytes, headers: Mapping[str, str], app_id: str | None
    ) -> dict[str, int]:
        """A webhook delivery: verified on the raw bytes, parsed, recorded, queued.

        Raises :class:`WebhookError` (nothing processed; the refusal is logged).
        """
        receiver = self.platforms.receivers[name]
        secrets = await self.secrets_for(name, app_id)
        try:
            if not secrets:
                raise WebhookError("bad_signature", f"no {name} app secret is configured")
            receiver.verify(raw, headers, secrets, datetime.now(UTC))
            comments = receiver.parse(raw)
        except WebhookError as exc:
            await self.store.log_delivery(name, "refused", code=exc.code, size=len(raw))
            raise
        delivery_id = receiver.delivery_id(raw, headers)
        if delivery_id and await self.store.seen_delivery(name, delivery_id):
            await self.store.log_delivery(
                name, "duplicate", delivery_id=delivery_id, comments=len(comments), size=len(raw)
            )
            return {"comments": len(comments), "new": 0}
        new = await self.ingest(comments)
        await self.store.log_delivery(
            name,
            "accepted",
            delivery_id=delivery_id,
            comments=len(comments),
            new_comments=new,
            size=len(raw),
        )
        return {"comments": len(comments), "new": new}

    async def ingest(self, comments: list[InboundComment]) -> int:
        """Record each routed comment once and queue its processing; how many were new."""
        new = 0
        for comment in comments:
            account = await self.store.route(comment.platform, comment.account_id)
            if account is None or not account.enabled:
                log.info(
                    "social_comment_unrouted", platform=comment.platform, account=comment.account_id
                )
                continue
            record = await self.store.add_comment(
                account.tenant_id,
                account.id,
                platform=comment.platform,
                comment_id=comment.comment_id,
                post_id=comment.post_id,
                parent_id=comment.parent_id,
                author_id=comment.author_id,
                author_name=comment.author_name[:200],
                author_is_account=comment.author_is_account,
                kind=comment.kind,
                text=comment.text,
                created_at=comment.created_at,
            )
            if record is None:
                continue  # seen before: a duplicate or replayed delivery
            new += 1
            await self._ops(record, "comment.received")
            self._spawn(self.process(record.tenant_id, record.id))
        return new

    def _spawn(self, work: Any) -> None:
        """Run in the background, a few at a time; the database keeps what is not done yet.

        Not a job: replying runs the conversation path (the model, the event
        log), which lives in ``salon serve``. If this process dies, the
        sweeper of any replica picks the comment up again (:meth:`sweep`).
        """

        async def bounded() -> None:
            async with self._slots:
                try:
                    await work
                except Exception:
                    log.exception("social_work_failed")

        task = asyncio.create_task(bounded())
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def drain(self) -> None:
        """Wait for the background work started so far (tests)."""
        while self._running:
            await asyncio.gather(*list(self._running), return_exceptions=True)

    # -- processing --------------------------------------------------------------------

    async def process(self, tenant_id: str, comment_pk: str) -> str:
        """Policy, reply, then send or queue for approval; returns the comment's new state."""
        comment = await self.store.transition(tenant_id, comment_pk, ("received",), "processing")
        if comment is None:  # another replica has it, or it is done
            found = await self.store.get_comment(tenant_id, comment_pk)
            return found.status if found else "missing"
        account = await self.store.get_account(tenant_id, comment.account_pk)
        if account is None:
            return await self._ignore(comment, "account_removed")
        policy = check_policy(account.policy)
        reason = why_ignored(comment, policy)
        if reason is not None:
            return await self._ignore(comment, reason)
        if self.moderation is not None:
            from agents.moderation.service import FlagContext

            verdict = await self.moderation.check_text(
                tenant_id, comment.text, FlagContext(account.persona_id, None, None)
            )
            if verdict.blocked:
                return await self._ignore(comment, "moderation")
        reply = await self._generate(account, comment)
        if reply is None:
            return "failed"
        if policy["mode"] == "approval":
            pending = await self.store.transition(
                tenant_id, comment.id, ("processing",), "pending", reply_text=reply
            )
            if pending is not None:
                await self._ops(pending, "reply.pending")
            return "pending"
        approved = await self.store.transition(
            tenant_id, comment.id, ("processing",), "approved", reply_text=reply, decided_by="auto"
        )
        if approved is None:
            return "processing"
        return await self.send(tenant_id, comment.id)

    async def _generate(self, account: AccountRecord, comment: CommentRecord) -> str | None:
        if self.conversations is None:
            raise RuntimeError("comment processing needs the conversation service")
        session = await self.conversations.open(
            account.tenant_id,
            persona=account.persona_id,
            user_external_id=f"{comment.platform}:{comment.author_id}",
            user_name=comment.author_name or None,
            channel=f"comments:{comment.platform}",
            reuse_latest=True,
        )
        conv_id = session.conversation.id
        start = await self.events.latest_seq(conv_id)
        message, _ = await self.conversations.submit(
            session, client_id=f"social:{comment.id}", text=comment.text
        )
        reply = await asyncio.wait_for(
            finished_reply(self.events, conv_id, start, message.id), timeout=300
        )
        await self.store.transition(
            account.tenant_id,
            comment.id,
            ("processing",),
            "processing",
            user_id=session.user.id,
            conversation_id=conv_id,
        )
        if not reply.ok or not reply.text.strip():
            failed = await self.store.transition(
                account.tenant_id,
                comment.id,
                ("processing",),
                "failed",
                error=f"{reply.error_code}: {reply.error}",
            )
            if failed is not None:
                await self._ops(failed, "reply.failed")
            return None
        return fit_reply(comment.platform, reply.text)

    async def _ignore(self, comment: CommentRecord, reason: str) -> str:
        ignored = await self.store.transition(
            comment.tenant_id, comment.id, ("processing",), "ignored", reason=reason
        )
        if ignored is not None:
            await self._ops(ignored, "comment.ignored")
        return "ignored"

    # -- sending ------------------------------------------------------------------------

    async def send(self, tenant_id: str, comment_pk: str) -> str:
        """Post an approved reply (at most once at a time); returns the comment's state."""
        comment = await self.store.get_comment(tenant_id, comment_pk)
        if comment is None:
            return "missing"
        account = await self.store.get_account(tenant_id, comment.account_pk)
        if account is None:
            return comment.status
        policy = check_policy(account.policy)
        now = datetime.now(UTC)
        later = quiet_until(policy, now)
        if later is None and policy["max_replies_per_hour"] is not None:
            sent = await self.store.sent_in_window(tenant_id, account.id, now - timedelta(hours=1))
            if sent >= policy["max_replies_per_hour"]:
                later = now + timedelta(minutes=5)
        if later is not None:  # quiet hours or the hourly limit: try again then
            await self.store.transition(
                tenant_id, comment.id, ("approved", "retrying"), "approved", next_attempt_at=later
            )
            return "approved"
        sending = await self.store.transition(
            tenant_id,
            comment.id,
            ("approved", "retrying"),
            "sending",
            attempts=comment.attempts + 1,
            next_attempt_at=None,
        )
        if sending is None:
            return comment.status  # another replica took it
        client = self.platforms.repliers.get(comment.platform)
        if client is None:
            return await self._send_failed(sending, f"no reply client for {comment.platform}")
        inbound = InboundComment(
            platform=comment.platform,
            account_id=account.account_id,
            comment_id=comment.comment_id,
            text=comment.text,
            author_id=comment.author_id,
            author_name=comment.author_name,
            post_id=comment.post_id,
            parent_id=comment.parent_id,
            kind=comment.kind,
        )
        if comment.platform == "youtube" and not await self.spend_quota("youtube", 50):
            # The day's quota is spent: try again in an hour (it resets at midnight Pacific).
            await self.store.transition(
                tenant_id,
                comment.id,
                ("sending",),
                "retrying",
                attempts=comment.attempts,
                error="rate_limited: the daily YouTube quota is spent",
                next_attempt_at=datetime.now(UTC) + timedelta(hours=1),
            )
            return "retrying"
        try:
            result = await client.reply(
                self.vault.open(account.credentials),
                inbound,
                sending.reply_text or "",
                idempotency_key=comment.id,
            )
        except ReplyError as exc:
            if exc.retryable and sending.attempts < self.settings.social_reply_attempts:
                base = self.settings.social_retry_base_seconds
                delay = exc.retry_after or min(3600.0, base * 2 ** (sending.attempts - 1))
                retrying = await self.store.transition(
                    tenant_id,
                    comment.id,
                    ("sending",),
                    "retrying",
                    error=f"{exc.code}: {exc.message}",
                    next_attempt_at=datetime.now(UTC) + timedelta(seconds=delay),
                )
                if retrying is not None:
                    await self._ops(retrying, "reply.retrying")
                return "retrying"
            return await self._send_failed(sending, f"{exc.code}: {exc.message}")
        done = await self.store.transition(
            tenant_id, comment.id, ("sending",), "sent", reply_id=result.reply_id, error=None
        )
        if done is not None:
            await self._ops(done, "reply.sent")
        return "sent"

    async def _send_failed(self, comment: CommentRecord, error: str) -> str:
        failed = await self.store.transition(
            comment.tenant_id, comment.id, ("sending",), "failed", error=error
        )
        if failed is not None:
            await self._ops(failed, "reply.failed")
        return "failed"

    async def sweep(self) -> int:
        """Start what is due: sends (retries, quiet hours over), and comments left behind.

        A comment still ``received`` after 30 s was never started (its
        replica died); one ``processing`` or ``sending`` for 10 minutes was
        abandoned mid-way and goes back to be started again (a reply that was
        in fact posted may then be posted twice: the platforms offer no
        idempotency key, docs/integrations.md).
        """
        now = datetime.now(UTC)
        started = 0
        for comment in await self.store.due(now):
            self._spawn(self.send(comment.tenant_id, comment.id))
            started += 1
        for comment in await self.store.stale(("received",), now - timedelta(seconds=30)):
            self._spawn(self.process(comment.tenant_id, comment.id))
            started += 1
        for comment in await self.store.stale(("processing",), now - timedelta(minutes=10)):
            await self.store.transition(comment.tenant_id, comment.id, ("processing",), "received")
        for comment in await self.store.stale(("sending",), now - timedelta(minutes=10)):
            await self.store.transition(
                comment.tenant_id, comment.id, ("sending",), "retrying", next_attempt_at=now
            )
        return started

    # -- operators ------------------------------------------------------------------------

    async def approve(
        self, tenant_id: str, comment_pk: str, operator: str, text: str | None = None
    ) -> CommentRecord | None:
        values: dict[str, Any] = {"decided_by": operator, "next_attempt_at": datetime.now(UTC)}
        if text is not None:
            values["reply_text"] = text
        approved = await self.store.transition(
            tenant_id, comment_pk, ("pending",), "approved", **values
        )
        if approved is not None:
            await self._ops(approved, "reply.approved")
            self._spawn(self.send(tenant_id, comment_pk))
        return approved

    async def edit(
        self, tenant_id: str, comment_pk: str, operator: str, text: str
    ) -> CommentRecord | None:
        edited = await self.store.transition(
            tenant_id, comment_pk, ("pending",), "pending", reply_text=text, decided_by=operator
        )
        if edited is not None:
            await self._ops(edited, "reply.edited")
        return edited

    async def reject(
        self, tenant_id: str, comment_pk: str, operator: str, reason: str | None
    ) -> CommentRecord | None:
        rejected = await self.store.transition(
            tenant_id,
            comment_pk,
            ("pending", "retrying", "failed"),
            "rejected",
            decided_by=operator,
            reason=(reason or "rejected")[:200],
        )
        if rejected is not None:
            await self._ops(rejected, "reply.rejected")
        return rejected

    async def _ops(self, comment: CommentRecord, event: str) -> None:
        try:
            await self.events.append(
                ops_stream(comment.tenant_id), {"type": event, "comment": comment.to_public()}
            )
        except Exception as exc:  # the record is stored; the live channel is best effort
            log.warning("social_ops_event_failed", event=event, error=repr(exc))

    # -- background: the YouTube poller and the retry sweeper ------------------------------

    def start(self, *, poll: bool, sweep_seconds: float = 5.0) -> None:
        self._tasks.append(asyncio.create_task(self._sweeper(sweep_seconds), name="social-sweep"))
        if poll and self.platforms.pollers:
            self._tasks.append(asyncio.create_task(self._poller(), name="social-poll"))

    async def _sweeper(self, every: float) -> None:
        last_trim = 0.0
        while True:
            await asyncio.sleep(every)
            try:
                await self.sweep()
                if time.monotonic() - last_trim > 3600:
                    last_trim = time.monotonic()
                    await self.store.trim_deliveries(
                        timedelta(hours=self.settings.social_dedupe_hours)
                    )
            except Exception as exc:
                log.warning("social_sweep_failed", error=repr(exc))

    async def _poller(self) -> None:
        while True:
            try:
                await self.poll_once()
            except Exception as exc:
                log.warning("social_poll_failed", error=repr(exc))
            await asyncio.sleep(self.settings.youtube_poll_seconds)

    async def poll_once(self) -> int:
        """Poll every due account of the polled platforms once; new comments.

        One replica polls a given account per interval (a hot-state lock), and
        the deployment's daily quota (``SALON_YOUTUBE_DAILY_QUOTA`` units) is
        counted across replicas: once spent, polling waits for the next day.
        An account whose poll fails is skipped this round; the others go on.
        """
        new = 0
        now = datetime.now(UTC)
        for name, poller in self.platforms.pollers.items():
            for account in await self.store.list_accounts(None, platform=name):
                if not account.enabled or (account.next_poll_at and account.next_poll_at > now):
                    continue
                if self.hot is not None and not await self.hot.acquire_lock(
                    f"social-poll:{account.id}",
                    self.owner,
                    self.settings.youtube_poll_seconds * 0.9,
                ):
                    continue  # another replica polls it this round
                if not await self.spend_quota(name, 1):
                    return new
                try:
                    result = await poller.poll(
                        self.vault.open(account.credentials), account.account_id, account.cursor
                    )
                except Exception as exc:
                    log.warning("social_poll_account_failed", account=account.id, error=repr(exc))
                    continue
                await self.spend_quota(name, max(0, result.quota_used - 1))
                added = await self.ingest(result.comments)
                new += added
                values: dict[str, Any] = {"cursor": result.cursor, "next_poll_at": None}
                if result.retry_after:
                    values["next_poll_at"] = now + timedelta(seconds=result.retry_after)
                await self.store.update_account(account.tenant_id, account.id, **values)
                await self.store.log_delivery(
                    name, "accepted", comments=len(result.comments), new_comments=added
                )
        return new

    async def spend_quota(self, platform: str, units: int) -> bool:
        """Count ``units`` of the platform's daily quota; False once it is spent."""
        if platform != "youtube" or self.hot is None or units <= 0:
            return True
        day = datetime.now(ZoneInfo("America/Los_Angeles")).date().isoformat()
        key = f"youtube-quota:{day}"
        for _ in range(units):  # hot-state counters count one at a time, across replicas
            if not await self.hot.hit(key, self.settings.youtube_daily_quota, 86_400):
                log.warning("youtube_daily_quota_spent", day=day)
                return False
        return True

    async def close(self) -> None:
        for task in [*self._tasks, *self._running]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        clients: list[ReplyClient | CommentPoller] = [
            *self.platforms.repliers.values(),
            *self.platforms.pollers.values(),
        ]
        for client in clients:
            with contextlib.suppress(Exception):
                await client.close()
