"""Voice benchmark: first-audio latency of spoken replies, TTS and STT real-time factors.

In process, with the real providers (embedded Piper when installed, and
espeak-ng), at 1 and N concurrent voice sessions:

- ``first_audio_ms``: from the moment the reply's first sentence is complete
  (its text fed to the :class:`agents.voice.ReplySpeaker` together with the
  next word, which is what confirms a period) to the first
  ``response.audio.delta`` handed to the event log;
- ``tts_first_chunk_ms``: the same sentence synthesized directly (provider
  only), so ``server_added_ms`` = the difference (segmenting, the speech
  pipeline, resampling, base64, chunking);
- ``tts_rtf``: synthesis time / audio duration for a whole multi-sentence reply;
- ``stt_rtf``: Whisper transcription time / audio duration.

    .venv/bin/python benchmarks/voice.py [--sessions 1,10] [--providers piper,espeak]

Targets (docs/voice.md): first audio <= 150 ms, server-added < 30 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agents.voice import ReplySpeaker
from media.audio import AudioChunk, resample
from media.tts.base import TTSProvider, VoiceSettings
from media.tts.registry import create_tts
from media.voice_config import VoiceConfig

FIRST = "Hello there, it is good to hear from you again."
REST = [
    " I was just thinking about the garden.",
    " The roses came out early this year, and the tomatoes are finally red.",
    " Would you like to hear how I kept the snails away?",
]


async def _provider(name: str) -> TTSProvider:
    tts = create_tts(VoiceConfig(tts_provider=name))
    await tts.start()
    return tts


async def one_session(tts: TTSProvider) -> dict[str, float]:
    """One spoken reply; returns its latencies (ms) and the reply's RTF."""
    first_at: list[float] = []
    audio_bytes = 0
    done = asyncio.Event()

    async def append(event: dict[str, Any]) -> None:
        nonlocal audio_bytes
        if event["type"] == "response.audio.delta":
            if not first_at:
                first_at.append(time.perf_counter())
            audio_bytes += len(event["audio"]) * 3 // 4
        elif event["type"] == "response.audio.done":
            done.set()

    async def getter() -> TTSProvider:
        return tts

    speaker = ReplySpeaker(getter, VoiceSettings(), "resp_bench", append)
    started = time.perf_counter()
    speaker.feed(FIRST + " I")  # the next word confirms the sentence end
    sentence_complete = time.perf_counter()
    for part in REST:
        await asyncio.sleep(0.05)  # a model writing ~20 tokens/s per sentence chunk
        speaker.feed(part)
    await speaker.settle(asyncio.Event(), stop=False)
    total = time.perf_counter() - started
    seconds = audio_bytes / 2 / speaker.sample_rate
    return {
        "first_audio_ms": (first_at[0] - sentence_complete) * 1000 if first_at else float("nan"),
        "reply_seconds": total,
        "audio_seconds": seconds,
    }


async def tts_first_chunk(tts: TTSProvider) -> float:
    start = time.perf_counter()
    stream = tts.synthesize(FIRST, VoiceSettings())
    async for _ in stream:
        break
    elapsed = (time.perf_counter() - start) * 1000
    await stream.aclose()  # type: ignore[attr-defined]
    return elapsed


async def tts_rtf(tts: TTSProvider) -> float:
    text = FIRST + "".join(REST)
    start = time.perf_counter()
    samples = 0
    rate = 22050
    async for chunk in tts.synthesize(text, VoiceSettings()):
        samples += chunk.samples
        rate = chunk.sample_rate
    return (time.perf_counter() - start) / (samples / rate)


async def stt_rtf(tts: TTSProvider, sessions: int) -> dict[str, float]:
    from media.stt.registry import create_stt

    parts = []
    rate = 22050
    async for chunk in tts.synthesize(FIRST + "".join(REST), VoiceSettings()):
        parts.append(chunk.data)
        rate = chunk.sample_rate
    audio = AudioChunk(resample(b"".join(parts), rate, 16000), 16000)
    stt = create_stt(VoiceConfig())
    await stt.start()
    try:
        await stt.transcribe(audio)  # warm-up
        start = time.perf_counter()
        await asyncio.gather(*(stt.transcribe(audio) for _ in range(sessions)))
        elapsed = time.perf_counter() - start
    finally:
        await stt.close()
    # Calls are serialized per provider: the per-utterance RTF under load is elapsed/n.
    return {
        "stt_rtf": elapsed / sessions / audio.duration,
        "stt_wall_rtf": elapsed / audio.duration,
    }


async def run(providers: list[str], sessions: list[int], with_stt: bool) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for name in providers:
        try:
            tts = await _provider(name)
        except Exception as exc:
            print(f"{name}: unavailable ({exc})", file=sys.stderr)
            continue
        try:
            await one_session(tts)  # warm-up
            direct = statistics.median([await tts_first_chunk(tts) for _ in range(5)])
            rtf = statistics.median([await tts_rtf(tts) for _ in range(3)])
            for n in sessions:
                results = await asyncio.gather(*(one_session(tts) for _ in range(n)))
                firsts = sorted(r["first_audio_ms"] for r in results)
                p50 = statistics.median(firsts)
                row = {
                    "provider": name,
                    "sessions": n,
                    "first_audio_ms_p50": round(p50, 1),
                    "first_audio_ms_max": round(firsts[-1], 1),
                    "tts_first_chunk_ms": round(direct, 1),
                    "server_added_ms": round(p50 - direct, 1) if n == 1 else None,
                    "tts_rtf": round(rtf, 3),
                }
                if with_stt and name == providers[0]:
                    row.update({k: round(v, 3) for k, v in (await stt_rtf(tts, n)).items()})
                rows.append(row)
                print(json.dumps(row), flush=True)
        finally:
            await tts.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", default="1,10")
    parser.add_argument("--providers", default="piper,espeak")
    parser.add_argument("--no-stt", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    rows = asyncio.run(
        run(
            args.providers.split(","),
            [int(n) for n in args.sessions.split(",")],
            not args.no_stt,
        )
    )
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
