"""Synthetic memories for benchmarks/memory_scale.py: who owns them, and their vectors.

Vectors are clustered the way sentence embeddings of one person's conversations
are: 1,024 topic centres on the unit sphere, each user talks about 8 of them
(Dirichlet weights), and a memory is its topic centre plus noise of norm
``NOISE``, normalised. Two memories of one topic then have a cosine
similarity of about 0.5, of different topics about 0, like MiniLM's. A query
is drawn the same way (a new sentence about one of the user's topics), so it
is never a copy of a stored vector. Everything is reproducible from the seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from memory.models import EMBEDDING_DIMENSIONS

TOPICS = 1024
TOPICS_PER_USER = 8
NOISE = 1.0  # norm of the per-memory noise around its topic centre (centre norm 1)
SUPERSEDED = 0.03  # share of rows that are superseded versions (valid_to set)
K = 10


@dataclass
class Owner:
    """One (tenant, persona, user) whose memories a query filters on."""

    tenant: str
    persona: str
    user: str
    size: int
    heavy: bool
    offset: int = 0  # first row of this owner in the generated matrix
    topics: Any = None
    weights: Any = None


def plan_owners(count: int, heavy_size: int, rng: np.random.Generator) -> list[Owner]:
    """Users and their memory counts: 10 % of the memories in heavy users, the rest ~300 each."""
    heavy_n = max(1, round(0.1 * count / heavy_size)) if count >= 2 * heavy_size else 0
    rest = count - heavy_n * heavy_size
    sizes: list[int] = []
    while sum(sizes) < rest:
        sizes.append(int(np.clip(rng.lognormal(np.log(250), 0.6), 20, 2000)))
    sizes[-1] -= sum(sizes) - rest
    if sizes[-1] <= 0:
        sizes.pop()
        sizes[-1] += rest - sum(sizes)
    tenants = max(2, len(sizes) // 150)
    owners = []
    for i, size in enumerate([heavy_size] * heavy_n + sizes):
        t = int(rng.integers(tenants))
        owners.append(Owner(f"t{t}", f"p{t}_{int(rng.integers(5))}", f"u{i}", size, i < heavy_n))
    offset = 0
    for owner in owners:
        owner.offset, offset = offset, offset + owner.size
        owner.topics = rng.choice(TOPICS, TOPICS_PER_USER, replace=False)
        owner.weights = rng.dirichlet(np.ones(TOPICS_PER_USER))
    return owners


def sample(owner: Owner, n: int, centres: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``n`` unit vectors near the owner's topics (memories, or queries about them)."""
    topics = rng.choice(owner.topics, n, p=owner.weights)
    noise = rng.standard_normal((n, EMBEDDING_DIMENSIONS)).astype(np.float32)
    noise *= NOISE / np.sqrt(EMBEDDING_DIMENSIONS)
    v = centres[topics] + noise
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def generate(owners: list[Owner], seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All vectors (owner order), a superseded flag per row, and the topic centres."""
    rng = np.random.default_rng([seed, 1])
    centres = rng.standard_normal((TOPICS, EMBEDDING_DIMENSIONS)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    total = sum(o.size for o in owners)
    vectors = np.empty((total, EMBEDDING_DIMENSIONS), dtype=np.float32)
    for owner in owners:
        vectors[owner.offset : owner.offset + owner.size] = sample(owner, owner.size, centres, rng)
    superseded = rng.random(total) < SUPERSEDED
    return vectors, superseded, centres


def truth(vectors: np.ndarray, superseded: np.ndarray, owner: Owner, q: np.ndarray) -> list[int]:
    """Exact top-K rows (global positions) among the owner's live rows, ties to the smaller id."""
    rows = np.arange(owner.offset, owner.offset + owner.size)
    rows = rows[~superseded[rows]]
    sims = np.round(vectors[rows].astype(np.float64) @ q.astype(np.float64), 6)
    best = sorted(zip((-sims).tolist(), rows.tolist(), strict=True))[:K]
    return [r for _, r in best]
