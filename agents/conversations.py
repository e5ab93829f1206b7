"""Conversations: open a session, accept messages once, run replies, cancel them.

This is the logic every transport shares (WebSocket, OpenAI-compatible HTTP,
later comment webhooks). It writes every server event to the event log and
never sends anything itself: transports follow the log.

Replies run as tasks owned by this service, not by a socket, so a client that
drops mid-reply does not stop the reply; it reconnects and resumes from the log.
One conversation has at most one reply in flight — across replicas, through a
lock in the hot state; messages that arrive meanwhile wait, and the next reply
answers all of them together. A reply whose replica died is ended by another
replica (agents/recovery.py); a cancel reaches the replica that generates.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from typing import Any

import structlog

from agents import telemetry
from agents.llm.base import GenerationParams, LLMProvider
from agents.prompt import HistoryItem, assemble
from agents.recovery import (
    active_key,
    end_orphan_record,
    mark,
    never_answered,
    pending_key,
    recover_interrupted,
    reply_lock,
    report_failure,
    unmark,
)
from agents.reply_after import after_reply
from agents.reply_inputs import context_blocks, recalled_memories
from agents.reply_lock import ACTIVE_TTL_FACTOR, keep_lock, owns
from agents.runners import Pending, Runner, acknowledged
from agents.sessions import (
    ConversationHooks,
    Recall,
    Remember,
    Session,
    TurnSettings,
)
from agents.summaries import ConversationSummaries, uncovered
from agents.turns import Turn, TurnResult
from agents.voice import OutputFormat, ReplySpeaker, ReplyVoice, played_seconds
from memory.eventlog import AppendWindow, EventLog
from memory.hotstate import HotState, InProcessHotState
from memory.ids import new_id
from memory.records import ConversationRecord, MessageRecord
from memory.store import Store

log = structlog.get_logger(__name__)


class ConversationError(Exception):
    """A request the service refuses; ``code`` goes to the client as is."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class ConversationService:
    def __init__(
        self,
        store: Store,
        events: EventLog,
        provider: LLMProvider,
        settings: TurnSettings | None = None,
        *,
        hot: HotState | None = None,
        replica_id: str | None = None,
        recall: Recall | None = None,
        remember: Remember | None = None,
        summaries: ConversationSummaries | None = None,
        hooks: ConversationHooks | None = None,
        voice: ReplyVoice | None = None,
    ) -> None:
        self.store = store
        self.events = events
        self.provider = provider
        self.settings = settings or TurnSettings()
        self.hot = hot or InProcessHotState()
        self.recall = recall
        self.remember = remember
        self.summaries = summaries
        self.hooks = hooks or ConversationHooks()
        self.voice = voice  # speaks replies to audio sessions (agents/voice.py)
        self.replica_id = (
            replica_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        )
        self._runners: dict[str, Runner] = {}
        self._watched: dict[str, ConversationRecord] = {}
        self._background: list[asyncio.Task[None]] = []
        self._closing = False
        self._hook_tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Listen for cross-replica control messages and watch for orphaned replies."""
        self._background = [
            asyncio.create_task(self._control_loop(), name="conversation-control"),
            asyncio.create_task(self._watch_loop(), name="conversation-watch"),
        ]

    # -- sessions -----------------------------------------------------------

    async def open(
        self,
        tenant_id: str,
        *,
        persona: str,
        user_external_id: str,
        user_name: str | None = None,
        conversation_id: str | None = None,
        channel: str = "ws",
        reuse_latest: bool = False,
    ) -> Session:
        """Find or create the conversation of this user with this persona.

        ``conversation_id`` must name a conversation of this user and persona
        in this tenant; anything else is ``conversation_not_found`` (we do not
        tell a caller that another user's conversation exists).
        """
        persona_rec = await self.store.get_persona(tenant_id, persona)
        if persona_rec is None:
            raise ConversationError("unknown_persona", f"no persona {persona!r} in this tenant")
        conv: ConversationRecord | None
        if conversation_id:
            # Only look the user up: a failed resume must not create anyone.
            found = await self.store.find_user(tenant_id, user_external_id)
            conv = await self.store.get_conversation(tenant_id, conversation_id)
            if (
                found is None
                or conv is None
                or conv.user_id != found.id
                or conv.persona_id != persona_rec.id
            ):
                raise ConversationError(
                    "conversation_not_found", f"no conversation {conversation_id!r} for this user"
                )
            user = await self.store.get_or_create_user(tenant_id, user_external_id, user_name)
        else:
            user = await self.store.get_or_create_user(tenant_id, user_external_id, user_name)
            conv = None
            if reuse_latest:
                conv = await self.store.latest_conversation(
                    tenant_id, persona_id=persona_rec.id, user_id=user.id, channel=channel
                )
            if conv is None:
                conv = await self.store.create_conversation(
                    tenant_id, persona_id=persona_rec.id, user_id=user.id, channel=channel
                )
        await self.events.ensure_floor(conv.id, conv.last_seq)
        await self._check_active(conv)
        return Session(persona=persona_rec, user=user, conversation=conv)

    async def _recover(self, conv: ConversationRecord) -> bool:
        """End ``conv``'s reply if the replica writing it died (see agents/recovery.py)."""
        return await recover_interrupted(
            self.store,
            self.events,
            self.hot,
            conv,
            owner=f"{self.replica_id}:recover:{uuid.uuid4().hex[:8]}",
            lock_ttl=self.settings.lock_ttl_seconds,
        )

    def watch(self, conversation: ConversationRecord) -> None:
        """A socket here saw a reply start: if its replica dies, end the reply from here."""
        if conversation.id not in self._runners:
            self._watched[conversation.id] = conversation

    async def _check_active(self, conv: ConversationRecord) -> None:
        """End an orphaned reply now, or watch a live one on another replica until it ends."""
        if conv.id in self._runners:
            return
        await self._recover(conv)
        if await self.hot.get(active_key(conv.id)) is not None:
            self._watched[conv.id] = conv

    # -- messages -----------------------------------------------------------

    async def submit(
        self,
        session: Session,
        *,
        client_id: str | None,
        text: str,
        params: GenerationParams | None = None,
        instructions: str | None = None,
        audio: OutputFormat | bool | None = False,
    ) -> tuple[MessageRecord, bool]:
        """Store a user message and schedule a reply; a repeated ``client_id`` does nothing.

        Returns the stored message and whether it was new. For a new message
        ``message.accepted`` is appended to the log before this returns.
        """
        if self._closing:
            raise ConversationError("shutdown", "the server is shutting down")
        if not text.strip():
            raise ConversationError("invalid_message", "text must not be empty")
        if len(text) > self.settings.max_message_chars:
            raise ConversationError(
                "message_too_long",
                f"text is longer than {self.settings.max_message_chars} characters",
            )
        conv = session.conversation
        moderation = self.hooks.moderation  # agents/moderation: may mask or refuse the text
        verdict = await moderation.check_input(session, text) if moderation else None
        if verdict is not None:
            if verdict.blocked:  # not stored: the client gets the error with its id
                raise ConversationError(verdict.code, verdict.message)
            text = verdict.text
        # Stored, read whether an operator has taken over, and the reply marked
        # pending (under the id the message will have), all at once: the
        # pending mark is undone in the rare cases it was not wanted.
        message_id = new_id("msg")
        try:
            (message, created), paused, _ = await asyncio.gather(
                self.store.add_message(
                    conv.tenant_id,
                    conv.id,
                    role="user",
                    content=text,
                    client_id=client_id,
                    message_id=message_id,
                ),
                self._paused(conv.id),
                mark(self.hot, message_id, conv.id),
            )
            if self._closing:
                # Stored but not acknowledged: the client resends it after the
                # restart and the resend finds it never answered.
                raise ConversationError("shutdown", "the server is shutting down; send it again")
        except BaseException:
            await unmark(self.hot, message_id)  # else a resend would find it "pending"
            raise
        if paused or not created:
            # Taken over (an operator answers), or a resend of a stored message.
            await unmark(self.hot, message_id)
        if not created:
            if not await never_answered(self.store, self.hot, conv, message):
                return message, False
            if not paused:
                await mark(self.hot, message.id, conv.id)
        else:
            telemetry.MESSAGES.labels("user", conv.channel).inc()
        accepted: dict[str, Any] = {
            "type": "message.accepted",
            "message_id": message.id,
            "text": text,
        }
        if client_id is not None:
            accepted["id"] = client_id
        # Queued while acknowledged: the reply's lock is taken meanwhile (its
        # events still follow message.accepted: a log keeps submission order).
        try:
            logged = self.events.submit(conv.id, accepted)
        except BaseException:
            await unmark(self.hot, message.id)  # the resend must find it "never answered"
            raise
        if not paused:
            runner = self._runners.setdefault(conv.id, Runner(session=session))
            runner.pending.append(
                Pending(message, params, instructions, audio or False, accepted=logged)
            )
            if runner.task is None:
                runner.task = asyncio.create_task(self._run(conv.id), name=f"replies:{conv.id}")
        try:
            await asyncio.shield(logged)
        except BaseException:
            if logged.done() and not logged.cancelled() and logged.exception() is not None:
                await unmark(self.hot, message.id)  # not acknowledged: the reply drops it
            raise
        if created and verdict is not None and verdict.hits:
            await moderation.input_stored(session, verdict, message)
        self._after_message(session, message)
        return message, True

    async def _paused(self, conversation_id: str) -> bool:
        return self.hooks.paused is not None and await self.hooks.paused(conversation_id)

    def _after_message(self, session: Session, message: MessageRecord) -> None:
        """Run the after_message hooks in the background; a failing hook is logged."""

        async def run() -> None:
            for hook in self.hooks.after_message:
                try:
                    await hook(session, message)
                except Exception as exc:
                    log.warning("after_message_hook_failed", message_id=message.id, error=repr(exc))

        if self.hooks.after_message:
            task = asyncio.create_task(run(), name=f"after:{message.id}")
            self._hook_tasks.add(task)
            task.add_done_callback(self._hook_tasks.discard)

    async def cancel(
        self, conversation_id: str, reason: str = "cancelled", played_ms: int | None = None
    ) -> bool:
        """Stop the reply in flight, on whichever replica generates it; False if none.

        ``played_ms``: how much of a spoken reply the listener heard (it is stored up to there).
        """
        runner = self._runners.get(conversation_id)
        if runner is not None and runner.turn is not None:
            runner.turn.cancel(reason, played_seconds=played_seconds(played_ms))
            return True
        active = await self.hot.get(active_key(conversation_id))
        if active is not None:  # generated elsewhere: tell that replica, twice over
            request = {
                "response_id": active["response_id"],
                "reason": reason,
                "played_ms": played_ms,
            }
            # The record is polled by the owner's lock refresher (pub/sub can drop it).
            await self.hot.put(f"cancel:{conversation_id}", request, ttl_seconds=60)
            await self.hot.publish(
                "control", {"action": "cancel", "conversation_id": conversation_id, **request}
            )
            return True
        if runner is not None and (runner.preparing or runner.pending):
            runner.cancel_reason = reason  # the reply is about to start
            return True
        return False

    async def replying(self, conversation_id: str) -> bool:
        runner = self._runners.get(conversation_id)
        if runner is not None and runner.turn is not None:
            return True
        return await self.hot.get(active_key(conversation_id)) is not None

    async def shutdown(self, timeout: float = 10.0) -> None:
        """Refuse new messages; end replies in flight with ``error`` code ``shutdown``."""
        self._closing = True
        for task in self._background:
            task.cancel()
        for conv_id, runner in list(self._runners.items()):
            dropped, runner.pending = runner.pending, []
            if dropped:  # queued, never started: say so (a resend after restart is answered)
                await self._fail_batch(
                    conv_id, dropped, "shutdown", "the server is shutting down; send again later"
                )
            runner.cancel_reason = "shutdown"
            if runner.turn is not None:
                runner.turn.cancel("shutdown")
        tasks = [r.task for r in self._runners.values() if r.task is not None]
        if tasks:
            _, stuck = await asyncio.wait(tasks, timeout=timeout)
            for task in stuck:
                task.cancel()
            await asyncio.gather(*stuck, return_exceptions=True)

    async def _control_loop(self) -> None:
        async for message in self.hot.subscribe("control"):
            if message.get("action") == "cancel":
                runner = self._runners.get(str(message.get("conversation_id")))
                if runner is not None and runner.turn is not None:
                    if message.get("response_id") in (None, runner.turn.response_id):
                        played = played_seconds(message.get("played_ms"))
                        runner.turn.cancel(
                            str(message.get("reason") or "cancelled"), played_seconds=played
                        )

    async def _watch_loop(self) -> None:
        """Conversations opened here whose reply runs elsewhere: end it if that replica dies."""
        while True:
            await asyncio.sleep(max(0.2, self.settings.lock_ttl_seconds / 4))
            for conv_id, conv in list(self._watched.items()):
                try:
                    await self._recover(conv)
                    if await self.hot.get(active_key(conv_id)) is None:
                        self._watched.pop(conv_id, None)
                except Exception as exc:  # the hot state may be down; try again later
                    log.warning("watch_failed", conversation_id=conv_id, error=repr(exc))

    # -- replies ------------------------------------------------------------

    async def _run(self, conversation_id: str) -> None:
        runner = self._runners[conversation_id]
        try:
            while runner.pending and not self._closing:
                batch, runner.pending = runner.pending, []
                runner.preparing = True
                try:  # unmarks the batch's messages as it releases the lock
                    await self._locked_reply(runner, batch)
                except Exception as exc:
                    log.exception("reply_failed", conversation_id=conversation_id)
                    await self._fail_batch(  # unmarks them too
                        conversation_id,
                        batch,
                        "reply_failed",
                        f"the reply could not be produced ({type(exc).__name__}); "
                        "your message is kept, send another to try again",
                    )
                except BaseException:  # cancelled, maybe before the lock was taken
                    for item in batch:
                        await unmark(self.hot, item.message.id)
                    raise
                finally:
                    runner.preparing = False
                    runner.cancel_reason = None
        finally:
            runner.task = None
            runner.turn = None
            if not runner.pending:
                self._runners.pop(conversation_id, None)

    async def _fail_batch(
        self, conversation_id: str, batch: list[Pending], code: str, message: str
    ) -> None:
        ids = [p.message.id for p in batch]
        await report_failure(self.events, self.hot, conversation_id, ids, code, message)

    async def _locked_reply(self, runner: Runner, batch: list[Pending]) -> None:
        """Wait for the conversation's reply lock (another replica may hold it), then reply."""
        conv = runner.session.conversation
        ttl = self.settings.lock_ttl_seconds
        lock = reply_lock(conv.id)
        token = f"{self.replica_id}:{uuid.uuid4().hex[:8]}"  # this reply's alone
        while True:
            # The active record is read with the lock taken, in the same round trip.
            taken, orphan = await self.hot.acquire_lock_and_get(
                lock, token, ttl, active_key(conv.id)
            )
            if taken:
                break
            if self._closing:
                await self._fail_batch(
                    conv.id, batch, "shutdown", "the server is shutting down; send again later"
                )
                return
            await self._recover(conv)
            await asyncio.sleep(0.05)
        runner.lock_token = token
        refresher = asyncio.create_task(keep_lock(self.hot, runner, lock, token, ttl))
        try:
            # We hold the lock; an active record left now belongs to a replica that
            # died (it lost the lock): end that reply before starting ours.
            await end_orphan_record(self.store, self.events, self.hot, conv, orphan)
            answered = await acknowledged(batch)
            if answered:
                await self._reply(runner, answered)
        finally:
            refresher.cancel()
            runner.lock_token = None
            # One round trip: the lock and the active record (if still ours),
            # and the messages' pending marks (either way).
            marks = [pending_key(p.message.id) for p in batch]
            with contextlib.suppress(Exception):
                await self.hot.release_lock(
                    lock, token, owned_records=[active_key(conv.id)], records=marks
                )

    async def _reply(self, runner: Runner, batch: list[Pending]) -> TurnResult:
        session = runner.session
        conv = session.conversation
        params = next((p.params for p in reversed(batch) if p.params), None) or GenerationParams(
            max_tokens=self.settings.max_reply_tokens, temperature=self.settings.temperature
        )
        instructions = next((p.instructions for p in reversed(batch) if p.instructions), None)
        query = batch[-1].message.content
        response_id = new_id("resp")
        message_id = new_id("msg")
        ttl = self.settings.lock_ttl_seconds
        # The active record names the reply before its first event (if this
        # replica dies, another ends the reply from it). `after`: the reply's
        # events all come after its messages' message.accepted.
        active = {
            "response_id": response_id,
            "message_id": message_id,
            "owner": runner.lock_token or self.replica_id,
            "after": min(p.accepted_seq for p in batch),
        }
        # Independent reads, overlapped, and the record written meanwhile: the
        # time before the first token is the slowest of them, not their sum
        # (recall, summary and context hooks are each bounded by their own timeouts).
        history, memories, summary, context, _ = await asyncio.gather(
            self.store.list_messages(conv.tenant_id, conv.id, limit=self.settings.history_messages),
            recalled_memories(self.recall, self.hooks, session, query),
            self.summaries.latest(conv.tenant_id, conv.persona_id, conv.user_id, conv.id)
            if self.summaries
            else asyncio.sleep(0, None),
            context_blocks(self.hooks, session, query),
            self.hot.put(active_key(conv.id), active, ttl_seconds=ACTIVE_TTL_FACTOR * ttl),
        )
        moderation = self.hooks.moderation
        # Turns the summary covers are in it: the prompt starts after them.
        items = uncovered([HistoryItem(m.role, m.content, m.id) for m in history], summary)
        prompt = assemble(
            session.persona.data,
            items,
            user_name=session.user.name or session.user.external_id,
            context_window=self.provider.capabilities.context_window,
            reply_tokens=params.max_tokens,
            count_tokens=self.provider.count_tokens,
            extra_instructions="\n\n".join([*context, *([instructions] if instructions else [])]),
            memories=memories,
            summary=summary.text if summary else None,
        )
        messages = prompt.messages
        fold_upto = None  # asked for after the reply: folding never delays one
        if self.summaries is not None:
            fold_upto = self.summaries.plan(items, prompt, self.settings.history_messages)

        # The reply's events are stored in order without waiting for each: a
        # remote log's round trip per token no longer paces the stream.
        window = AppendWindow(self.events, conv.id)

        async def emit(event: dict[str, Any]) -> None:
            await window.put(event)
            if speech is not None and event["type"] == "response.text.delta":
                speech.feed(event["delta"])  # speak what is shown

        speech: ReplySpeaker | None = None
        if self.voice is not None and any(p.audio for p in batch):
            fmt, tenant = next(p.audio for p in reversed(batch) if p.audio), conv.tenant_id
            speech = self.voice.speaker(session.persona.data, response_id, emit, fmt, tenant)
        turn = Turn(
            self.provider,
            response_id=response_id,
            messages=messages,
            params=params,
            coalesce_seconds=self.settings.coalesce_seconds,
            created_fields={"reply_to": [p.message.id for p in batch]},
            moderate=await moderation.output_filter(session) if moderation else None,
            speech=speech,
        )
        runner.turn = turn
        runner.preparing = False
        if self._closing:
            turn.cancel("shutdown")
        elif runner.cancel_reason is not None:
            turn.cancel(runner.cancel_reason)
        runner.cancel_reason = None
        runner.active = active

        async def finish(result: TurnResult) -> str | None:
            # Every event so far is in the log before the reply is stored (a
            # failed append fails the reply here, as it would have mid-stream).
            await window.drain()
            token = runner.lock_token
            if token is not None and not await owns(self.hot, reply_lock(conv.id), token, ttl):
                return None  # taken over: another replica ended this reply
            # The reply is stored before its final event is sent, so a client
            # that sees response.done can always find the message in history.
            if result.text or result.status == "complete":
                stored, _ = await self.store.add_message(
                    conv.tenant_id,
                    conv.id,
                    role="assistant",
                    content=result.text,
                    status=result.status,
                    response_id=result.response_id,
                    message_id=message_id,
                )
                telemetry.MESSAGES.labels("assistant", conv.channel).inc()
                self._after_message(session, stored)
            if turn.moderate is not None:  # flags, and a notice when the reply was masked
                await moderation.reply_finished(session, turn.moderate, result, message_id)
            # Gone before the final event is sent: a client that has seen the
            # final event never finds this reply "still active".
            await self.hot.delete(active_key(conv.id))
            return message_id

        try:
            result = await turn.run(emit, finish)
            await window.drain()  # the final event too, before the lock is released
        finally:
            runner.turn = None
            runner.active = None
            if speech is not None:  # a reply that failed mid-way leaves no speaker running
                await speech.close()
            if window.last_seq:  # what was stored, without asking the log
                with contextlib.suppress(Exception):
                    await self.store.record_last_seq(conv.tenant_id, conv.id, window.last_seq)
        await after_reply(
            session,
            batch,
            message_id,
            result,
            remember=self.remember,
            summaries=self.summaries,
            fold_upto=fold_upto,
            hot=self.hot,
            replica_id=self.replica_id,
        )
        log.info(
            "reply_finished",
            conversation_id=conv.id,
            response_id=response_id,
            status=result.status,
            pieces=result.pieces,
        )
        return result
