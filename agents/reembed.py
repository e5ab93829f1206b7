"""Give memory items vectors of the configured embedder: after a change of model, or a failure.

An item is *stale* when it has no vector, or one made by another model
(memory/embedding_space.py). Vector search leaves stale items out (keywords
still find them); :func:`reembed` fixes them a batch at a time, across
tenants, in id order (keyset paging: an item that cannot be embedded is not
retried forever within one run). It runs as the ``memory.reembed`` job, which
a server queues at start when it finds stale items, or from the command line
(``salon memory reembed``, with a progress bar). Running it twice at once is
safe: a vector is only written where the text is still the one embedded.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from memory.embeddings.base import Embedder
from memory.memories import MemoryStore

log = structlog.get_logger(__name__)

BATCH_SIZE = 64
JOB_KIND = "memory.reembed"

Progress = Callable[[int, int], Awaitable[None]]


async def prepare_embedding_space(memories: MemoryStore, embedder: Embedder | None) -> bool:
    """Adopt the embedder's vector size (at start); True when stored vectors were cleared."""
    if embedder is None:
        return False
    return await memories.adopt_dimensions(embedder.dimensions)


async def reembed(
    memories: MemoryStore,
    embedder: Embedder,
    *,
    batch_size: int = BATCH_SIZE,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Embed every stale item; returns counts (``stale``, ``embedded``, ``skipped``) and time.

    ``skipped`` items changed while they were embedded (their new text keeps
    its own vector, or is stale for the next run). Embedding errors are
    raised (the job fails and can be run again; what was done stays done).
    """
    if embedder.dimensions != memories.dimensions:
        raise ValueError(
            f"the embedder makes {embedder.dimensions}-d vectors but the table stores "
            f"{memories.dimensions}-d: adopt the size first (prepare_embedding_space)"
        )
    model = embedder.model or None
    started = time.perf_counter()
    total = await memories.count_stale(model)
    done = embedded = 0
    after = ""
    if progress is not None:
        await progress(0, total)
    while True:
        rows = await memories.stale_batch(model, limit=batch_size, after_id=after)
        if not rows:
            break
        after = rows[-1].id
        vectors = await embedder.embed([row.text for row in rows])
        embedded += await memories.set_embeddings(rows, vectors, model)
        done += len(rows)
        if progress is not None:
            # Items added while this runs can make ``done`` pass the first count.
            await progress(done, max(total, done))
    result = {
        "model": model,
        "dimensions": memories.dimensions,
        "stale": done,
        "embedded": embedded,
        "skipped": done - embedded,
        "seconds": round(time.perf_counter() - started, 3),
    }
    log.info("memory_reembedded", **result)
    return result


def reembed_job_id(memories: MemoryStore, embedder: Embedder) -> str:
    """One queued re-embed per (model, size): replicas starting together queue it once."""
    model = "".join(c if c.isalnum() else "-" for c in (embedder.model or "none"))[:80]
    return f"memory-reembed-{memories.dimensions}-{model}"


def register_reembed_job(runner: Any, memories: MemoryStore, embedder: Embedder) -> None:
    """``memory.reembed``: the job form of :func:`reembed`, with progress events."""

    async def job(ctx: Any, args: dict[str, Any]) -> dict[str, Any]:
        async def report(done: int, total: int) -> None:
            await ctx.progress(done / total if total else 1.0, done=done, total=total)

        return await reembed(
            memories, embedder, batch_size=int(args.get("batch_size", BATCH_SIZE)), progress=report
        )

    runner.register(JOB_KIND, job)


async def queue_reembed_if_stale(runner: Any, memories: MemoryStore, embedder: Embedder) -> bool:
    """Queue the job when some item lacks a vector of this embedder; True if queued."""
    if not await memories.stale_batch(embedder.model or None, limit=1):
        return False
    await runner.enqueue(JOB_KIND, {}, job_id=reembed_job_id(memories, embedder))
    return True
