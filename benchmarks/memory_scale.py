"""Long-term memory at scale: filtered top-10 over 1M memories in Postgres (pgvector).

    .venv/bin/python benchmarks/memory_scale.py                 # 1,000,000 memories
    .venv/bin/python benchmarks/memory_scale.py --count 100000  # a smaller run
    .venv/bin/python benchmarks/memory_scale.py --keep          # keep the loaded cluster

What it does (docs/benchmarks.md has the results):

1. Starts PostgreSQL 16 + pgvector from PyPI ``pgserver`` (as benchmarks/services.py
   does: the app connects as the non-superuser ``salon_app``, so row-level
   security applies) and creates the real schema with ``memory.migrate``.
2. Loads ``--count`` synthetic 384-d memories with binary COPY: many tenants,
   personas and users, most users with a few hundred memories and a few heavy
   users with ``--heavy-size`` each, rows in a random order (as a live system
   interleaves users), 3 % superseded. Vectors are clustered like sentence
   embeddings: each user talks about a few of 1,024 topics.
3. Builds the HNSW index with the exact definition migration 0003 created
   (it is dropped for the load and re-created, which is how one bulk-loads).
4. Asks the product's own query, ``MemoryStore.nearest`` (tenant + persona +
   user + live + embedding model filter, through a row-level-security
   transaction), top-10, for random users: the exact path (owner index,
   every vector of the user scored) and the HNSW path at several
   ``hnsw.ef_search`` values; recall@10 against numpy over the same user's
   live vectors (exact truth).

``--keep`` leaves the cluster in ``--dir``; a later run with the same ``--dir``,
``--count`` and ``--seed`` reuses it (no reload, no index build).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import statistics
import sys
import time
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from memory_scale_data import (  # noqa: E402
    SUPERSEDED,
    Owner,
    generate,
    plan_owners,
    sample,
    truth,
)
from services import machine_busy  # noqa: E402

from memory.db import create_engine, normalize_database_url  # noqa: E402
from memory.memories import MemoryStore  # noqa: E402
from memory.migrate import migrate  # noqa: E402
from memory.owner_indexes import PREFIX  # noqa: E402
from memory.retrieval import DEFAULT_SCORING  # noqa: E402
from memory.store import Store  # noqa: E402
from memory.vector_search import DEFAULT_EF_SEARCH, approximate_settings  # noqa: E402

APP_ROLE, APP_PASSWORD = "salon_app", "salon-app-pw"
DATABASE = "salon_scale"
MODEL = "all-MiniLM-L6-v2"
K = 10
NCPU = os.cpu_count() or 1
PLANNED = 20  # queries per setting whose plan is looked up (EXPLAIN)
# An experiment (--covering-index), not the product's schema: the owner index
# with every column the exact query reads, so it can be an index-only scan.
COVERING_INDEX = (
    "CREATE INDEX IF NOT EXISTS ix_bench_owner_vectors ON memories"
    " (tenant_id, persona_id, user_id) INCLUDE (id, kind, valid_to, embedding_model, embedding)"
)
COLUMNS = tuple(
    "id tenant_id persona_id user_id kind text importance pinned source_message_ids"
    " source_refs valid_from valid_to superseded_by embedding embedding_model created_at"
    " updated_at supersede_key".split()
)


def progress() -> Any:
    from rich.progress import (
        BarColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,.0f}/{task.total:,.0f}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )


# -- Postgres -------------------------------------------------------------------


class Cluster:
    """A pgserver cluster in ``root``, tuned for a 1M-vector table, stopped by ``stop``."""

    def __init__(self, root: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR unset
            import pgserver
        self._pgserver = pgserver
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.handle: Any = pgserver.get_server(root / "data", cleanup_mode="stop")
        # The index (~2 GB at 1M) and the table fit in shared buffers, as on a
        # production database sized for it; the HNSW build runs in memory.
        self.superuser_sql(
            "ALTER SYSTEM SET shared_buffers = '6GB'",
            "ALTER SYSTEM SET maintenance_work_mem = '6GB'",
            "ALTER SYSTEM SET max_parallel_maintenance_workers = 1",
            "ALTER SYSTEM SET synchronous_commit = off",
            "ALTER SYSTEM SET max_wal_size = '8GB'",
            "ALTER SYSTEM SET checkpoint_timeout = '30min'",
        )
        self.handle.cleanup()  # restart: shared_buffers needs it
        self.handle = pgserver.get_server(root / "data", cleanup_mode="stop")
        self.socket_dir = self.handle.get_uri().split("?host=", 1)[1]

    def url(self, *, superuser: bool = False, database: str = DATABASE) -> str:
        auth = "postgres" if superuser else f"{APP_ROLE}:{APP_PASSWORD}"
        return f"postgresql://{auth}@/{database}?host={self.handle.get_uri().split('?host=', 1)[1]}"

    def superuser_sql(self, *statements: str, database: str = "postgres") -> list[Any]:
        import asyncpg

        async def go() -> list[Any]:
            conn = await asyncpg.connect(self.url(superuser=True, database=database))
            try:
                return [await conn.fetch(s) for s in statements]
            finally:
                await conn.close()

        return asyncio.run(go())

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.handle.cleanup()


# -- data -------------------------------------------------------------------------


async def create_owners(url: str, owners: list[Owner]) -> dict[str, str]:
    """Tenants, personas and users through the product's Store; our names -> their ids."""
    engine = create_engine(normalize_database_url(url, ROOT))
    await migrate(engine)
    store = Store(engine)
    ids: dict[str, str] = {}
    try:
        for owner in owners:
            if owner.tenant not in ids:
                ids[owner.tenant] = (await store.create_tenant(owner.tenant)).id
            tenant = ids[owner.tenant]
            if owner.persona not in ids:
                record = await store.create_persona(
                    tenant, slug=owner.persona, name=owner.persona, data={}
                )
                ids[owner.persona] = record.id
            ids[owner.user] = (await store.get_or_create_user(tenant, owner.user)).id
    finally:
        await engine.dispose()
    return ids


