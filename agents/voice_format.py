"""The audio format of spoken replies: what ``session.start`` asks for, what deltas declare.

A session chooses with ``output_audio_format`` (docs/protocol.md, "Voice"):
``"pcm16"`` (the default), ``"mp3"`` or ``"opus"``, or an object
``{"type", "sample_rate"?}``. PCM16 stays the format everything inside Salon
moves; MP3 and Ogg Opus are encoded at the edge of the reply, piece by piece
(:class:`media.audio.StreamEncoder`), so the concatenation of a reply's
``response.audio.delta`` audio is one valid stream.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from media.audio import STREAM_RATES, StreamEncoder, codec_available
from media.tts.base import PriorityExecutor

DEFAULT_RATE = 24000  # OpenAI's pcm16 rate; one rate whatever the TTS provider's
PCM_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
TYPES = ("pcm16", "mp3", "opus")
VOICE_EXTRA = "pip install 'salon[voice]'"

# Encoding ~200 ms costs ~0.5-1 ms of CPU (measured, PyAV 18): small, but with
# many voices it adds up on the event loop, and PyAV releases the GIL while the
# codec works. Its own pool, so encoding never queues behind blocking TTS
# engines on the default executor; a reply's first piece goes ahead of other
# replies' later pieces (a fast engine hands over a whole reply at once).
_ENCODERS = PriorityExecutor(2, name="salon-audio-encode")


class OutputFormatError(ValueError):
    """An ``output_audio_format`` the server cannot produce; ``code`` goes to the client."""

    code = "unsupported_audio_format"


@dataclass(frozen=True)
class OutputFormat:
    """How a spoken reply's audio is sent: ``type`` ``pcm16``/``mp3``/``opus``, mono."""

    type: str = "pcm16"
    sample_rate: int = DEFAULT_RATE

    @property
    def encoded(self) -> bool:
        """Compressed (MP3/Opus), as opposed to raw PCM16."""
        return self.type != "pcm16"

    def as_dict(self) -> dict[str, Any]:
        """The ``format`` object of ``response.audio.delta``."""
        return {"type": self.type, "sample_rate": self.sample_rate, "channels": 1}

    def encoder(self) -> ReplyEncoder | None:
        """A fresh streaming encoder for one reply (None for PCM16)."""
        return ReplyEncoder(self) if self.encoded else None


PCM16 = OutputFormat()


def parse_output_format(raw: str | dict[str, Any] | None) -> OutputFormat:
    """``session.start``'s ``output_audio_format``; raise :class:`OutputFormatError`.

    Checked when the session starts (not when the first reply is spoken), so a
    client asking for what this server cannot encode is told at once.
    """
    if raw is None:
        return PCM16
    if isinstance(raw, str):
        raw = {"type": raw}
    kind = raw.get("type", "pcm16")
    rate = raw.get("sample_rate", DEFAULT_RATE)
    channels = raw.get("channels", 1)
    if kind not in TYPES:
        raise OutputFormatError(
            f"output_audio_format type {kind!r} is not supported; use one of {', '.join(TYPES)}"
        )
    rates = PCM_RATES if kind == "pcm16" else STREAM_RATES[kind]
    if not isinstance(rate, int) or isinstance(rate, bool) or rate not in rates:
        raise OutputFormatError(
            f"{kind} output at sample_rate {rate!r} is not supported; use one of "
            f"{', '.join(map(str, rates))}"
        )
    if channels != 1:
        raise OutputFormatError("spoken replies are mono: channels must be 1")
    if kind != "pcm16" and not codec_available(kind):
        raise OutputFormatError(
            f"{kind} output needs PyAV with its codec, which this server lacks; "
            f"install the voice extra ({VOICE_EXTRA}) or ask for pcm16"
        )
    return OutputFormat(kind, rate)


def warm_up_encoders() -> None:
    """Encode a moment of silence in each compressed format this server can produce.

    The first MP3 encode in a process costs ~150 ms (library set-up, measured
    with PyAV 18); later ones well under 1 ms. Blocking: call it on a thread.
    """
    for kind in ("mp3", "opus"):
        if codec_available(kind):
            encoder = StreamEncoder(kind, DEFAULT_RATE)
            encoder.encode(bytes(DEFAULT_RATE // 10 * 2))
            encoder.finish()


class ReplyEncoder:
    """One reply's MP3/Ogg Opus stream, encoded off the event loop, in order.

    The caller awaits each call before the next, so the stream's pieces come
    out in order; the work runs on a small dedicated pool.
    """

    def __init__(self, fmt: OutputFormat) -> None:
        self.format = fmt
        self._encoder: StreamEncoder | None = None  # opened on the pool with the first audio

    def _encode(self, pcm: bytes) -> bytes:
        if self._encoder is None:
            self._encoder = StreamEncoder(self.format.type, self.format.sample_rate)
        return self._encoder.encode(pcm)

    def _finish(self) -> bytes:
        return self._encoder.finish() if self._encoder is not None else b""

    async def encode(self, pcm: bytes) -> bytes:
        """The stream bytes ``pcm`` completed (may be empty: the codec looks ahead)."""
        if self._encoder is None:  # the reply's first audio: what the listener waits for
            return await asyncio.wrap_future(_ENCODERS.submit_first(self._encode, pcm))
        return await asyncio.wrap_future(_ENCODERS.submit(self._encode, pcm))

    async def finish(self) -> bytes:
        """The rest of the stream, and its end."""
        return await asyncio.wrap_future(_ENCODERS.submit(self._finish))
