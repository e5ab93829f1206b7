"""Hybrid recall: the memories of a user that best answer a query (docs/memory.md).

:func:`search` ranks a user's live memory items by two rankings fused with
reciprocal-rank fusion (vector similarity and BM25 keywords), lifts a dialog
turn next to a strong match (the answer is often the turn after the
question), adds small recency and importance terms, puts pinned items first
and cuts the list to a token budget. The formula and its constants are in
:class:`Scoring` and docs/memory.md.

Both database backends feed the same Python ranking: the candidate set and
the BM25 scores are computed here, and only the vector neighbours come from
the database (pgvector's HNSW on Postgres, an exact scan on SQLite), with
rounding and tie-breaking that make the two agree.

:func:`remember` is the write side: embed (batched, off the event loop by
the embedder) and store.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from itertools import pairwise
from typing import Any

import numpy as np

from memory.embeddings.base import Embedder, EmbeddingError
from memory.memories import MemoryRecord, MemoryStore, NewMemory

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scoring:
    """The constants of the ranking formula (docs/memory.md).

    Tuned on the five LoCoMo dev conversations (benchmarks/locomo_recall.py):
    a small ``rrf_k`` trusts the top of each ranking more than the classic 60
    does; BM25 uses a lower length normalisation ``bm25_b`` because memory
    items are short and of similar length.
    """

    rrf_k: float = 10.0
    vector_weight: float = 1.0
    keyword_weight: float = 1.0
    # A dialog turn gains this share of the better fused score of the turns
    # just before and after it (same exchange: at most ``neighbour_gap`` apart).
    neighbour_weight: float = 0.5
    neighbour_gap: timedelta = timedelta(hours=1)
    recency_weight: float = 0.005
    recency_half_life_days: float = 30.0
    importance_weight: float = 0.02
    # How many nearest vectors enter the vector ranking.
    vector_candidates: int = 200
    # Up to this many candidates, Postgres scores every vector exactly (as
    # SQLite always does); above it, the HNSW index may answer (approximate),
    # but only with pgvector >= 0.8: older HNSW filters after the scan and can
    # return too few of the user's rows (benchmarks/memory_scale.py, 1M rows:
    # the planner used the owner index for every user anyway).
    exact_vector_limit: int = 5_000
    # BM25 ranks at most this many of the user's live items (pinned, then newest).
    max_candidates: int = 20_000
    bm25_k1: float = 1.2
    bm25_b: float = 0.5


DEFAULT_SCORING = Scoring()


@dataclass(frozen=True)
class ScoredMemory:
    """A retrieved memory with the parts of its score (ranks are 1-based)."""

    memory: MemoryRecord
    score: float
    tokens: int
    vector_similarity: float | None = None
    vector_rank: int | None = None
    keyword_score: float | None = None
    keyword_rank: int | None = None


def approx_tokens(text: str) -> int:
    """A model-free token estimate (about 4 characters per token)."""
    return max(1, math.ceil(len(text) / 4))


async def search(
    memory_store: MemoryStore,
    embedder: Embedder | None,
    tenant_id: str,
    persona_id: str,
    user_id: str,
    query: str,
    *,
    k: int = 10,
    token_budget: int | None = None,
    count_tokens: Callable[[str], int] | None = None,
    now: datetime | None = None,
    kinds: Sequence[str] | None = None,
    include_pinned: bool = True,
    scoring: Scoring = DEFAULT_SCORING,
) -> list[ScoredMemory]:
    """The memories of (persona, user) for ``query``: pinned first, then the best ``k``.

    Only live items (not superseded) of this tenant, persona and user, of
    ``kinds`` when given. Pinned items are always included, ahead of the
    ranked ones and outside ``k``. With ``token_budget`` the result is cut so
    the texts fit (``count_tokens`` measures them; default
    :func:`approx_tokens`): an item that does not fit is skipped and smaller
    ones after it may still be taken. Without an ``embedder``, or when it
    fails, ranking falls back to keywords alone.
    """
    count = count_tokens or approx_tokens
    now = _utc(now or datetime.now(UTC))
    # The query is embedded (on the embedder's worker) while the candidates load.
    embedding: asyncio.Task[list[float] | None] | None = None
    if embedder is not None and query.strip():
        embedding = asyncio.create_task(_embed_query(embedder, query, memory_store.dimensions))
    try:
        items = await memory_store.candidates(
            tenant_id, persona_id, user_id, kinds=kinds, limit=scoring.max_candidates
        )
        vector = await embedding if embedding is not None and items else None
    finally:
        if embedding is not None and not embedding.done():
            embedding.cancel()
    if not items:
        return []
    index = {m.id: i for i, m in enumerate(items)}
    n = len(items)

    nearest: asyncio.Task[list[tuple[str, float]]] | None = None
    if vector is not None and embedder is not None and any(m.has_embedding for m in items):
        nearest = asyncio.create_task(
            memory_store.nearest(
                tenant_id,
                persona_id,
                user_id,
                vector,
                limit=scoring.vector_candidates,
                kinds=kinds,
                embedding_model=embedder.model or None,
                exact=not await memory_store.approximate_ok(
                    tenant_id, persona_id, user_id, items=n, exact_limit=scoring.exact_vector_limit
                ),
            )
        )
    try:
        # BM25 is CPU work: off the event loop, while the database finds the neighbours.
        keyword = await asyncio.to_thread(_keyword_scores_cached, items, query, scoring)
        neighbours = await nearest if nearest is not None else []
    finally:
        if nearest is not None and not nearest.done():
            nearest.cancel()

    vector_rank = np.zeros(n)
    vector_sim = np.full(n, np.nan)
    for rank, (mid, sim) in enumerate(neighbours, 1):
        if (i := index.get(mid)) is not None:
            vector_rank[i], vector_sim[i] = rank, sim

    keyword_rank = np.zeros(n)
    matched = [i for i in range(n) if keyword[i] > 0]
    matched.sort(key=lambda i: (-round(float(keyword[i]), 6), items[i].id))
    for rank, i in enumerate(matched, 1):
        keyword_rank[i] = rank

    fused = np.where(vector_rank > 0, scoring.vector_weight / (scoring.rrf_k + vector_rank), 0.0)
    fused += np.where(
        keyword_rank > 0, scoring.keyword_weight / (scoring.rrf_k + keyword_rank), 0.0
    )
    relevance = fused + scoring.neighbour_weight * _neighbour_scores(
        items, fused, scoring.neighbour_gap
    )
    age_days = np.array([max(0.0, (now - m.valid_from).total_seconds()) / 86400 for m in items])
    scores = (
        relevance
        + scoring.recency_weight * np.power(0.5, age_days / scoring.recency_half_life_days)
        + scoring.importance_weight * np.array([m.importance for m in items])
    )

    def scored(i: int) -> ScoredMemory:
        m = items[i]
        return ScoredMemory(
            memory=m,
            score=float(scores[i]),
            tokens=count(m.text),
            vector_similarity=None if np.isnan(vector_sim[i]) else float(vector_sim[i]),
            vector_rank=int(vector_rank[i]) or None,
            keyword_score=float(keyword[i]) if keyword[i] > 0 else None,
            keyword_rank=int(keyword_rank[i]) or None,
        )

    def order(indices: Iterable[int]) -> list[int]:
        return sorted(indices, key=lambda i: (-round(float(scores[i]), 9), items[i].id))

    pinned = order(i for i in range(n) if items[i].pinned) if include_pinned else []
    ranked = order(i for i in range(n) if not items[i].pinned and relevance[i] > 0)

    out: list[ScoredMemory] = []
    used = 0

    def fits(entry: ScoredMemory) -> bool:
        return token_budget is None or used + entry.tokens <= token_budget

    for i in pinned:
        entry = scored(i)
        if fits(entry):
            out.append(entry)
            used += entry.tokens
    taken = 0
    for i in ranked:
        if taken >= k:
            break
        entry = scored(i)
        if fits(entry):
            out.append(entry)
            used += entry.tokens
            taken += 1
    return out


async def remember(
    memory_store: MemoryStore,
    embedder: Embedder | None,
    tenant_id: str,
    items: Sequence[NewMemory],
) -> list[MemoryRecord]:
    """Embed the items that carry no embedding (batched) and store them all in one transaction.

    If the embedder fails or makes vectors of another size than the table
    stores, the items are stored without embeddings (still found by keywords)
    and the failure is logged: remembering never fails because of embeddings.
    """
    todo = [i for i, item in enumerate(items) if item.embedding is None]
    ready = list(items)
    if embedder is not None and todo:
        vectors: list[list[float]] | None = None
        if embedder.dimensions != memory_store.dimensions:
            log.warning(
                "embedder %s makes %d-d vectors, memories store %d-d: stored without embeddings",
                embedder.name,
                embedder.dimensions,
                memory_store.dimensions,
            )
        else:
            # Similar lengths batched together pad less: ~1.5x faster on CPU.
            todo.sort(key=lambda i: len(items[i].text))
            try:
                vectors = await embedder.embed([items[i].text for i in todo])
            except EmbeddingError as exc:
                log.warning("memories stored without embeddings: %s (%s)", exc, exc.code)
        if vectors is not None:
            for i, vector in zip(todo, vectors, strict=True):
                ready[i] = replace(
                    items[i], embedding=vector, embedding_model=embedder.model or None
                )
    return await memory_store.add_many(tenant_id, ready)


# -- keywords ---------------------------------------------------------------------

_WORD = re.compile(r"\w\w+")
# Lucene's English stopwords (bm25s's list), kept here so tokenizing needs no import.
_STOPWORDS = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the "
    "their then there these they this to was will with".split()
)


def light_stem(word: str) -> str:
    """Strip one common English inflection (plural, -ing, -ed, -ly, -ness).

    Deliberately light (no dictionary): ``painting``/``paints``/``painted`` ->
    ``paint``, ``hobbies`` -> ``hobby``; short words are left alone.
    """
    if len(word) <= 3 or not word.isalpha():
        return word
    for suffix, repl in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            if suffix == "s" and word.endswith(("ss", "us", "is")):
                return word
            stem = word[: -len(suffix)] + repl
            if suffix in ("ing", "ed") and len(stem) >= 4 and stem[-1] == stem[-2]:
                if stem[-1] not in "lsz":
                    stem = stem[:-1]  # running -> run, stopped -> stop
            return _drop_e(stem)
    return _drop_e(word)


def _drop_e(stem: str) -> str:
    # live/lives/living all meet at "liv", house/houses at "hous".
    return stem[:-1] if len(stem) > 3 and stem.endswith("e") else stem


_SUFFIXES = (
    ("ies", "y"),
    ("sses", "ss"),
    ("ness", ""),
    ("ingly", ""),
    ("edly", ""),
    ("ing", ""),
    ("ed", ""),
    ("ly", ""),
    ("es", ""),
    ("s", ""),
)


@lru_cache(maxsize=100_000)
def tokenize(text: str) -> tuple[str, ...]:
    """Lower-cased words of 2+ characters, stopwords dropped, lightly stemmed."""
    return tuple(light_stem(w) for w in _WORD.findall(text.lower()) if w not in _STOPWORDS)


# Recently built BM25 indexes, keyed by a digest of the candidate set (ids and
# update times, so an edit, a new item or a deletion makes a new key).
_INDEX_CACHE: OrderedDict[bytes, Any] = OrderedDict()
_INDEX_CACHE_SIZE = 32
_INDEX_LOCK = threading.Lock()


def _keyword_scores_cached(
    items: Sequence[MemoryRecord], query: str, scoring: Scoring
) -> np.ndarray[Any, np.dtype[np.float64]]:
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{scoring.bm25_k1}|{scoring.bm25_b}".encode())
    for m in items:
        digest.update(f"|{m.id}@{m.updated_at.timestamp()}".encode())
    key = digest.digest()
    with _INDEX_LOCK:
        retriever = _INDEX_CACHE.get(key)
        if retriever is not None:
            _INDEX_CACHE.move_to_end(key)
    if retriever is None:
        retriever = _bm25_index([m.text for m in items], scoring.bm25_k1, scoring.bm25_b)
        with _INDEX_LOCK:
            _INDEX_CACHE[key] = retriever
            while len(_INDEX_CACHE) > _INDEX_CACHE_SIZE:
                _INDEX_CACHE.popitem(last=False)
    return _bm25_scores(retriever, len(items), query)


def _bm25_index(texts: Sequence[str], k1: float, b: float) -> Any:
    docs = [list(tokenize(t)) for t in texts]
    if not any(docs):
        return None
    import bm25s  # scipy behind it: loaded on the first search, not at import

    # bm25s sets its logger to DEBUG on import; one line per index is noise.
    logging.getLogger("bm25s").setLevel(logging.WARNING)
    retriever = bm25s.BM25(k1=k1, b=b)
    retriever.index(docs, show_progress=False)
    return retriever


def _bm25_scores(retriever: Any, n: int, query: str) -> np.ndarray[Any, np.dtype[np.float64]]:
    scores = np.zeros(n)
    terms = tokenize(query)
    if retriever is None or not terms:
        return scores
    ids = retriever.get_tokens_ids(list(terms))
    if ids:
        scores[:] = retriever.get_scores(ids)
    return scores


def keyword_scores(
    texts: Sequence[str], query: str, *, k1: float = 1.2, b: float = 0.5
) -> np.ndarray[Any, np.dtype[np.float64]]:
    """BM25 (bm25s, Lucene variant) score of each text for ``query``; 0 = no shared word."""
    return _bm25_scores(_bm25_index(texts, k1, b), len(texts), query)


# -- helpers ----------------------------------------------------------------------


async def _embed_query(embedder: Embedder, query: str, dimensions: int) -> list[float] | None:
    if embedder.dimensions != dimensions:
        return None
    try:
        return list((await embedder.embed([query]))[0])
    except EmbeddingError as exc:
        log.warning("memory search without vectors: %s (%s)", exc, exc.code)
        return None


def _neighbour_scores(
    items: Sequence[MemoryRecord], fused: np.ndarray[Any, Any], gap: timedelta
) -> np.ndarray[Any, np.dtype[np.float64]]:
    """For each turn item, the better fused score of the turns right before and after it."""
    out = np.zeros(len(items))
    turns = sorted(
        (i for i, m in enumerate(items) if m.kind == "turn"),
        key=lambda i: (items[i].valid_from, items[i].id),
    )
    for a, b in pairwise(turns):
        if items[b].valid_from - items[a].valid_from <= gap:
            out[a] = max(out[a], fused[b])
            out[b] = max(out[b], fused[a])
    return out


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