async def load(
    cluster: Cluster, owners: list[Owner], ids: dict[str, str], seed: int
) -> dict[str, float]:
    """COPY every memory (random row order), then re-create the HNSW index; timings."""
    import asyncpg
    from pgvector.asyncpg import register_vector

    vectors, superseded, _ = generate(owners, seed)
    total = len(vectors)
    owner_of = np.repeat(np.arange(len(owners)), [o.size for o in owners])
    order = np.random.default_rng([seed, 2]).permutation(total)
    conn = await asyncpg.connect(cluster.url(superuser=True))
    await register_vector(conn)
    timings: dict[str, float] = {}
    try:
        indexdef = await conn.fetchval(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_memories_embedding'"
        )
        await conn.execute("DROP INDEX ix_memories_embedding")
        start = datetime(2025, 1, 1, tzinfo=UTC)
        kinds = np.random.default_rng([seed, 3]).choice(
            ["turn", "fact", "preference", "event", "summary"],
            total,
            p=[0.85, 0.08, 0.03, 0.02, 0.02],
        )
        t0 = time.perf_counter()
        chunk = 20_000
        with progress() as bar:
            task = bar.add_task("COPY memories", total=total)
            for lo in range(0, total, chunk):
                records = []
                for pos in order[lo : lo + chunk].tolist():
                    o = owners[owner_of[pos]]
                    when = start + timedelta(seconds=pos * 31_536_000 / total)
                    records.append(
                        (
                            f"mem_{pos:012x}{pos * 7919 % (1 << 64):016x}",
                            ids[o.tenant],
                            ids[o.persona],
                            ids[o.user],
                            str(kinds[pos]),
                            f"memory {pos} of {o.user}",
                            0.5,
                            False,
                            "[]",
                            "[]",
                            when,
                            when + timedelta(days=1) if superseded[pos] else None,
                            None,
                            vectors[pos],
                            MODEL,
                            when,
                            when,
                            None,
                        )
                    )
                await conn.copy_records_to_table("memories", records=records, columns=COLUMNS)
                bar.advance(task, len(records))
        timings["copy_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        await conn.execute("VACUUM ANALYZE memories")
        timings["vacuum_analyze_s"] = time.perf_counter() - t0
        timings["index_build_s"] = await build_index(cluster, conn, indexdef, total)
    finally:
        await conn.close()
    return timings


async def build_index(cluster: Cluster, conn: Any, indexdef: str, total: int) -> float:
    """Run the migration's CREATE INDEX; show pg_stat_progress_create_index meanwhile."""
    import asyncpg

    watcher = await asyncpg.connect(cluster.url(superuser=True))
    t0 = time.perf_counter()
    build = asyncio.create_task(conn.execute(indexdef))
    try:
        with progress() as bar:
            task = bar.add_task("HNSW build", total=total)
            while not build.done():
                row = await watcher.fetchrow(
                    "SELECT phase, tuples_done FROM pg_stat_progress_create_index"
                )
                if row is not None:
                    bar.update(task, completed=row["tuples_done"] or 0, description=row["phase"])
                await asyncio.wait({build}, timeout=2)
            bar.update(task, completed=total)
        await build
    finally:
        await watcher.close()
    return time.perf_counter() - t0


# -- queries ----------------------------------------------------------------------


def pos_of(memory_id: str) -> int:
    return int(memory_id[4:16], 16)


def stats(values: list[float]) -> dict[str, float]:
    s = sorted(values)

    def pct(p: float) -> float:
        return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]

    return {
        "p50_ms": round(pct(50), 3),
        "p95_ms": round(pct(95), 3),
        "p99_ms": round(pct(99), 3),
        "mean_ms": round(statistics.fmean(s), 3),
    }


