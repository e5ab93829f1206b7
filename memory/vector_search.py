"""Nearest memory items by embedding: pgvector on Postgres, numpy on SQLite.

:class:`VectorSearch` is the read half of :class:`memory.memories.MemoryStore`
that retrieval's vector ranking uses (docs/memory.md, "Backends"). The
choice between an exact scan of the user's vectors and the HNSW index was
measured at 1M memories (benchmarks/memory_scale.py, docs/benchmarks.md).
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
from sqlalchemy import Float, LargeBinary, func, or_, select, text, type_coerce

from memory.memory_records import AnySelect, check_embedding, filtered, ordered
from memory.models import Memory
from memory.owner_indexes import OwnerIndexes
from memory.store import Store

# Measured on a person's partial index of 10,000 items (docs/benchmarks.md):
# ef_search 40 gave recall@10 0.88-0.91, 100 about 0.96, 200 about 0.99.
DEFAULT_EF_SEARCH = 200


def approximate_settings(ef_search: int, *, iterative: bool = False) -> dict[str, str]:
    """The transaction-local settings of the approximate (HNSW) path.

    - ``hnsw.ef_search``: HNSW yields at most this many rows before the
      filters apply (at least the limit; capped at 1,000, pgvector's maximum).
    - ``plan_cache_mode``: a person's partial index (memory/owner_indexes.py)
      matches only a plan made with the literal owner values, never a cached
      generic one.
    - ``enable_sort`` off: otherwise the planner prefers "score all of the
      person's vectors through the owner index, then sort" (exact, ~1 µs per
      item), which it estimates cheaper from a LIMIT of ~100 up.
    - ``hnsw.iterative_scan`` on pgvector >= 0.8: the shared index keeps
      scanning until the filters have let enough rows through.
    """
    settings = {
        "hnsw.ef_search": str(min(1000, ef_search)),
        "plan_cache_mode": "force_custom_plan",
        "enable_sort": "off",
    }
    if iterative:
        settings["hnsw.iterative_scan"] = "relaxed_order"
    return settings


class VectorSearch:
    """``nearest``: the user's live items closest to a query vector."""

    store: Store
    dialect: str
    dimensions: int
    owner_indexes: OwnerIndexes | None = None
    # pgvector's hnsw.ef_search for the approximate path; None = max(DEFAULT_EF_SEARCH, limit).
    hnsw_ef_search: int | None = None
    _pgvector_iterative: bool | None = None

    async def nearest(
        self,
        tenant_id: str,
        persona_id: str,
        user_id: str,
        vector: Sequence[float],
        *,
        limit: int,
        kinds: Sequence[str] | None = None,
        embedding_model: str | None = None,
        exact: bool = False,
    ) -> builtins.list[tuple[str, float]]:
        """``(id, cosine similarity)`` of the user's live items nearest to ``vector``, best first.

        Postgres: pgvector's ``<=>``. With ``exact`` (retrieval asks for it
        when the user has few enough items) every candidate's distance is
        computed, found through the owner index; otherwise ``ORDER BY <=>
        LIMIT`` lets the planner use the HNSW index (approximate), with
        ``hnsw.ef_search`` raised to ``limit`` so the owner filter does not
        starve the result, and iterative scans on pgvector >= 0.8 (retrieval
        asks for this path only then: older HNSW filters after the scan). At
        1M memories the planner chose the owner index for every user anyway
        (docs/benchmarks.md). SQLite:
        always an exact scan of the user's vectors with numpy. Items embedded
        by another model than ``embedding_model`` are left out (their vectors
        are not comparable). Similarities are rounded to 6 decimals and ties
        go to the smaller id, so exact results agree across backends.
        """
        if limit <= 0:
            return []
        query = check_embedding(vector, self.dimensions)
        base = filtered(
            select(Memory.id),
            tenant_id=tenant_id,
            persona_id=persona_id,
            user_id=user_id,
            kinds=kinds,
        ).where(Memory.embedding.is_not(None))
        if embedding_model is not None:
            base = base.where(
                or_(Memory.embedding_model.is_(None), Memory.embedding_model == embedding_model)
            )
        if self.dialect == "postgresql":
            return await self._nearest_pgvector(tenant_id, base, query, limit, exact)
        # SQLite keeps any size of vector: those of another size (made before a
        # change of embedder, not yet re-embedded) are left out.
        base = base.where(
            func.length(type_coerce(Memory.embedding, LargeBinary)) == 4 * self.dimensions
        )
        return await self._nearest_exact(tenant_id, base, query, limit)

    async def approximate_ok(
        self, tenant_id: str, persona_id: str, user_id: str, *, items: int, exact_limit: int
    ) -> bool:
        """Should a search over ``items`` live items of this person take the HNSW path?

        Up to ``exact_limit`` items: no, exact scoring is fast and certain.
        Above it: yes on pgvector >= 0.8 (iterative scans make the shared HNSW
        index filter-aware), or when the person has their own partial index;
        otherwise exact, and that index is built in the background
        (memory/owner_indexes.py), so the next searches are fast.
        """
        if items <= exact_limit or self.dialect != "postgresql":
            return False
        if await self.iterative_scans():
            return True
        indexes = self.owner_indexes
        if indexes is None:
            return False
        if await indexes.has(tenant_id, persona_id, user_id):
            return True
        indexes.schedule(tenant_id, persona_id, user_id)
        return False

    async def iterative_scans(self) -> bool:
        """Whether the database's pgvector has HNSW iterative scans (0.8.0 and later)."""
        if self.dialect != "postgresql":
            return False
        async with self.store._tx() as s:
            return await self._iterative_scans(s)

    async def _nearest_pgvector(
        self,
        tenant_id: str,
        base: AnySelect,
        query: builtins.list[float],
        limit: int,
        exact: bool,
    ) -> builtins.list[tuple[str, float]]:
        distance = Memory.embedding.op("<=>", return_type=Float)(
            type_coerce(query, Memory.embedding.type)
        )
        scored = base.add_columns(distance.label("distance"))
        if exact:
            # A materialized CTE cannot be read in HNSW order: every candidate
            # is scored (found by the owner index), then sorted.
            near = scored.cte("near").prefix_with("MATERIALIZED")
            q = select(near.c.id, near.c.distance).order_by(near.c.distance, near.c.id)
        else:
            q = scored.order_by(distance)
        q = q.limit(limit)
        async with self.store._tx(tenant_id) as s:
            if not exact:
                ef = self.hnsw_ef_search or max(DEFAULT_EF_SEARCH, limit)
                settings = approximate_settings(ef, iterative=await self._iterative_scans(s))
                for name, value in settings.items():
                    await s.execute(
                        text("SELECT set_config(:name, :value, true)"),
                        {"name": name, "value": value},
                    )
            rows = (await s.execute(q)).all()
        return ordered((r[0], 1.0 - float(r[1])) for r in rows)[:limit]

    async def _iterative_scans(self, session: Any) -> bool:
        if self._pgvector_iterative is None:
            version = (
                await session.execute(
                    text("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
                )
            ).scalar_one_or_none() or "0"
            parts = tuple(int(p) for p in re.findall(r"\d+", version)[:2])
            self._pgvector_iterative = parts >= (0, 8)
        return self._pgvector_iterative

    async def _nearest_exact(
        self, tenant_id: str, base: AnySelect, query: builtins.list[float], limit: int
    ) -> builtins.list[tuple[str, float]]:
        # The raw bytes, not the decoded lists: one numpy buffer for the scan.
        q = base.add_columns(type_coerce(Memory.embedding, LargeBinary))
        async with self.store._tx(tenant_id) as s:
            rows = (await s.execute(q)).all()
        if not rows:
            return []
        matrix = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").reshape(len(rows), -1)
        qv = np.asarray(query, dtype=np.float32)
        norms = np.linalg.norm(matrix, axis=1) * float(np.linalg.norm(qv))
        sims = (matrix @ qv) / np.where(norms > 0, norms, 1.0)
        return ordered(zip((r[0] for r in rows), sims.tolist(), strict=True))[:limit]
