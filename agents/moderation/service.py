"""The moderation service: the conversation hook object and the flags queue.

:class:`ModerationService` is what ``hooks.moderation`` holds. The
conversation service calls it at four points:

- :meth:`check_input` before a message is stored (mask, or refuse it);
- :meth:`input_stored` once it is stored (flags get the message id);
- :meth:`filter_memories` on recalled memories before they reach the prompt;
- :meth:`output_filter` before a reply (None when the policy lets every reply
  through unchecked, so the turn engine pays nothing per delta) and
  :meth:`reply_finished` after it (flags, and a ``moderation.notice`` event).

Flags are stored (memory/moderation_store.py) and announced as
``moderation.flagged`` on the tenant's operator channel: the event-log stream
``ops:<tenant_id>`` (docs/moderation.md). Moderation never breaks a
conversation: a failure of its own storage is logged and the text passes.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from agents.moderation import injection, pii, profanity
from agents.moderation.policy import DEFAULT_POLICY, Policy, parse_policy
from agents.moderation.stream import Hit, OutputFilter
from agents.moderation.toxicity import ToxicityClassifier, ToxicityUnavailable
from agents.sessions import Session
from memory.moderation_store import FlagRecord, ModerationStore, NewFlag
from memory.records import MessageRecord

log = structlog.get_logger(__name__)

EXCERPT_CHARS = 500
BLOCKED = "moderation_blocked"
UNAVAILABLE = "moderation_unavailable"


def ops_stream(tenant_id: str) -> str:
    """The event-log stream of a tenant's operator channel."""
    return f"ops:{tenant_id}"


@dataclass
class InputVerdict:
    """What moderation decided about one message."""

    text: str  # what is stored and answered (masked where the policy masks)
    hits: list[Hit] = field(default_factory=list)
    blocked: bool = False
    code: str = ""
    message: str = ""
    original: str = ""


@dataclass(frozen=True)
class FlagContext:
    """Who a checked text came from, for the flag it may raise (any may be unknown)."""

    persona_id: str | None = None
    user_id: str | None = None
    conversation_id: str | None = None