async def measure(
    memories: MemoryStore,
    cases: list[tuple[Owner, np.ndarray, list[int]]],
    ids: dict[str, str],
    *,
    exact: bool,
    ef: int | None,
    limit: int = K,
    label: str,
    mode: str | None = None,
) -> dict[str, Any]:
    memories.hnsw_ef_search = ef
    latencies: list[float] = []
    recalls: list[float] = []
    short = 0
    busy0, total0 = machine_busy()
    with progress() as bar:
        task = bar.add_task(label, total=len(cases))
        for owner, q, want in cases:
            t0 = time.perf_counter()
            got = await memories.nearest(
                ids[owner.tenant],
                ids[owner.persona],
                ids[owner.user],
                q.tolist(),
                limit=limit,
                embedding_model=MODEL,
                exact=exact,
            )
            latencies.append((time.perf_counter() - t0) * 1000)
            found = {pos_of(mid) for mid, _ in got[:K]}
            recalls.append(len(found & set(want)) / max(1, len(want)))
            short += len(got) < min(limit, len(want))
            bar.advance(task)
    busy1, total1 = machine_busy()
    plans: dict[str, int] = {}
    for owner, q, _ in cases[:PLANNED]:
        index = await plan_of(memories, ids, owner, q, exact=exact, limit=limit)
        plans[index] = plans.get(index, 0) + 1
    return {
        "mode": mode or ("exact" if exact else "hnsw"),
        "ef_search": None if exact else (ef or max(DEFAULT_EF_SEARCH, limit)),
        "limit": limit,
        "queries": len(cases),
        **stats(latencies),
        "recall_at_10": round(statistics.fmean(recalls), 4),
        "queries_short_of_results": short,
        # Whole machine, in cores (this client and its Postgres backend take
        # at most about one, as queries run one at a time): more is others' load.
        "machine_busy_cores": round((busy1 - busy0) / max(1e-9, total1 - total0) * NCPU, 2),
        f"plans_of_first_{PLANNED}": plans,
        "latencies_ms": latencies,
        "recalls": recalls,
    }


