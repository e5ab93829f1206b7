"""Rolling summaries: the oldest turns of a conversation are folded into a summary before they fall out.

A reply's prompt holds the latest summary of the conversation plus the recent
turns after it (agents/prompt.py). After each reply the conversation service
asks :func:`plan_fold` whether the uncovered history has grown past
``trigger_fraction`` of the room it has (tokens, or the number of messages the
service loads); if so the oldest turns, all but the newest ``keep_fraction``,
are folded into the summary by the ``memory.summarize`` job, in the background.
A reply never waits for a summary: it uses the one that exists, and at worst
the oldest turns are left out (as before summaries existed) until the job ends.

A summary is a ``memories`` row of kind ``summary`` of the conversation's
persona and user, with ``source_refs`` ``conversation:<id>`` (which
conversation) and ``through:<message id>`` (the last message it covers, where
the next fold continues). Each fold **supersedes** the previous version, and
``source_message_ids`` of a version are the messages that fold added: the
whole coverage is the union along the ``superseded_by`` chain. Summaries are
recalled like any memory, so other conversations with the persona find them.

Summarizer: the configured LLM, asked to rewrite the summary with the new
messages. The embedded model (135M parameters) cannot summarize, so it, and any
LLM failure, timeout or empty answer, falls back to :func:`extractive_summary`,
which is deterministic and never fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from agents.llm.base import ChatMessage, GenerationParams, LLMProvider
from agents.prompt import HistoryItem, Prompt
from memory.embeddings.base import Embedder
from memory.hotstate import HotState
from memory.memories import MemoryRecord, MemoryStore
from memory.records import MessageRecord
from memory.store import Store

log = structlog.get_logger(__name__)

SUMMARY_JOB = "memory.summarize"
CONVERSATION_REF = "conversation:"
THROUGH_REF = "through:"
PAGE = 200  # messages read per query while looking for the summary's cursor

# (kind, args, job_id) -> job id; JobRunner.enqueue, or a test's stand-in
Enqueue = Callable[..., Awaitable[Any]]


@dataclass
class SummarySettings:
    """When to fold, how long a summary may be, and how long anything may take."""

    enabled: bool = True
    # Fold when the uncovered history passes this share of its room (tokens or messages) ...
    trigger_fraction: float = 0.75
    # ... keeping the newest turns that fill this share, so folds are not every reply.
    keep_fraction: float = 0.5
    max_tokens: int = 400  # the summary's own length
    chunk_tokens: int = 3000  # messages folded per LLM call (a long backlog takes several)
    llm_timeout_seconds: float = 60.0
    load_timeout_seconds: float = 1.0  # reading the summary inside the reply path
    # One fold request per conversation per this many seconds (across replicas).
    request_interval_seconds: float = 30.0
    job_timeout_seconds: float = 300.0


@dataclass(frozen=True)
class RollingSummary:
    """The live summary of one conversation."""

    id: str
    conversation_id: str
    text: str
    through: str | None  # the last message id it covers
    source_message_ids: tuple[str, ...]  # the messages the latest fold added

    @classmethod
    def of(cls, record: MemoryRecord) -> RollingSummary:
        refs = record.source_refs
        return cls(
            id=record.id,
            conversation_id=_ref(refs, CONVERSATION_REF) or "",
            text=record.text,
            through=_ref(refs, THROUGH_REF),
            source_message_ids=record.source_message_ids,
        )


def uncovered(history: Sequence[HistoryItem], summary: RollingSummary | None) -> list[HistoryItem]:
    """The part of ``history`` (oldest first) after the last message ``summary`` covers.

    A cursor that is not in ``history`` is older than all of it (the service
    loads only the newest messages), so everything is uncovered.
    """
    items = list(history)
    if summary is None or summary.through is None:
        return items
    for i, item in enumerate(items):
        if item.id == summary.through:
            return items[i + 1 :]
    return items


def plan_fold(
    history: Sequence[HistoryItem],
    prompt: Prompt,
    *,
    max_messages: int,
    settings: SummarySettings,
) -> str | None:
    """The id of the newest message to fold into the summary now, or ``None`` (no fold yet).

    ``history`` is what was given to :func:`agents.prompt.assemble` (the
    uncovered turns) and ``prompt`` what it made of it. A fold is due when
    turns were left out, or when the turns take more than ``trigger_fraction``
    of the history's token room or of ``max_messages``. Then everything but
    the newest turns that fit in ``keep_fraction`` of both is folded (at least
    the newest two messages stay: the reply being written answers them).
    """
    counted = [(item, cost) for item, cost in zip(history, prompt.costs, strict=True) if item.id]
    if len(counted) < 3:
        return None
    room = max(1, prompt.history_budget)
    tokens = sum(cost for _, cost in counted)
    dropped = prompt.kept < len(history)
    if not (
        dropped
        or tokens > settings.trigger_fraction * room
        or len(counted) > settings.trigger_fraction * max_messages
    ):
        return None
    keep_tokens = settings.keep_fraction * room
    keep_messages = max(2, math.floor(settings.keep_fraction * max_messages))
    kept = spent = 0
    for _, cost in reversed(counted):
        if kept >= 2 and (kept + 1 > keep_messages or spent + cost > keep_tokens):
            break
        kept += 1
        spent += cost
    if kept >= len(counted):
        return None
    return counted[len(counted) - kept - 1][0].id


# -- the extractive fallback -------------------------------------------------------

_SENTENCE = re.compile(r"(?<=[.!?…])\s+|\n+")
_WORD = re.compile(r"[^\W\d_][\w'-]*|\d+", re.UNICODE)
_STOPWORDS = frozenset(
    "the and for are but not you your yours with this that these those was were have has had "
    "its it's from they them their there here what when where which who whom why how all any "
    "can could would should will just than then too very also about into over out off our ours "
    "she her hers him his himself herself myself yourself been being does did doing done some "
    "such only own same once more most other each few both again further while because until "
    "okay yes yeah well really like know think going get got let let's sure thanks thank".split()
)
_FIRST_PERSON = re.compile(r"\b(i|i'm|i've|i'd|i'll|my|mine|me|we|our)\b", re.IGNORECASE)
_LINE_CHARS = 300  # one note of the summary at most (a wall of text becomes its opening)
_OLD_LINE_WEIGHT = 0.9  # what a note already in the summary keeps of its score (newer wins ties)


def extractive_summary(
    previous: str,
    messages: Sequence[tuple[str, str]],
    *,
    max_tokens: int,
    count_tokens: Callable[[str], int] | None = None,
    user_speaker: str | None = None,
) -> str:
    """Fold ``messages`` (``(speaker, text)``, oldest first) into ``previous``, without a model.

    Each sentence is a candidate note ``- speaker: sentence``; the notes of
    ``previous`` compete with them. A note scores by how much it shares the
    content words that recur in the whole pool (what the conversation is
    about), plus a bonus when ``user_speaker`` says something about themself
    ("I", "my": the facts worth keeping) and for names and numbers, minus a
    penalty for tiny sentences. The best notes that fit ``max_tokens`` are
    kept, in the order they were said. Deterministic; never raises.
    """
    count = count_tokens or _approx_tokens
    pool: list[tuple[str, str | None, bool]] = []  # (note, speaker, from the old summary)
    seen: set[str] = set()
    for line in previous.splitlines():
        note = line.strip()
        if note and note.casefold() not in seen:
            seen.add(note.casefold())
            pool.append((note if note.startswith("- ") else f"- {note}", None, True))
    for speaker, text in messages:
        for sentence in _SENTENCE.split(text or ""):
            sentence = " ".join(sentence.split())
            if not _WORD.search(sentence):
                continue
            note = f"- {speaker}: {_clip(sentence)}"
            if note.casefold() not in seen:
                seen.add(note.casefold())
                pool.append((note, speaker, False))
    if not pool:
        return previous.strip()
    words = [_content_words(note) for note, _, _ in pool]
    freq: dict[str, int] = {}
    for ws in words:
        for w in set(ws):
            freq[w] = freq.get(w, 0) + 1
    raw = [sum(freq[w] - 1 for w in set(ws)) / math.sqrt(len(set(ws)) or 1) for ws in words]
    top = max(raw) or 1.0
    scores = []
    for (text, who, old), topical, ws in zip(pool, raw, words, strict=True):
        body = text.split(": ", 1)[-1] if who else text[2:]
        score = topical / top
        if who is not None and who == user_speaker and _FIRST_PERSON.search(body):
            score += 1.0
        score += 0.25 * min(2, len(_specifics(body)))
        if len(body.split()) < 4:
            score -= 1.0
        if not ws:
            score -= 1.0
        scores.append(score * (_OLD_LINE_WEIGHT if old else 1.0))
    order = sorted(range(len(pool)), key=lambda i: (-round(scores[i], 9), -i))
    chosen: set[int] = set()
    spent = 0
    for i in order:
        cost = count(pool[i][0]) + 1
        if spent + cost > max_tokens:
            continue  # a shorter note further down may still fit
        chosen.add(i)
        spent += cost
    if not chosen:  # even the best note is too long: keep its opening
        best = order[0]
        chosen.add(best)
        pool[best] = (pool[best][0][: max(8, max_tokens * 3)], pool[best][1], pool[best][2])
    return "\n".join(pool[i][0] for i in sorted(chosen))


def _content_words(text: str) -> list[str]:
    return [
        w for w in (m.group(0).casefold() for m in _WORD.finditer(text))
        if len(w) >= 3 and w not in _STOPWORDS and not w.isdigit()
    ]  # fmt: skip


def _specifics(text: str) -> list[str]:
    """Numbers and capitalized words after the first: names, places, dates."""
    tokens = text.split()
    return [
        t for i, t in enumerate(tokens)
        if any(c.isdigit() for c in t) or (i > 0 and t[:1].isupper() and t.upper() != t)
    ]  # fmt: skip


def _clip(sentence: str) -> str:
    if len(sentence) <= _LINE_CHARS:
        return sentence
    cut = sentence[:_LINE_CHARS].rsplit(" ", 1)[0]
    return cut + "…"


def _approx_tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4))


def _ref(refs: Sequence[str], prefix: str) -> str | None:
    return next((r[len(prefix) :] for r in refs if r.startswith(prefix)), None)


# -- the service ------------------------------------------------------------------


class SummaryService:
    """Reads and writes rolling summaries; :meth:`summarize` is the job's body."""

    def __init__(
        self,
        store: Store,
        memories: MemoryStore,
        provider: LLMProvider | None,
        settings: SummarySettings | None = None,
        *,
        embedder: Embedder | None = None,
    ) -> None:
        self.store = store
        self.memories = memories
        self.provider = provider
        self.settings = settings or SummarySettings()
        self.embedder = embedder

    async def latest(
        self, tenant_id: str, persona_id: str, user_id: str, conversation_id: str
    ) -> RollingSummary | None:
        """The live summary of the conversation, if it has one."""
        # One live summary per conversation of this persona and user, found by its
        # conversation ref in SQL (not by reading every summary of the pair per reply).
        record = await self.memories.live_summary(
            tenant_id, persona_id, user_id, CONVERSATION_REF + conversation_id
        )
        return RollingSummary.of(record) if record else None

    async def summarize(
        self,
        tenant_id: str,
        *,
        persona_id: str,
        user_id: str,
        conversation_id: str,
        upto: str,
        user_name: str,
        persona_name: str,
    ) -> dict[str, Any]:
        """Fold the messages after the summary's cursor, through ``upto``, into the summary."""
        current = await self.latest(tenant_id, persona_id, user_id, conversation_id)
        after = current.through if current else None
        pending = await self._messages_between(tenant_id, conversation_id, after, upto)
        if not pending:
            return {"folded": 0, "summary_id": current.id if current else None}
        user_roles = {"user": user_name, "assistant": persona_name}
        lines = [
            (user_roles.get(m.role, m.role), m.content)
            for m in pending
            if m.content.strip() and m.role in user_roles
        ]
        text = current.text if current else ""
        method = "none"
        for chunk in self._chunks(lines):
            text, method = await self._fold(text, chunk, user_name, persona_name)
        if not text.strip():  # nothing worth a note (empty turns): still move the cursor
            text = f"- {len(pending)} earlier messages with nothing to note."
        refs = (CONVERSATION_REF + conversation_id, THROUGH_REF + pending[-1].id)
        ids = tuple(m.id for m in pending)
        embedding = await self._embed(text)
        model = self.embedder.model if embedding is not None and self.embedder else None
        record: MemoryRecord | None = None
        if current is not None:
            record = await self.memories.supersede(
                tenant_id,
                current.id,
                text=text,
                source_message_ids=ids,
                source_refs=refs,
                embedding=embedding,
                embedding_model=model,
            )
        if record is None:  # the first summary (or the old one was deleted meanwhile)
            record = await self.memories.add(
                tenant_id,
                persona_id=persona_id,
                user_id=user_id,
                text=text,
                kind="summary",
                importance=0.6,
                source_message_ids=ids,
                source_refs=refs,
                embedding=embedding,
                embedding_model=model,
            )
        log.info(
            "summary_folded",
            conversation_id=conversation_id,
            messages=len(pending),
            method=method,
            summary_id=record.id,
        )
        return {"folded": len(pending), "summary_id": record.id, "method": method}

    async def _messages_between(
        self, tenant_id: str, conversation_id: str, after: str | None, upto: str
    ) -> list[MessageRecord]:
        """Messages after ``after`` (exclusive) through ``upto`` (inclusive), oldest first."""
        newest_first: list[list[MessageRecord]] = []
        before: str | None = None
        while True:
            page = await self.store.list_messages(
                tenant_id, conversation_id, limit=PAGE, before=before
            )
            newest_first.append(page)
            if len(page) < PAGE or any(m.id == after for m in page):
                break
            before = page[0].id
        messages = [m for page in reversed(newest_first) for m in page]
        ids = [m.id for m in messages]
        if upto not in ids:
            return []  # deleted meanwhile: nothing to fold
        start = ids.index(after) + 1 if after in ids else 0
        return messages[start : ids.index(upto) + 1]

    def _chunks(self, lines: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
        limit = self.settings.chunk_tokens
        if self.provider is not None:  # the chunk, the summary and the answer must fit
            limit = min(limit, self.provider.capabilities.context_window // 2)
        chunks: list[list[tuple[str, str]]] = [[]]
        spent = 0
        for speaker, text in lines:
            cost = _approx_tokens(text) + 4
            if chunks[-1] and spent + cost > limit:
                chunks.append([])
                spent = 0
            chunks[-1].append((speaker, text))
            spent += cost
        return [c for c in chunks if c]

    async def _fold(
        self, previous: str, lines: list[tuple[str, str]], user_name: str, persona_name: str
    ) -> tuple[str, str]:
        """The new summary and how it was made (``llm`` or ``extractive``)."""
        provider = self.provider
        if provider is not None and not provider.capabilities.local:
            try:
                text = await asyncio.wait_for(
                    self._ask_llm(provider, previous, lines, user_name, persona_name),
                    self.settings.llm_timeout_seconds,
                )
                if len(text.strip()) >= 8:
                    return text.strip(), "llm"
                log.warning("summary_llm_empty")
            except Exception as exc:  # the fallback below never fails
                log.warning("summary_llm_failed", error=repr(exc))
        return (
            extractive_summary(
                previous,
                lines,
                max_tokens=self.settings.max_tokens,
                count_tokens=provider.count_tokens if provider else None,
                user_speaker=user_name,
            ),
            "extractive",
        )

    async def _ask_llm(
        self,
        provider: LLMProvider,
        previous: str,
        lines: list[tuple[str, str]],
        user_name: str,
        persona_name: str,
    ) -> str:
        words = max(30, self.settings.max_tokens * 3 // 4)
        transcript = "\n".join(f"{speaker}: {text}" for speaker, text in lines)
        messages = [
            ChatMessage(
                "system",
                f"You keep a running summary of a conversation between {persona_name} and "
                f"{user_name}. Write short third-person notes, one per line starting with "
                f"'- '. Keep names, facts about {user_name}, plans, promises, decisions and "
                "open questions; leave out small talk. Reply with the summary only.",
            ),
            ChatMessage(
                "user",
                f"Summary so far:\n{previous or '(none yet)'}\n\n"
                f"New messages:\n{transcript}\n\n"
                f"Write the updated summary, at most {words} words.",
            ),
        ]
        params = GenerationParams(max_tokens=self.settings.max_tokens, temperature=0.2)
        pieces: list[str] = []
        stream = provider.stream(messages, params)
        async with contextlib.aclosing(stream):  # type: ignore[type-var]
            async for piece in stream:
                pieces.append(piece)
        return "".join(pieces)

    async def _embed(self, text: str) -> list[float] | None:
        if self.embedder is None:
            return None
        try:
            return list(await self.embedder.embed_one(text))
        except Exception as exc:  # keyword recall still finds it
            log.warning("summary_embedding_failed", error=repr(exc))
            return None


class ConversationSummaries:
    """What the conversation service uses: the latest summary, and asking for a fold.

    Reading is bounded by ``load_timeout_seconds`` and never raises (a reply
    goes on without the summary); a fold is a job (``enqueue``), so it runs on
    whichever replica or worker takes it.
    """

    def __init__(self, service: SummaryService, enqueue: Enqueue) -> None:
        self.service = service
        self.settings = service.settings
        self._enqueue = enqueue

    async def latest(
        self, tenant_id: str, persona_id: str, user_id: str, conversation_id: str
    ) -> RollingSummary | None:
        """The conversation's live summary; ``None`` when it has none or it cannot be read now."""
        if not self.settings.enabled:
            return None
        try:
            return await asyncio.wait_for(
                self.service.latest(tenant_id, persona_id, user_id, conversation_id),
                self.settings.load_timeout_seconds,
            )
        except Exception as exc:  # a reply never waits for, or fails on, a summary
            log.warning("summary_load_failed", conversation_id=conversation_id, error=repr(exc))
            return None

    def plan(self, history: Sequence[HistoryItem], prompt: Prompt, max_messages: int) -> str | None:
        """:func:`plan_fold` with these settings (``None`` when summaries are off)."""
        if not self.settings.enabled:
            return None
        return plan_fold(history, prompt, max_messages=max_messages, settings=self.settings)

    async def request(
        self,
        hot: HotState | None,
        owner: str,
        *,
        tenant_id: str,
        persona_id: str,
        user_id: str,
        conversation_id: str,
        upto: str,
        user_name: str,
        persona_name: str,
    ) -> None:
        """Queue a fold through message ``upto``; never raises.

        With ``hot``, at most one request per conversation per
        ``request_interval_seconds`` across replicas (a lock left to expire):
        a fold takes a while, and every reply meanwhile would ask again. The
        same request twice is queued once anyway (the job id names it).
        """
        # A token of this request alone: a lock is re-entrant for its owner, so the
        # replica's id would let every reply of this replica through.
        token = f"{owner}:{uuid.uuid4().hex[:8]}"
        try:
            if hot is not None and not await hot.acquire_lock(
                f"summary-request:{conversation_id}", token, self.settings.request_interval_seconds
            ):
                return
            await self._enqueue(
                SUMMARY_JOB,
                {
                    "tenant_id": tenant_id,
                    "persona_id": persona_id,
                    "user_id": user_id,
                    # Not "conversation_id": the job event hook would report this
                    # internal job to the conversation's clients as media progress.
                    "conversation": conversation_id,
                    "upto": upto,
                    "user_name": user_name,
                    "persona_name": persona_name,
                },
                job_id=f"summary.{conversation_id}.{upto}",
            )
        except Exception as exc:  # memory must never break a conversation
            log.warning("summary_request_failed", conversation_id=conversation_id, error=repr(exc))


def register_summary_jobs(runner: Any, service: SummaryService) -> None:
    """``memory.summarize``: fold older messages into a conversation's summary."""

    async def summarize(ctx: Any, args: dict[str, Any]) -> dict[str, Any]:
        return await service.summarize(
            args["tenant_id"],
            persona_id=args["persona_id"],
            user_id=args["user_id"],
            conversation_id=args["conversation"],
            upto=args["upto"],
            user_name=args["user_name"],
            persona_name=args["persona_name"],
        )

    runner.register(SUMMARY_JOB, summarize, timeout=service.settings.job_timeout_seconds)
