"""LoCoMo evidence recall of Salon's long-term memory (docs/memory.md).

    .venv/bin/python benchmarks/locomo_recall.py [--data DIR] [--k 5 10 20]

For each conversation (one JSON file in DIR, the layout of shared/data/locomo;
the original ``locomo10.json`` layout, a list of samples with a
``conversation`` object, is read too), the memory pipeline is run for real on
a fresh temporary SQLite store: one tenant, one persona (``speaker_b``), one
user (``speaker_a``). Every dialog turn becomes one ``turn`` memory item
(``[session date] Speaker: text``, an image's caption appended,
``source_refs=[dia_id]``), embedded in batches by the bundled MiniLM and
stored with :func:`memory.retrieval.remember`. Then every question that has
evidence is asked through :func:`memory.retrieval.search`.

Strict hit@k: every evidence ``dia_id`` of the question is among the turns
covered by the top-k items (an item covers the ``dia_id``s in its
``source_refs``; here exactly one). Reported per category and overall, with
p50/p95 latency of ``search`` (query embedding included). The last line of
stdout is one JSON object with ``recall@K`` for each K and ``questions``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from memory.db import create_engine, normalize_database_url  # noqa: E402
from memory.embeddings import Embedder, create_embedder  # noqa: E402
from memory.memories import MemoryStore, NewMemory  # noqa: E402
from memory.migrate import migrate  # noqa: E402
from memory.retrieval import remember, search  # noqa: E402
from memory.store import Store  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "locomo"
CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop", 5: "adversarial"}
BASELINES = {  # shared/BENCHMARKS.md, strict recall, one item = one turn
    "BM25 over turns": (0.475, 0.541, 0.615),
    "MiniLM cosine over turns": (0.367, 0.463, 0.554),
    "RRF of the two": (0.476, 0.562, 0.657),
}


@dataclass
class Turn:
    dia_id: str
    speaker: str
    text: str
    when: datetime
    date_text: str


@dataclass
class Conversation:
    name: str
    user: str
    persona: str
    turns: list[Turn]
    questions: list[dict[str, Any]]


@dataclass
class Results:
    ks: list[int]
    hits: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    by_category: dict[Any, dict[int, int]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(int))
    )
    count_by_category: dict[Any, int] = field(default_factory=lambda: defaultdict(int))
    questions: int = 0
    unresolvable: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    turns: int = 0
    ingest_s: float = 0.0


# -- reading ----------------------------------------------------------------------

_DATE_FORMATS = ("%I:%M %p on %d %B, %Y", "%I:%M %p on %d %b, %Y", "%d %B, %Y", "%d %B %Y")


def parse_date(text: str) -> datetime | None:
    for fmt in _DATE_FORMATS:
        try:
            return datetime.strptime(text.strip(), fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    return None


def load_conversations(folder: Path) -> list[Conversation]:
    out: list[Conversation] = []
    for path in sorted(folder.glob("*.json")):
        data = json.loads(path.read_text())
        samples = data if isinstance(data, list) else [data]
        for n, sample in enumerate(samples):
            name = path.stem if len(samples) == 1 else f"{path.stem}#{sample.get('sample_id', n)}"
            out.append(_conversation(name, sample))
    return out


def _conversation(name: str, sample: dict[str, Any]) -> Conversation:
    conv = sample.get("conversation", sample)
    sessions = sorted(
        (int(m.group(1)), key)
        for key in conv
        if (m := re.fullmatch(r"session_(\d+)", key)) and isinstance(conv[key], list)
    )
    turns: list[Turn] = []
    fallback = datetime(2000, 1, 1, tzinfo=UTC)
    for number, key in sessions:
        date_text = str(conv.get(f"{key}_date_time", "")).strip()
        start = parse_date(date_text) or fallback + timedelta(days=number)
        for i, turn in enumerate(conv[key]):
            text = str(turn.get("text", ""))
            caption = turn.get("blip_caption")
            if caption:
                text = f"{text} [shares {caption}]"
            # One second apart keeps the order of the turns within a session.
            when = start + timedelta(seconds=i)
            turns.append(Turn(str(turn["dia_id"]), str(turn["speaker"]), text, when, date_text))
    questions = [q for q in sample.get("qa", []) if q.get("evidence")]
    return Conversation(
        name=name,
        user=str(conv.get("speaker_a", "user")),
        persona=str(conv.get("speaker_b", "persona")),
        turns=turns,
        questions=questions,
    )


def evidence_ids(evidence: list[Any]) -> set[str]:
    """Evidence dia_ids; a few annotations join two ids ("D8:6; D9:17") or add a colon."""
    out: set[str] = set()
    for entry in evidence:
        for part in re.split(r"[;,\s]+", str(entry)):
            if not part:
                continue
            m = re.fullmatch(r"D:?(\d+):(\d+)", part)
            out.add(f"D{m.group(1)}:{m.group(2)}" if m else part)
    return out


def turn_text(turn: Turn) -> str:
    return f"[{turn.date_text}] {turn.speaker}: {turn.text}"


# -- running ----------------------------------------------------------------------


async def run_conversation(
    conv: Conversation, embedder: Embedder, results: Results, workdir: Path
) -> None:
    engine = create_engine(normalize_database_url(None, workdir))
    await migrate(engine)
    store = Store(engine)
    memories = MemoryStore(store)
    try:
        tenant = await store.create_tenant(f"locomo {conv.name}")
        persona = await store.create_persona(
            tenant.id, slug="persona", name=conv.persona, data={"name": conv.persona}
        )
        user = await store.get_or_create_user(tenant.id, conv.user, conv.user)
        items = [
            NewMemory(
                persona_id=persona.id,
                user_id=user.id,
                kind="turn",
                text=turn_text(t),
                source_refs=[t.dia_id],
                valid_from=t.when,
            )
            for t in conv.turns
        ]
        began = time.perf_counter()
        await remember(memories, embedder, tenant.id, items)
        results.ingest_s += time.perf_counter() - began
        results.turns += len(items)
        known = {t.dia_id for t in conv.turns}
        now = max(t.when for t in conv.turns) + timedelta(days=1) if conv.turns else None
        top = max(results.ks)
        for qa in conv.questions:
            wanted = evidence_ids(qa["evidence"])
            began = time.perf_counter()
            found = await search(
                memories,
                embedder,
                tenant.id,
                persona.id,
                user.id,
                str(qa["question"]),
                k=top,
                now=now,
            )
            results.latencies_ms.append((time.perf_counter() - began) * 1000)
            category = qa.get("category", "?")
            results.questions += 1
            results.count_by_category[category] += 1
            if not wanted <= known:
                results.unresolvable += 1
            for k in results.ks:
                covered = {ref for item in found[:k] for ref in item.memory.source_refs}
                if wanted <= covered:
                    results.hits[k] += 1
                    results.by_category[category][k] += 1
    finally:
        await store.close()


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    folder = Path(args.data)
    conversations = load_conversations(folder)
    if not conversations:
        raise SystemExit(f"no conversations (*.json) in {folder}")
    # recall@5/10/20 are always reported (the summary line promises them).
    ks = sorted(set(args.k) | {5, 10, 20})
    results = Results(ks=ks)
    embedder = create_embedder(provider="local")
    began = time.perf_counter()
    await embedder.start()
    load_s = time.perf_counter() - began
    try:
        with tempfile.TemporaryDirectory(prefix="locomo-") as tmp:
            for n, conv in enumerate(conversations):
                workdir = Path(tmp) / f"c{n}"
                workdir.mkdir()
                t0 = time.perf_counter()
                await run_conversation(conv, embedder, results, workdir)
                print(
                    f"{conv.name}: {len(conv.turns)} turns, {len(conv.questions)} questions "
                    f"({time.perf_counter() - t0:.1f}s)",
                    file=sys.stderr,
                )
    finally:
        await embedder.close()
    total = time.perf_counter() - began
    return report(results, load_s, total, len(conversations))


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def report(results: Results, load_s: float, total_s: float, conversations: int) -> dict[str, Any]:
    n = max(1, results.questions)
    ks = results.ks
    print(
        f"LoCoMo strict evidence recall: {conversations} conversations, {results.turns} turn "
        f"items (one item = one dialog turn), {results.questions} questions with evidence"
        + (
            f" ({results.unresolvable} cite a dia_id that is not a turn)"
            if results.unresolvable
            else ""
        )
    )
    header = f"{'category':<22}{'questions':>10}" + "".join(f"{'@' + str(k):>8}" for k in ks)
    print(header)
    for category in sorted(results.count_by_category, key=str):
        count = results.count_by_category[category]
        label = f"{category} {CATEGORIES.get(category, '')}".strip()
        row = "".join(f"{results.by_category[category][k] / count:>8.3f}" for k in ks)
        print(f"{label:<22}{count:>10}{row}")
    overall = {k: results.hits[k] / n for k in ks}
    print(f"{'overall':<22}{results.questions:>10}" + "".join(f"{overall[k]:>8.3f}" for k in ks))
    for name, figures in BASELINES.items():
        known = dict(zip((5, 10, 20), figures, strict=True))
        row = "".join(f"{known[k]:>8.3f}" if k in known else f"{'-':>8}" for k in ks)
        print(f"{'baseline: ' + name:<32}" + row)
    p50 = statistics.median(results.latencies_ms) if results.latencies_ms else 0.0
    p95 = _percentile(results.latencies_ms, 0.95)
    print(
        f"retrieval latency: p50 {p50:.1f} ms, p95 {p95:.1f} ms per question; "
        f"ingest {results.turns} turns in {results.ingest_s:.1f}s "
        f"({results.turns / max(results.ingest_s, 1e-9):.0f} turns/s, embedding included); "
        f"model load {load_s:.1f}s; total {total_s:.1f}s"
    )
    summary: dict[str, Any] = {f"recall@{k}": round(overall[k], 4) for k in ks}
    summary.update(
        questions=results.questions,
        conversations=conversations,
        turns=results.turns,
        item="one dialog turn",
        latency_p50_ms=round(p50, 2),
        latency_p95_ms=round(p95, 2),
        by_category={
            str(c): {
                f"recall@{k}": round(results.by_category[c][k] / results.count_by_category[c], 4)
                for k in ks
            }
            for c in sorted(results.count_by_category, key=str)
        },
    )
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="folder of LoCoMo *.json")
    parser.add_argument("--k", type=int, nargs="+", default=[5, 10, 20])
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.WARNING)
    summary = asyncio.run(main_async(args))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
