"""Embedders: the real bundled MiniLM, and the OpenAI-compatible one against a loopback fake.

The MiniLM model loads once per module (``minilm`` fixture). Its worker queue
is not tied to an event loop, so the function-scoped test loops share it.
"""

from __future__ import annotations

import asyncio
import math
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from memory.embeddings import Embedder, EmbeddingError, create_embedder
from memory.embeddings.minilm import EXTRA_HINT, MiniLMEmbedder
from memory.embeddings.openai_compat import OpenAIEmbedder
from tests.fakes.embeddings_server import FakeEmbeddings, fake_vector
from tests.fakes.loopback import free_port


def dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def max_diff(a: list[list[float]], b: list[list[float]]) -> float:
    return max(abs(x - y) for va, vb in zip(a, b, strict=True) for x, y in zip(va, vb, strict=True))


SENTENCES = [
    "I love my dog",
    "my puppy is my favorite",
    "quarterly tax filing deadline",
    "She moved to Lisbon last spring",
    "The concert was cancelled because of the storm",
    "He prefers green tea over coffee",
    "Our team won the regional chess tournament",
    "I am allergic to peanuts",
    "The train to Berlin leaves at noon",
    "We adopted a grey cat named Pixel",
]


# -- the real MiniLM -----------------------------------------------------------


@pytest.fixture(scope="module")
def minilm() -> Iterator[MiniLMEmbedder]:
    embedder = MiniLMEmbedder(batch_size=32)
    asyncio.run(embedder.start())
    yield embedder
    asyncio.run(embedder.close())


@pytest.mark.slow
async def test_minilm_vectors_are_384d_unit_and_meaningful(minilm: MiniLMEmbedder) -> None:
    assert minilm.dimensions == 384 and minilm.model.endswith("all-MiniLM-L6-v2")
    assert await minilm.embed([]) == []
    dog, puppy, tax = await minilm.embed(SENTENCES[:3])
    for v in (dog, puppy, tax):
        assert len(v) == 384
        assert math.isclose(math.hypot(*v), 1.0, abs_tol=1e-4)
    assert dot(dog, puppy) > dot(dog, tax) + 0.2, (dot(dog, puppy), dot(dog, tax))
    assert await minilm.embed_one("I love my dog") == pytest.approx(dog, abs=1e-5)
    with pytest.raises(TypeError):
        await minilm.embed("not a list")


