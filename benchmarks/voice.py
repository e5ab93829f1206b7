"""Voice benchmark: first-audio latency of spoken replies, TTS and STT real-time factors.

In process, with the real providers (embedded Piper when installed, and
espeak-ng), at 1 and N concurrent voice sessions, through the path the
server uses (:class:`agents.voice.ReplyVoice` -> ``ReplySpeaker``: first
clause cut, emotion and language per sentence, the chosen output format):

- ``first_audio_ms``: from the moment the reply's first sentence is complete
  (its text fed to the speaker together with the next word, which is what
  confirms a period) to the first ``response.audio.delta`` handed to the
  event log; all N sessions get their sentence at the same instant;
- ``tts_first_chunk_ms``: the reply's first synthesis unit (the first clause,
  or the whole first sentence with ``--first-clause-words 0``) synthesized
  directly (provider only), so ``server_added_ms`` = the difference
  (segmenting, style, the speech pipeline, resampling, encoding, base64);
- ``tts_rtf``: synthesis time / audio duration for a whole multi-sentence reply;
- ``stt_rtf``: Whisper transcription time / audio duration.

    .venv/bin/python benchmarks/voice.py [--sessions 1,10] [--providers piper,espeak]
        [--first-clause-words 2] [--format pcm16|mp3|opus] [--out FILE]

Targets (docs/voice.md): first audio <= 150 ms, server-added < 30 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agents.speech import SentenceSegmenter
from agents.voice import FIRST_CLAUSE_WORDS, ReplyVoice
from agents.voice_format import OutputFormat, parse_output_format
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


async def one_session(voice: ReplyVoice, output: OutputFormat) -> dict[str, float]:
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

    speaker = voice.speaker({}, "resp_bench", append, output)
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


def first_unit(clause_words: int) -> str:
    """The text the speaker synthesizes first: the first clause, or the first sentence."""
    return SentenceSegmenter(first_clause_words=clause_words).push(FIRST + " I")[0].strip()


async def tts_first_chunk(tts: TTSProvider, text: str) -> float:
    start = time.perf_counter()
    stream = tts.synthesize(text, VoiceSettings())
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


async def run(
    providers: list[str],
    sessions: list[int],
    with_stt: bool,
    clause_words: int = FIRST_CLAUSE_WORDS,
    output: OutputFormat | None = None,
) -> list[dict[str, Any]]:
    output = output or OutputFormat()
    rows: list[dict[str, Any]] = []
    for name in providers:
        try:
            tts = await _provider(name)
        except Exception as exc:
            print(f"{name}: unavailable ({exc})", file=sys.stderr)
            continue

        async def getter(tts: TTSProvider = tts) -> TTSProvider:
            return tts

        voice = ReplyVoice(getter, first_clause_words=clause_words)
        await voice.start()  # the emotion/language models, as the server does at start
        try:
            await one_session(voice, output)  # warm-up
            unit = first_unit(clause_words)
            direct = statistics.median([await tts_first_chunk(tts, unit) for _ in range(5)])
            rtf = statistics.median([await tts_rtf(tts) for _ in range(3)])
            provider_rows: list[dict[str, Any]] = []
            for n in sessions:
                results = await asyncio.gather(*(one_session(voice, output) for _ in range(n)))
                firsts = sorted(r["first_audio_ms"] for r in results)
                p50 = statistics.median(firsts)
                row: dict[str, Any] = {
                    "provider": name,
                    "sessions": n,
                    "first_unit": unit,
                    "format": output.type,
                    "first_audio_ms_p50": round(p50, 1),
                    "first_audio_ms_max": round(firsts[-1], 1),
                    "tts_first_chunk_ms": round(direct, 1),
                    "server_added_ms": round(p50 - direct, 1) if n == 1 else None,
                    "tts_rtf": round(rtf, 3),
                }
                provider_rows.append(row)
            # STT after all TTS rows: right after a Whisper decode its OpenMP
            # threads still spin for a while and would slow the next TTS row.
            for row in provider_rows:
                if with_stt and name == providers[0]:
                    stt = await stt_rtf(tts, int(row["sessions"]))
                    row.update({k: round(v, 3) for k, v in stt.items()})
                rows.append(row)
                print(json.dumps(row), flush=True)
        finally:
            await voice.close()
            await tts.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", default="1,10")
    parser.add_argument("--providers", default="piper,espeak")
    parser.add_argument("--no-stt", action="store_true")
    parser.add_argument(
        "--first-clause-words",
        type=int,
        default=FIRST_CLAUSE_WORDS,
        help="cut the reply's first clause after this many words (0: whole first sentence)",
    )
    parser.add_argument("--format", default="pcm16", help="pcm16, mp3 or opus")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    rows = asyncio.run(
        run(
            args.providers.split(","),
            [int(n) for n in args.sessions.split(",")],
            not args.no_stt,
            args.first_clause_words,
            parse_output_format(args.format),
        )
    )
    if args.out:
        result = {
            "benchmark": "voice",
            "command": " ".join(["benchmarks/voice.py", *sys.argv[1:]]),
            "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
            "rows": rows,
        }
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
