"""Voice in conversations: speak replies as they stream, turn input audio into messages.

Socket-free, like the rest of ``agents``: the WebSocket layer pumps frames
(server/ws.py), this module decides what they mean (docs/voice.md, "Voice
over the WebSocket").

- :class:`ReplyVoice` is held by the conversation service; for each reply
  that must be spoken it makes a :class:`ReplySpeaker`, which the turn engine
  feeds with the reply's text deltas (through the events it appends) and
  waits for before the final event. Audio goes to the conversation's event
  log as ``response.audio.delta`` events, so a resumed client replays it:
  PCM16, or one MP3 / Ogg Opus stream cut into pieces (agents/voice_format.py).
  Each sentence's emotion, language and speaker come from
  agents/voice_style.py.
- :class:`AudioInput` is one socket's microphone: a bounded PCM buffer, an
  optional server-side VAD, and transcription with the STT provider.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import structlog

from agents.speech import SentenceSegmenter, SpeechStream
from agents.voice_format import OutputFormat, ReplyEncoder, warm_up_encoders
from agents.voice_style import (
    OptionalTTSFactory,
    ReplyStyle,
    StyleSettings,
    fallback_from_config,
    warm_up,
)
from media.audio import AudioChunk
from media.stt.base import STTProvider
from media.tts.base import TTSProvider, VoiceSettings
from media.voice_config import VoiceConfig

log = structlog.get_logger(__name__)

OUTPUT_RATE = 24000  # one rate for every provider: OpenAI's pcm default
CHUNK_MS = 200  # audio per response.audio.delta: ~13 KB of base64, keeps the log bounded
IDLE_FLUSH_SECONDS = 0.05  # a partial chunk goes out when the TTS pauses this long
INPUT_RATE = 16000
MAX_INPUT_SECONDS = 60.0
# The reply's first piece ends at the first clause break after this many
# words: a short first synthesis, so the first audio comes sooner.
FIRST_CLAUSE_WORDS = 2

Append = Callable[[dict[str, Any]], Awaitable[Any]]
# (tenant id, the persona's voice, the speaking provider's name) -> the voice
# to speak with: e.g. a cloned voice id turned into the provider's own.
ResolveVoice = Callable[[str, VoiceSettings, str], Awaitable[VoiceSettings]]


def persona_voice(data: dict[str, Any], default: VoiceSettings | None = None) -> VoiceSettings:
    """The persona's :class:`VoiceSettings` from its ``voice`` field.

    ``voice`` is Salon persona JSON's field, or a Character Card's
    ``extensions.salon.voice`` (agents/cards.py reads both into ``voice``;
    the extension is read here too for data stored before that). A string
    is a voice id; an object may carry ``provider`` (informational: the
    configured provider speaks), ``voice`` (or ``id``), ``language``,
    ``speed`` and ``emotion``. Anything missing or malformed falls back to
    ``default`` (the configured voice). A voice id meant for another
    provider is dropped later (:meth:`ReplySpeaker.voice_for`).
    """
    base = default or VoiceSettings()
    raw = _raw_voice(data)
    if isinstance(raw, str) and raw.strip():
        return VoiceSettings(voice=raw.strip(), language=base.language, speed=base.speed)
    if not isinstance(raw, dict):
        return base
    voice = raw.get("voice", raw.get("id"))
    language = raw.get("language")
    speed = raw.get("speed")
    emotion = raw.get("emotion")
    return VoiceSettings(
        voice=voice if isinstance(voice, str) and voice else base.voice,
        language=language if isinstance(language, str) and language else base.language,
        speed=float(speed)
        if isinstance(speed, int | float) and not isinstance(speed, bool) and 0.25 <= speed <= 4
        else base.speed,
        emotion=emotion if isinstance(emotion, str) and emotion else base.emotion,
    )


def _raw_voice(data: dict[str, Any]) -> Any:
    raw = data.get("voice")
    if raw is None:
        ext = data.get("extensions")
        salon = ext.get("salon") if isinstance(ext, dict) else None
        raw = salon.get("voice") if isinstance(salon, dict) else None
    return raw


def persona_voice_fixed(data: dict[str, Any]) -> frozenset[str]:
    """The voice fields the persona sets itself (``language``, ``emotion``): never overridden."""
    raw = _raw_voice(data)
    if not isinstance(raw, dict):
        return frozenset()
    return frozenset(
        key for key in ("language", "emotion") if isinstance(raw.get(key), str) and raw[key]
    )


def persona_voice_provider(data: dict[str, Any]) -> str | None:
    """The provider the persona's voice id was chosen for, if it says."""
    raw = _raw_voice(data)
    provider = raw.get("provider") if isinstance(raw, dict) else None
    if not isinstance(provider, str) or not provider.strip():
        return None
    provider = provider.strip().lower()
    return "espeak" if provider == "espeak-ng" else provider