@pytest.mark.slow
async def test_minilm_keeps_order_across_batches(
    minilm: MiniLMEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = await minilm.embed(SENTENCES)  # one batch
    batches: list[int] = []
    encode = minilm._encode

    def counting(texts: list[str]) -> list[list[float]]:
        batches.append(len(texts))
        return encode(texts)

    monkeypatch.setattr(minilm, "_encode", counting)
    monkeypatch.setattr(minilm, "batch_size", 3)
    chunked = await minilm.embed(SENTENCES)
    assert batches == [3, 3, 3, 1]
    assert max_diff(whole, chunked) < 1e-5
    for i, v in enumerate(chunked):  # each vector is its own text's, not a neighbour's
        assert max(range(len(whole)), key=lambda j: dot(v, whole[j])) == i


@pytest.mark.slow
async def test_concurrent_callers_share_one_worker(
    minilm: MiniLMEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    texts = [f"{s} (note {i})" for i in range(4) for s in SENTENCES]
    alone = await minilm.embed(texts)
    threads: set[str] = set()
    encode = minilm._encode

    def recording(batch: list[str]) -> list[list[float]]:
        threads.add(threading.current_thread().name)
        return encode(batch)

    monkeypatch.setattr(minilm, "_encode", recording)
    monkeypatch.setattr(minilm, "batch_size", 4)
    parts = [texts[i : i + 10] for i in range(0, len(texts), 10)]
    results = await asyncio.gather(*(minilm.embed(p) for p in parts))
    together = [v for r in results for v in r]
    assert max_diff(alone, together) < 1e-5
    assert len(threads) == 1 and next(iter(threads)).startswith("salon-embed")


@pytest.mark.slow
async def test_event_loop_stays_responsive_while_embedding(minilm: MiniLMEmbedder) -> None:
    texts = [f"{SENTENCES[i % len(SENTENCES)]}, said person number {i}" for i in range(500)]
    gaps: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    tick = asyncio.create_task(ticker())
    began = time.perf_counter()
    vectors = await minilm.embed(texts)
    elapsed = time.perf_counter() - began
    done.set()
    await tick
    assert len(vectors) == 500
    print(
        f"\nMiniLM: 500 sentences in {elapsed:.2f}s = {500 / elapsed:.0f}/s "
        f"(batch {minilm.batch_size}); ticks {len(gaps)}, max loop gap {max(gaps) * 1000:.0f} ms"
    )
    assert len(gaps) > 10
    assert max(gaps) < 0.5


async def test_missing_packages_name_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    no_weights = MiniLMEmbedder(weights_package="salon_no_such_weights_package")
    with pytest.raises(EmbeddingError) as err:
        await no_weights.embed(["hello"])
    assert err.value.code == "embedding_unavailable"
    assert EXTRA_HINT in str(err.value) and "salon[local-models]" in EXTRA_HINT
    await no_weights.close()

    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # import now fails
    no_library = MiniLMEmbedder()
    with pytest.raises(EmbeddingError) as err:
        await no_library.start()
    assert err.value.code == "embedding_unavailable" and EXTRA_HINT in str(err.value)
    await no_library.close()


# -- a fake OpenAI-compatible embeddings server (tests/fakes/embeddings_server.py) --


@pytest.fixture(scope="module")
def fake_embeddings() -> Iterator[FakeEmbeddings]:
    server = FakeEmbeddings().start()
    yield server
    server.stop()


def openai_embedder(server: FakeEmbeddings, **options: Any) -> OpenAIEmbedder:
    defaults: dict[str, Any] = {
        "base_url": server.base_url,
        "api_key": None,
        "model": "fake-embed",
        "dimensions": 8,
        "max_retries": 0,
    }
    return OpenAIEmbedder(**(defaults | options))


@pytest.mark.parametrize("encoding_format", [None, "float"])
async def test_openai_batches_orders_and_normalizes(
    fake_embeddings: FakeEmbeddings, encoding_format: Any
) -> None:
    embedder = openai_embedder(fake_embeddings, batch_size=3, encoding_format=encoding_format)
    fake_embeddings.requests.clear()
    texts = [*SENTENCES[:6], ""]
    vectors = await embedder.embed(texts)
    sent = fake_embeddings.requests
    assert [len(r["input"]) for r in sent] == [3, 3, 1]
    assert all(r["model"] == "fake-embed" and "dimensions" not in r for r in sent)
    # The SDK asks for base64 unless told otherwise, and decodes either answer.
    assert {r["encoding_format"] for r in sent} == {encoding_format or "base64"}
    assert sent[-1]["input"] == [" "]  # the API rejects empty strings
    for text, vector in zip(texts, vectors, strict=True):
        raw = fake_vector(text or " ", 8)
        norm = math.hypot(*raw)
        assert vector == pytest.approx([x / norm for x in raw], abs=1e-5)
        assert math.isclose(math.hypot(*vector), 1.0, abs_tol=1e-6)
    assert await embedder.embed([]) == [] and len(sent) == 3  # no request for nothing
    await embedder.close()


async def test_openai_dimensions_are_sent_and_checked(fake_embeddings: FakeEmbeddings) -> None:
    fake_embeddings.requests.clear()
    small = openai_embedder(fake_embeddings, model="text-embedding-3-small", dimensions=16)
    assert len(await small.embed_one("hello")) == 16
    assert fake_embeddings.requests[-1]["dimensions"] == 16
    await small.close()

    wrong = openai_embedder(fake_embeddings, dimensions=16)  # the server makes 8-d vectors
    with pytest.raises(EmbeddingError) as err:
        await wrong.embed(["hello"])
    assert err.value.code == "embedding_bad_response"
    assert "SALON_EMBEDDINGS_DIMENSIONS" in str(err.value)
    await wrong.close()


async def test_openai_failures_are_embedding_errors(fake_embeddings: FakeEmbeddings) -> None:
    embedder = openai_embedder(fake_embeddings)
    with pytest.raises(EmbeddingError) as err:
        await embedder.embed(["fine", "this one [500]"])
    assert err.value.code == "embedding_error" and "500" in str(err.value)
    await embedder.close()

    impatient = openai_embedder(fake_embeddings, timeout=0.3)
    began = time.perf_counter()
    with pytest.raises(EmbeddingError) as err:
        await impatient.embed(["take your time [slow]"])
    assert err.value.code == "embedding_timeout"
    assert time.perf_counter() - began < 1.5
    await impatient.close()

    nobody = OpenAIEmbedder(
        base_url=f"http://127.0.0.1:{free_port()}/v1",
        api_key="x",
        model="m",
        dimensions=8,
        max_retries=0,
    )
    with pytest.raises(EmbeddingError) as err:
        await nobody.embed(["hello"])
    assert err.value.code == "embedding_unavailable"
    await nobody.close()


# -- the registry ----------------------------------------------------------------


async def test_registry_choices() -> None:
    default = create_embedder(provider=None)
    assert isinstance(default, MiniLMEmbedder) and default.dimensions == 384
    assert isinstance(create_embedder(provider="local"), MiniLMEmbedder)
    custom = create_embedder(provider="local", model="/models/bigger", dimensions=768)
    assert isinstance(custom, MiniLMEmbedder)
    assert (custom.model, custom.dimensions) == ("/models/bigger", 768)

    hosted = create_embedder(provider="openai", base_url=None, api_key="sk-x", model=None)
    assert isinstance(hosted, OpenAIEmbedder)
    assert (hosted.model, hosted.dimensions, hosted.send_dimensions) == (
        "text-embedding-3-small",
        1536,
        True,
    )
    implied = create_embedder(
        provider=None, base_url="http://127.0.0.1:1/v1", model="nomic-embed-text", dimensions=768
    )
    assert isinstance(implied, OpenAIEmbedder)
    assert (implied.dimensions, implied.send_dimensions) == (768, False)

    with pytest.raises(ValueError, match="SALON_EMBEDDINGS_DIMENSIONS"):
        create_embedder(provider="openai", base_url="http://x/v1", model="nomic-embed-text")
    with pytest.raises(ValueError, match="unknown embeddings provider"):
        create_embedder(provider="word2vec")
    for embedder in (default, custom, hosted, implied):
        assert isinstance(embedder, Embedder)
        await embedder.close()