async def plan_of(
    memories: MemoryStore,
    ids: dict[str, str],
    owner: Owner,
    q: np.ndarray,
    *,
    exact: bool,
    limit: int,
) -> str:
    """Which index Postgres used for this query: EXPLAIN of the statement nearest() sent."""
    from sqlalchemy import event, text

    engine = memories.store.engine
    sent: dict[str, Any] = {}

    def grab(conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if "<=>" in statement:
            sent["sql"], sent["params"] = statement, params

    event.listen(engine.sync_engine, "before_cursor_execute", grab)
    try:
        await memories.nearest(
            ids[owner.tenant],
            ids[owner.persona],
            ids[owner.user],
            q.tolist(),
            limit=limit,
            embedding_model=MODEL,
            exact=exact,
        )
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", grab)
    async with memories.store._tx(ids[owner.tenant]) as s:
        if not exact:
            ef = memories.hnsw_ef_search or max(DEFAULT_EF_SEARCH, limit)
            for name, value in approximate_settings(ef).items():  # as nearest() does
                await s.execute(text("SELECT set_config(:n, :v, true)"), {"n": name, "v": value})
        conn = await s.connection()
        plan = (await conn.exec_driver_sql("EXPLAIN " + sent["sql"], sent["params"])).all()
    lines = " ".join(r[0] for r in plan)
    names = ("ix_memories_embedding", "ix_memories_owner", "ix_bench_owner_vectors", PREFIX)
    used = [name.rstrip("_") for name in names if name in lines]
    return "+".join(used) or ("seq scan" if "Seq Scan" in lines else "other")


async def run_queries(
    cluster: Cluster, owners: list[Owner], ids: dict[str, str], args: argparse.Namespace
) -> dict[str, Any]:
    vectors, superseded, centres = generate(owners, args.seed)
    rng = np.random.default_rng([args.seed, 4])
    regular = [o for o in owners if not o.heavy]
    heavy = [o for o in owners if o.heavy]

    def cases(group: list[Owner], n: int) -> list[tuple[Owner, np.ndarray, list[int]]]:
        picked = [group[int(i)] for i in rng.integers(len(group), size=n)]
        out = []
        for o in picked:
            q = sample(o, 1, centres, rng)[0]
            out.append((o, q, truth(vectors, superseded, o, q)))
        return out

    engine = create_engine(normalize_database_url(cluster.url(), ROOT))
    memories = MemoryStore(Store(engine))
    results: dict[str, Any] = {"regular_users": [], "heavy_users": []}
    try:
        groups = [("regular_users", regular, args.queries)]
        if heavy:
            groups.append(("heavy_users", heavy, args.heavy_queries))
        for name, group, n in groups:
            qs = cases(group, n)
            hq = qs[: args.hnsw_queries]
            out = results[name]
            # A first pass over the same users reads their rows into shared
            # buffers (a restarted cluster starts cold); the figures after it
            # are the steady state of a server whose active users are cached.
            first = await measure(memories, qs, ids, exact=True, ef=None, label=f"{name} cold")
            results[f"{name}_first_pass"] = {k: first[k] for k in ("p50_ms", "p95_ms", "p99_ms")}
            out.append(await measure(memories, qs, ids, exact=True, ef=None, label=f"{name} exact"))
            out.append(
                await measure(
                    memories, qs, ids, exact=True, ef=None, limit=200, label=f"{name} exact 200"
                )
            )
            for ef in args.ef:
                out.append(
                    await measure(
                        memories, hq, ids, exact=False, ef=ef, label=f"{name} hnsw ef={ef}"
                    )
                )
            if name == "heavy_users" and args.owner_indexes:
                results["owner_indexes"] = await build_owner_indexes(memories, group, ids)
                for limit in (K, 200):
                    # What retrieval does for them now: the approximate path, ef = max(200, limit).
                    out.append(
                        await measure(
                            memories,
                            qs,
                            ids,
                            exact=False,
                            ef=None,
                            limit=limit,
                            mode="owner_index",
                            label=f"{name} owner index, top {limit}",
                        )
                    )
        results["iterative_scans"] = await memories.iterative_scans()
    finally:
        await engine.dispose()
    results["mixed"] = mixed(results, owners)
    for part in ("regular_users", "heavy_users"):
        for row in results[part]:
            del row["latencies_ms"], row["recalls"]
    return results


async def build_owner_indexes(
    memories: MemoryStore, heavy: list[Owner], ids: dict[str, str]
) -> dict[str, Any]:
    """The product's partial HNSW index (memory/owner_indexes.py) for each heavy user."""
    assert memories.owner_indexes is not None
    seconds = []
    for o in heavy:
        t0 = time.perf_counter()
        await memories.owner_indexes.build(ids[o.tenant], ids[o.persona], ids[o.user])
        seconds.append(time.perf_counter() - t0)
    async with memories.store.engine.connect() as conn:
        from sqlalchemy import text

        size = (
            await conn.execute(
                text(
                    "SELECT pg_size_pretty(sum(pg_relation_size(indexrelid))) FROM pg_index i "
                    "JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname LIKE :p"
                ),
                {"p": PREFIX + "%"},
            )
        ).scalar_one()
    return {
        "indexes": len(heavy),
        "build_s_each": stats(seconds),
        "total_size": size,
    }


def mixed(results: dict[str, Any], owners: list[Owner]) -> dict[str, Any]:
    """All users together, heavy users' queries weighted by their share of the memories.

    Active users ask more: a user's share of the queries is taken to be their
    share of the memories. ``exact_everywhere``: the exact path for every user;
    ``as_shipped``: what retrieval picks (exact up to ``exact_vector_limit``
    memories, the HNSW path above it, ``hnsw.ef_search`` = max(200, limit)).
    """
    regular = results["regular_users"]
    heavy = results["heavy_users"]
    heavy_share = sum(o.size for o in owners if o.heavy) / sum(o.size for o in owners)
    out: dict[str, Any] = {"heavy_share_of_queries": round(heavy_share, 3)}

    def pick(rows: list[dict[str, Any]], mode: str, ef: int | None) -> dict[str, Any] | None:
        return next(
            (r for r in rows if r["mode"] == mode and r["limit"] == K and r["ef_search"] == ef),
            None,
        )

    # Retrieval asks for the HNSW path above exact_vector_limit memories (heavy users).
    for name, heavy_mode, heavy_ef in (
        ("exact_everywhere", "exact", None),
        ("hnsw_shared_index", "hnsw", 40),
        ("as_shipped", "owner_index", DEFAULT_EF_SEARCH),
    ):
        reg = pick(regular, "exact", None)
        hv = pick(heavy, heavy_mode, heavy_ef) if heavy else None
        if reg is None or (heavy and hv is None):
            continue  # that mode was not measured for every group
        lat, rec = list(reg["latencies_ms"]), list(reg["recalls"])
        if hv is not None and heavy_share > 0:
            n = max(1, round(len(lat) * heavy_share / (1 - heavy_share)))
            lat += [hv["latencies_ms"][i % len(hv["latencies_ms"])] for i in range(n)]
            rec += [hv["recalls"][i % len(hv["recalls"])] for i in range(n)]
        out[name] = {
            "queries": len(lat),
            **stats(lat),
            "recall_at_10": round(statistics.fmean(rec), 4),
        }
    return out


# -- main ---------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--count", type=int, default=1_000_000, help="memories to load")
    p.add_argument("--queries", type=int, default=1000, help="queries for regular users")
    p.add_argument("--heavy-queries", type=int, default=200, help="queries for heavy users")
    p.add_argument("--hnsw-queries", type=int, default=200, help="queries per HNSW setting")
    p.add_argument("--heavy-size", type=int, default=10_000, help="memories of a heavy user")
    p.add_argument("--ef", type=int, nargs="*", default=[40, 200, 1000], help="hnsw.ef_search")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--dir", type=Path, default=Path("/tmp/salon-memory-scale"))
    p.add_argument("--keep", action="store_true", help="keep the loaded cluster for a re-run")
    p.add_argument(
        "--covering-index",
        action="store_true",
        help="experiment: an owner index that INCLUDEs the vectors (dropped after the run)",
    )
    p.add_argument(
        "--owner-indexes",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="build the product's partial HNSW index per heavy user, measure the path retrieval takes",
    )
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/memory_scale.json")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    meta_path = args.dir / "meta.json"
    want_meta = {"count": args.count, "seed": args.seed, "heavy_size": args.heavy_size}
    reuse = meta_path.exists() and json.loads(meta_path.read_text()).get("meta") == want_meta
    if not reuse and args.dir.exists():
        shutil.rmtree(args.dir)
    t_start = time.perf_counter()
    cluster = Cluster(args.dir)
    try:
        owners = plan_owners(args.count, args.heavy_size, np.random.default_rng([args.seed, 0]))
        if reuse:
            saved = json.loads(meta_path.read_text())
            ids, timings = saved["ids"], saved["timings"]
            print("reusing the loaded cluster in", args.dir, flush=True)
        else:
            cluster.superuser_sql(
                f"CREATE ROLE {APP_ROLE} LOGIN PASSWORD '{APP_PASSWORD}'"
                " NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE",
                f"CREATE DATABASE {DATABASE} OWNER {APP_ROLE}",
            )
            cluster.superuser_sql("CREATE EXTENSION vector", database=DATABASE)
            t0 = time.perf_counter()
            ids = asyncio.run(create_owners(cluster.url(), owners))
            timings = {"owners_s": time.perf_counter() - t0}
            timings.update(asyncio.run(load(cluster, owners, ids, args.seed)))
            meta_path.write_text(json.dumps({"meta": want_meta, "ids": ids, "timings": timings}))
        sizes = cluster.superuser_sql(
            "SELECT pg_size_pretty(pg_table_size('memories')),"
            " pg_size_pretty(pg_relation_size('ix_memories_embedding')),"
            " pg_size_pretty(pg_relation_size('ix_memories_owner')),"
            " (SELECT extversion FROM pg_extension WHERE extname = 'vector'), version()",
            database=DATABASE,
        )[0][0]
        if args.covering_index:
            t0 = time.perf_counter()
            cluster.superuser_sql(COVERING_INDEX, "VACUUM memories", database=DATABASE)
            timings["covering_index_s"] = time.perf_counter() - t0
            covering = cluster.superuser_sql(
                "SELECT pg_size_pretty(pg_relation_size('ix_bench_owner_vectors'))",
                database=DATABASE,
            )[0][0][0]
        queries = asyncio.run(run_queries(cluster, owners, ids, args))
        if args.covering_index:
            queries["covering_index"] = {"definition": COVERING_INDEX, "size": covering}
            cluster.superuser_sql("DROP INDEX ix_bench_owner_vectors", database=DATABASE)
    finally:
        cluster.stop()
        if not args.keep:
            shutil.rmtree(args.dir, ignore_errors=True)
    heavy = [o for o in owners if o.heavy]
    report = {
        "benchmark": "memory_scale",
        "command": "benchmarks/memory_scale.py " + " ".join(sys.argv[1:]),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30),
        },
        "postgres": sizes[4].split(",")[0],
        "pgvector": sizes[3],
        "data": {
            "memories": args.count,
            "owners": len(owners),
            "tenants": len({o.tenant for o in owners}),
            "personas": len({o.persona for o in owners}),
            "heavy_users": len(heavy),
            "heavy_size": args.heavy_size,
            "regular_size_median": int(np.median([o.size for o in owners if not o.heavy])),
            "superseded_share": SUPERSEDED,
            "table_size": sizes[0],
            "hnsw_index_size": sizes[1],
            "owner_index_size": sizes[2],
        },
        "product_exact_vector_limit": DEFAULT_SCORING.exact_vector_limit,
        "load_timings_s": {k: round(v, 1) for k, v in timings.items()},
        "results": queries,
        "wall_s": round(time.perf_counter() - t_start, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