class ReplyVoice:
    """Makes a :class:`ReplySpeaker` per spoken reply; the TTS providers are built on first use.

    ``tts`` builds (once) the configured provider; ``fallback`` the one that
    speaks languages it cannot (default: ``SALON_VOICE_LANGUAGE_FALLBACK``
    from ``config``). ``config`` (default: the environment's) also says
    whether emotion and language vary per sentence. ``resolve_voice`` is
    awaited once per reply before it is spoken (cloned voices: the voice
    catalog's ``resolve``); if it raises, the text reply goes on and
    ``response.audio.done`` carries the error.
    """

    def __init__(
        self,
        tts: Callable[[], Awaitable[TTSProvider]],
        *,
        default: VoiceSettings | None = None,
        sample_rate: int = OUTPUT_RATE,
        chunk_ms: int = CHUNK_MS,
        config: VoiceConfig | None = None,
        fallback: OptionalTTSFactory | None = None,
        resolve_voice: ResolveVoice | None = None,
        first_clause_words: int = FIRST_CLAUSE_WORDS,
    ) -> None:
        config = config or VoiceConfig()
        self._tts = tts
        self.default = default or VoiceSettings()
        self.sample_rate = sample_rate
        self.chunk_ms = chunk_ms
        self.style = StyleSettings.from_config(config)
        self._fallback = fallback if fallback is not None else fallback_from_config(config)
        self.resolve_voice = resolve_voice
        self.first_clause_words = first_clause_words
        # Made inside a running loop (the app's startup): load the models in the
        # background now, so the first spoken reply does not wait ~1-2 s for them.
        self._warming: asyncio.Future[None] | None = None
        with contextlib.suppress(RuntimeError):  # no running loop: start() or first reply
            self._warming = asyncio.get_running_loop().create_task(self.start())

    async def start(self) -> None:
        """Load the emotion/language models and the codecs now, not with the first spoken reply."""
        started = time.perf_counter()
        if self.style.emotion or self.style.detect_language:
            await warm_up()
        try:
            await asyncio.to_thread(warm_up_encoders)
        except Exception as exc:  # a broken codec: session.start refuses that format anyway
            log.warning("audio_encoders_unavailable", error=repr(exc))
        # Benchmarks wait for this line: the loading takes a core for a second or two.
        log.info("voice_models_loaded", seconds=round(time.perf_counter() - started, 2))

    async def close(self) -> None:
        """Release the fallback provider (the main one belongs to whoever built it)."""
        if self._warming is not None and not self._warming.done():
            self._warming.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._warming
        close = getattr(self._fallback, "close", None)
        if close is not None:
            await close()

    def speaker(
        self,
        persona_data: dict[str, Any],
        response_id: str,
        append: Append,
        output: OutputFormat | bool | None = None,
        tenant_id: str | None = None,
    ) -> ReplySpeaker:
        """A speaker for one reply; ``output`` is the format the reply's audio is sent in."""
        if not isinstance(output, OutputFormat):  # True/None: PCM16 at the default rate
            output = OutputFormat(sample_rate=self.sample_rate)
        return ReplySpeaker(
            self._tts,
            persona_voice(persona_data, self.default),
            response_id,
            append,
            sample_rate=output.sample_rate,
            chunk_ms=self.chunk_ms,
            provider=persona_voice_provider(persona_data),
            default=self.default,
            output=output,
            tenant_id=tenant_id,
            resolve_voice=self.resolve_voice,
            style=self.style,
            fixed=persona_voice_fixed(persona_data),
            fallback=self._fallback,
            first_clause_words=self.first_clause_words,
        )