class ModerationService:
    def __init__(
        self,
        store: ModerationStore,
        events: Any,
        *,
        classifier: ToxicityClassifier | None = None,
        policy_cache_seconds: float = 5.0,
    ) -> None:
        self.store = store
        self.events = events
        self.classifier = classifier
        self.policy_cache_seconds = policy_cache_seconds
        self._policies: dict[str, tuple[float, Policy]] = {}

    async def close(self) -> None:
        if self.classifier is not None:
            await self.classifier.close()

    # -- policy -----------------------------------------------------------------

    async def policy(self, tenant_id: str) -> Policy:
        """The tenant's policy, cached briefly (it is read for every message)."""
        cached = self._policies.get(tenant_id)
        now = time.monotonic()
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            stored = await self.store.get_policy(tenant_id)
            policy = parse_policy(stored) if stored is not None else DEFAULT_POLICY
        except Exception as exc:  # keep the last known policy rather than none
            log.warning("moderation_policy_unreadable", tenant_id=tenant_id, error=repr(exc))
            policy = cached[1] if cached is not None else DEFAULT_POLICY
        self._policies[tenant_id] = (now + self.policy_cache_seconds, policy)
        return policy

    async def set_policy(self, tenant_id: str, data: dict[str, Any]) -> Policy:
        """Validate and store a policy (raises PolicyError); effective here at once."""
        policy = parse_policy(data)
        await self.store.put_policy(tenant_id, policy.model_dump(mode="json"))
        self._policies[tenant_id] = (time.monotonic() + self.policy_cache_seconds, policy)
        return policy

    # -- input --------------------------------------------------------------------

    async def check_input(self, session: Session, text: str) -> InputVerdict:
        conv = session.conversation
        return await self.check_text(
            conv.tenant_id,
            text,
            FlagContext(conv.persona_id, conv.user_id, conv.id),
        )

    async def image_action(self, tenant_id: str) -> str:
        """What a generated image judged NSFW gets under the tenant's policy."""
        policy = await self.policy(tenant_id)
        return policy.images.nsfw if policy.enabled else "allow"

    async def check_text(self, tenant_id: str, text: str, context: FlagContext) -> InputVerdict:
        """The input checks on any text a person sends (a message, a media prompt)."""
        policy = await self.policy(tenant_id)
        verdict = InputVerdict(text=text, original=text)
        if not policy.enabled:
            return verdict
        out = text
        action = policy.injection.input
        if action != "allow":
            found = injection.detect(out)
            if found:
                verdict.hits.append(Hit("injection", action, found))
                if action == "mask":  # chat-template role markers lose their power
                    out = injection.strip_markers(out)
        action = policy.pii.input
        if action != "allow":
            spans = pii.find(out, policy.pii_kinds)
            if spans:
                verdict.hits.append(Hit("pii", action, sorted({s.kind for s in spans})))
                if action == "mask":
                    out = pii.redact(out, spans)
        action = policy.profanity.input
        if action != "allow":
            words = profanity.find(out)
            if words:
                verdict.hits.append(Hit("profanity", action))
                if action == "mask":
                    out = profanity.mask(out, words)
        action = policy.toxicity.input
        decided = any(h.action == "block" for h in verdict.hits)  # no need to ask the classifier
        if self.classifier is not None and action != "allow" and not decided:
            hit = await self._toxicity(policy, pii.mask(out, policy.pii_kinds), action)
            if hit is not None:
                verdict.hits.append(hit)
        verdict.text = out if out.strip() else "[removed]"  # never store an empty message
        block = next((h for h in verdict.hits if h.action == "block"), None)
        if block is not None:
            verdict.blocked = True
            unavailable = "unavailable" in block.kinds
            verdict.code = UNAVAILABLE if unavailable else BLOCKED
            verdict.message = (
                "the message could not be checked by moderation and was not accepted; "
                "send it again later"
                if unavailable
                else f"the message was not accepted by moderation ({block.category}); "
                "it was not stored"
            )
            await self._flag_in(tenant_id, context, "input", verdict.hits, text, message_id=None)
        return verdict

    async def input_stored(
        self, session: Session, verdict: InputVerdict, message: MessageRecord
    ) -> None:
        await self._flag(session, "input", verdict.hits, verdict.original, message_id=message.id)

    async def _toxicity(self, policy: Policy, text: str, action: str) -> Hit | None:
        assert self.classifier is not None
        try:
            result = await self.classifier.classify(text)
        except ToxicityUnavailable as exc:
            log.warning("toxicity_unavailable", error=str(exc), failure=policy.toxicity_failure)
            if policy.toxicity_failure == "closed":
                return Hit("toxicity", "block", ["unavailable"])
            return None
        if result.toxic(policy.toxicity_threshold):
            return Hit("toxicity", action, result.categories)
        return None

    # -- memories -------------------------------------------------------------------

    async def filter_memories(self, session: Session, memories: list[str]) -> list[str]:
        """Drop or neutralize recalled memories that read like instructions."""
        if not memories:
            return memories
        policy = await self.policy(session.conversation.tenant_id)
        action = policy.injection.memory if policy.enabled else "allow"
        if action == "allow":
            return memories
        kept: list[str] = []
        for text in memories:
            if not injection.detect(text):
                kept.append(text)
            elif action == "neutralize":
                kept.append(injection.neutralize(text))
            else:
                log.info("memory_dropped", conversation_id=session.conversation.id)
        return kept

    # -- output ---------------------------------------------------------------------

    async def output_filter(self, session: Session) -> OutputFilter | None:
        """A filter for the next reply, or None when the policy checks nothing on output."""
        policy = await self.policy(session.conversation.tenant_id)
        if not policy.output_active(self.classifier is not None):
            return None
        action = policy.toxicity.output
        final = (
            self._final_check(policy, action)
            if self.classifier is not None and action != "allow"
            else None
        )
        return OutputFilter(
            pii_action=policy.action("pii", "output"),
            pii_kinds=tuple(policy.pii_kinds),
            profanity_action=policy.action("profanity", "output"),
            final_check=final,
        )

    def _final_check(self, policy: Policy, action: str) -> Callable[[str], Awaitable[list[Hit]]]:
        async def check(text: str) -> list[Hit]:
            hit = await self._toxicity(policy, text, action)
            return [hit] if hit is not None else []

        return check

    async def reply_finished(
        self, session: Session, moderate: OutputFilter, result: Any, message_id: str
    ) -> None:
        """After a reply (before its final event): flags, and a notice if it was masked."""
        stored = bool(result.text) or result.status == "complete"
        conv = session.conversation
        if moderate.masked and stored:
            categories = sorted({h.category for h in moderate.hits if h.action == "mask"})
            try:
                await self.events.append(
                    conv.id,
                    {
                        "type": "moderation.notice",
                        "direction": "output",
                        "action": "mask",
                        "categories": categories,
                        "response_id": result.response_id,
                        "message_id": message_id,
                    },
                )
            except Exception as exc:
                log.warning("moderation_notice_failed", error=repr(exc))
        excerpt = result.text or moderate.excerpt()
        await self._flag(
            session, "output", moderate.hits, excerpt, message_id=message_id if stored else None
        )

    # -- flags ----------------------------------------------------------------------

    async def _flag(
        self,
        session: Session,
        direction: str,
        hits: list[Hit],
        text: str,
        *,
        message_id: str | None,
    ) -> FlagRecord | None:
        conv = session.conversation
        context = FlagContext(conv.persona_id, conv.user_id, conv.id)
        return await self._flag_in(
            conv.tenant_id, context, direction, hits, text, message_id=message_id
        )

    async def _flag_in(
        self,
        tenant_id: str,
        context: FlagContext,
        direction: str,
        hits: list[Hit],
        text: str,
        *,
        message_id: str | None,
    ) -> FlagRecord | None:
        """One flag for the flag/block hits of one text; announced on the operator channel."""
        # A classifier outage is not the person's doing: it is logged, not queued.
        review = [h for h in hits if h.action in ("flag", "block") and "unavailable" not in h.kinds]
        if not review:
            return None
        action = "block" if any(h.action == "block" for h in review) else "flag"
        details: dict[str, list[str]] = {}
        for h in review:  # one reply can trip a category several times
            details[h.category] = sorted({*details.get(h.category, []), *h.kinds})
        try:
            flag = await self.store.add_flag(
                tenant_id,
                NewFlag(
                    direction=direction,
                    categories=sorted({h.category for h in review}),
                    action=action,
                    # PII is never stored in the clear here, whatever the policy says.
                    excerpt=pii.mask(text)[:EXCERPT_CHARS],
                    persona_id=context.persona_id,
                    user_id=context.user_id,
                    conversation_id=context.conversation_id,
                    message_id=message_id,
                    details=details,
                ),
            )
        except Exception as exc:
            log.warning(
                "moderation_flag_failed", conversation_id=context.conversation_id, error=repr(exc)
            )
            return None
        try:
            await self.events.append(
                ops_stream(tenant_id), {"type": "moderation.flagged", "flag": flag.to_public()}
            )
        except Exception as exc:  # the flag is stored; the live channel is best effort
            log.warning("moderation_ops_event_failed", flag_id=flag.id, error=repr(exc))
        log.info("moderation_flagged", flag_id=flag.id, direction=direction, action=action)
        return flag