class ReplySpeaker:
    """Speaks one reply: text deltas in (:meth:`feed`), ``response.audio.delta`` events out.

    Implements the turn engine's ``ReplySpeech`` hook (agents/turns.py):
    :meth:`settle` waits until the audio is all out (or stops it at once on a
    cancel), :meth:`heard` is what a cancelled reply is stored as.
    """

    def __init__(
        self,
        tts: Callable[[], Awaitable[TTSProvider]],
        voice: VoiceSettings,
        response_id: str,
        append: Append,
        *,
        sample_rate: int = OUTPUT_RATE,
        chunk_ms: int = CHUNK_MS,
        provider: str | None = None,
        default: VoiceSettings | None = None,
        output: OutputFormat | None = None,
        tenant_id: str | None = None,
        resolve_voice: ResolveVoice | None = None,
        style: StyleSettings | None = None,
        fixed: frozenset[str] = frozenset(),
        fallback: OptionalTTSFactory | None = None,
        first_clause_words: int = 0,
    ) -> None:
        self._tts = tts
        self.voice = voice
        self.provider = provider  # the provider the persona's voice id is for
        self.default = default or VoiceSettings()
        self.response_id = response_id
        self._append = append
        self.sample_rate = sample_rate
        self.output = output or OutputFormat(sample_rate=sample_rate)
        if self.output.sample_rate != sample_rate:
            self.output = replace(self.output, sample_rate=sample_rate)
        self._encoder: ReplyEncoder | None = self.output.encoder()
        self.tenant_id = tenant_id
        self._resolve_voice = resolve_voice
        # Without settings (direct use, tests) every sentence sounds the same.
        self.style_settings = style or StyleSettings(emotion=False, detect_language=False)
        self._fixed = fixed
        self._fallback = fallback
        self._first_clause_words = first_clause_words
        self.style: ReplyStyle | None = None
        # Whole samples only: a chunk never splits one.
        self._chunk_bytes = max(2, sample_rate * chunk_ms // 1000 * 2)
        self._deltas: asyncio.Queue[str | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.stream: SpeechStream | None = None
        self.sent_bytes = 0
        self.chunks = 0
        self.error: Exception | None = None
        self._stopped = False  # barge-in: nothing more goes to the log

    @property
    def sent_seconds(self) -> float:
        return self.sent_bytes / 2 / self.sample_rate

    def feed(self, delta: str) -> None:
        """Text the reply just showed; speaking starts with the first delta."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"speak:{self.response_id}")
        self._deltas.put_nowait(delta)

    def voice_for(self, provider: str) -> VoiceSettings:
        """The persona's voice, without a voice id chosen for another provider.

        An ElevenLabs voice id means nothing to espeak-ng: the configured
        default voice speaks instead (language and speed still apply).
        """
        if self.provider is None or self.provider == provider:
            return self.voice
        return replace(self.voice, voice=self.default.voice)

    async def _text(self) -> AsyncIterator[str]:
        while True:
            delta = await self._deltas.get()
            if delta is None:
                return
            yield delta

    async def _send(self, pcm: bytes, *, last: bool = False) -> None:
        if self._stopped:
            return  # audio still in hand at a cancel is dropped, not logged
        data = pcm
        if self._encoder is not None:
            data = await self._encoder.encode(pcm) if pcm else b""
            if last:
                data += await self._encoder.finish()
            if self._stopped:
                return
        # Played time and heard text are counted in PCM, before any encoding.
        self.sent_bytes += len(pcm)
        if not data:
            return  # the encoder holds it (look-ahead): it comes with the next piece
        await self._append(
            {
                "type": "response.audio.delta",
                "response_id": self.response_id,
                "audio": base64.b64encode(data).decode("ascii"),
                "format": self.output.as_dict(),
            }
        )
        self.chunks += 1

    async def _voice(self, tts: TTSProvider) -> VoiceSettings:
        voice = self.voice_for(tts.name)
        if self._resolve_voice is not None:
            voice = await self._resolve_voice(self.tenant_id or "", voice, tts.name)
        return voice

    async def _run(self) -> None:
        try:
            tts = await self._tts()
            voice = await self._voice(tts)
            settings = self.style_settings
            if settings.emotion or settings.detect_language:
                await warm_up()  # once per process (ReplyVoice.start does it ahead)
            self.style = ReplyStyle(
                tts, voice, settings=settings, fixed=self._fixed, fallback=self._fallback
            )
            self.stream = SpeechStream(
                self._text(),
                tts,
                voice,
                sample_rate=self.sample_rate,
                plan=self.style,
                segmenter=SentenceSegmenter(first_clause_words=self._first_clause_words),
            )
            source = aiter(self.stream)
            pending = b""
            upcoming: asyncio.Future[Any] | None = None
            try:
                while True:
                    if upcoming is None:
                        upcoming = asyncio.ensure_future(anext(source))
                    if pending:
                        # A partial chunk waits for more audio only briefly: the
                        # end of a sentence must not wait for the next sentence.
                        done, _ = await asyncio.wait({upcoming}, timeout=IDLE_FLUSH_SECONDS)
                        if not done:
                            await self._send(pending)
                            pending = b""
                            continue
                    try:
                        chunk = await upcoming
                    except StopAsyncIteration:
                        break
                    upcoming = None
                    pending += chunk.audio.data
                    # The reply's first audio goes out at once, whatever its size:
                    # it is what the listener waits for.
                    while len(pending) >= self._chunk_bytes or (pending and not self.chunks):
                        piece = pending[: self._chunk_bytes]
                        pending = pending[len(piece) :]
                        await self._send(piece)
                await self._send(pending, last=True)
            finally:
                if upcoming is not None and not upcoming.done():
                    upcoming.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await upcoming
                elif upcoming is not None and not upcoming.cancelled():
                    upcoming.exception()  # seen: the end (StopAsyncIteration) is no error
                await self.stream.aclose()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # The text reply goes on; response.audio.done says why the audio stopped.
            log.warning("reply_speech_failed", response_id=self.response_id, error=repr(exc))
            self.error = exc

    async def settle(self, cancelled: asyncio.Event, *, stop: bool) -> bool:
        """End of the text: wait for the rest of the audio, or stop it now.

        Stops at once when ``stop`` (the reply failed or was cancelled) or
        when ``cancelled`` is set while waiting (barge-in during the last
        sentences). Appends ``response.audio.done`` when all audio went out.
        Returns whether the audio was interrupted.
        """
        if self._task is None:
            return False  # nothing was said
        self._deltas.put_nowait(None)
        if not stop and not cancelled.is_set():
            waiter = asyncio.create_task(cancelled.wait())
            await asyncio.wait({self._task, waiter}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
        interrupted = not self._task.done()
        if interrupted:
            self._stopped = True
            if self.stream is not None:
                await self.stream.cancel()
                # The consumer sees the end by itself; cancelling it in the middle
                # of an event-log write is the last resort.
                await asyncio.wait({self._task}, timeout=1.0)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            return True
        done: dict[str, Any] = {
            "type": "response.audio.done",
            "response_id": self.response_id,
            "audio_ms": round(self.sent_seconds * 1000),
            "chunks": self.chunks,
        }
        if self.error is not None:
            done["error"] = {
                "code": getattr(self.error, "code", "tts_error"),
                "message": str(self.error) or type(self.error).__name__,
            }
        await self._append(done)
        return False

    async def close(self) -> None:
        """Release the speaker (a no-op after :meth:`settle`); nothing more is logged."""
        task = self._task
        if task is None or task.done():
            return
        self._stopped = True
        if self.stream is not None:
            await self.stream.cancel()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task

    def heard(self, text: str, played_seconds: float | None) -> str:
        """What a cancelled reply is stored as: the text spoken up to ``played_seconds``.

        Without a position, all audio sent counts as heard. When speech
        failed (no audio could be made), the text shown is what was "sent".
        """
        if self.stream is None or self.error is not None:
            return text if self.error is not None else ""
        if played_seconds is not None:
            played_seconds = min(played_seconds, self.sent_seconds)
        else:
            played_seconds = self.sent_seconds
        return self.stream.spoken_text(played_seconds)


# -- input audio ---------------------------------------------------------------


class AudioInputError(Exception):
    """Input audio the server refuses; ``code`` goes to the client."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def decode_pcm16(audio: str) -> bytes:
    """Base64 PCM16 from ``input_audio.append``; raise :class:`AudioInputError` when malformed."""
    try:
        pcm = base64.b64decode(audio, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise AudioInputError("invalid_audio", f"'audio' is not valid base64: {exc}") from exc
    if pcm[:4] in (b"RIFF", b"OggS", b"fLaC", b"ID3\x03") or pcm[:4] == b"\x1aE\xdf\xa3":
        raise AudioInputError(
            "unsupported_audio_format",
            "send raw PCM16 mono 16 kHz samples, not a file (WAV, Ogg, FLAC, MP3, WebM)",
        )
    if len(pcm) % 2:
        raise AudioInputError("invalid_audio", "PCM16 audio must have an even number of bytes")
    return pcm


def check_input_format(fmt: str | dict[str, Any] | None) -> None:
    """Refuse an ``input_audio.append`` ``format`` other than PCM16 mono 16 kHz."""
    if fmt is None or fmt == "pcm16":
        return
    if isinstance(fmt, dict) and (
        fmt.get("type", "pcm16") == "pcm16"
        and fmt.get("sample_rate", INPUT_RATE) == INPUT_RATE
        and fmt.get("channels", 1) == 1
    ):
        return
    raise AudioInputError(
        "unsupported_audio_format",
        f"input audio must be PCM16 mono {INPUT_RATE} Hz "
        f'({{"type": "pcm16", "sample_rate": {INPUT_RATE}, "channels": 1}}); got {fmt!r}',
    )


@dataclass(frozen=True)
class Utterance:
    """Audio to transcribe: from a commit, or cut by the server's VAD."""

    audio: AudioChunk
    auto: bool  # cut by the VAD, not committed by the client


class AudioInput:
    """One socket's microphone: buffered PCM16 16 kHz, optional VAD, bounded.

    Without a VAD, :meth:`append` only buffers and :meth:`commit` hands the
    buffer over. With one (``server_vad``), :meth:`append` also reports
    ``speech_started`` (barge-in) and utterances the VAD closed by itself.
    """

    def __init__(self, *, max_seconds: float = MAX_INPUT_SECONDS, vad: Any = None) -> None:
        self.max_bytes = int(max_seconds * INPUT_RATE) * 2
        self.max_seconds = max_seconds
        self.vad = vad  # media.vad.UtteranceDetector
        self._buffer = bytearray()

    @property
    def buffered_seconds(self) -> float:
        return len(self._buffer) / 2 / INPUT_RATE

    async def append(self, pcm: bytes) -> tuple[bool, list[Utterance]]:
        """Buffer ``pcm``; return (speech started, utterances the VAD ended)."""
        # With a VAD the detector bounds an utterance itself (max_utterance_seconds).
        if self.vad is None and len(self._buffer) + len(pcm) > self.max_bytes:
            self._buffer.clear()
            raise AudioInputError(
                "audio_too_long",
                f"more than {self.max_seconds:g} s of audio without a commit; the buffer was "
                "cleared: commit shorter utterances",
            )
        if self.vad is None:
            self._buffer += pcm
            return False, []
        from media.vad import SpeechStarted, UtteranceEnded

        started = False
        utterances: list[Utterance] = []
        # Silero costs ~1 ms per 32 ms window: on a thread, off the event loop.
        for event in await self.vad.feed_async(pcm):
            if isinstance(event, SpeechStarted):
                started = True
            elif isinstance(event, UtteranceEnded):
                utterances.append(Utterance(event.audio, auto=True))
        return started, utterances

    def commit(self) -> AudioChunk | None:
        """The audio to transcribe now (None: nothing buffered or no speech heard)."""
        if self.vad is not None:
            from media.vad import UtteranceEnded

            events = [e for e in self.vad.flush() if isinstance(e, UtteranceEnded)]
            self._buffer.clear()
            return events[-1].audio if events else None
        if not self._buffer:
            return None
        audio = AudioChunk(bytes(self._buffer), INPUT_RATE)
        self._buffer.clear()
        return audio

    def restore(self, audio: AudioChunk) -> None:
        """Put a committed utterance back (its transcription failed: a new commit retries)."""
        if self.vad is None:
            self._buffer[:0] = audio.data


async def transcribe(stt: STTProvider, audio: AudioChunk, language: str | None) -> str:
    """The utterance's text; the provider runs off the event loop (docs/voice.md)."""
    result = await stt.transcribe(audio, language=language)
    return result.text.strip()


def played_seconds(ms: Any) -> float | None:
    """``played_ms`` of ``response.cancel`` in seconds (None when absent or not a number)."""
    if isinstance(ms, int | float) and not isinstance(ms, bool) and ms >= 0:
        return float(ms) / 1000
    return None
