"""Voice activity: find where an utterance starts and ends in a stream of PCM16 audio.

:class:`UtteranceDetector` takes mono PCM16 16 kHz chunks of any size (what
``input_audio.append`` carries) and answers with events: :class:`SpeechStarted`
once speech has lasted ``min_speech_ms`` (the moment to barge in on a reply
being spoken), then :class:`UtteranceEnded` with the utterance's audio after
``min_silence_ms`` of silence (the moment to transcribe). A little audio
before the first speech window and after the last one is kept
(``speech_pad_ms``) so Whisper does not lose soft word edges.

The speech probability of each 32 ms window comes from Silero VAD (the
``silero-vad`` package carries its model, MIT; it needs torch, from the
``local-models`` extra). Each detector owns its model instance, because
Silero keeps state from one window to the next. Any callable from a float32
window to a probability can stand in (tests, other VADs).
"""

from __future__ import annotations

import asyncio
import warnings
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from media.audio import SAMPLE_WIDTH, AudioChunk, pcm_to_float32

SAMPLE_RATE = 16000
WINDOW = 512  # samples per Silero window at 16 kHz (32 ms)
WINDOW_BYTES = WINDOW * SAMPLE_WIDTH
WINDOW_MS = WINDOW * 1000 / SAMPLE_RATE

SpeechProbability = Callable[[Any], float]


class VADUnavailable(RuntimeError):
    """The VAD model could not be loaded (a package is missing)."""


@dataclass(frozen=True)
class SpeechStarted:
    """Speech began ``at`` seconds into the stream (confirmed ``min_speech_ms`` later)."""

    at: float


@dataclass(frozen=True)
class UtteranceEnded:
    """An utterance ended; ``audio`` holds it with a little padding on both sides.

    ``truncated`` is true when it was cut at ``max_utterance_seconds`` rather
    than by silence (the speaker may still be talking).
    """

    audio: AudioChunk
    start: float
    end: float
    truncated: bool = False


VADEvent = SpeechStarted | UtteranceEnded


def silero_probability() -> SpeechProbability:
    """A fresh Silero VAD model as a window -> speech probability function."""
    try:
        import torch
        from silero_vad import load_silero_vad
    except ImportError as exc:
        raise VADUnavailable(
            "voice activity detection needs silero-vad and torch; install them with: "
            "pip install 'salon[voice,local-models]'"
        ) from exc
    with warnings.catch_warnings():
        # silero-vad 6 loads its TorchScript file with APIs newer torch deprecates.
        warnings.simplefilter("ignore", DeprecationWarning)
        model = load_silero_vad()

    def probability(window: Any) -> float:
        with torch.no_grad():
            return float(model(torch.from_numpy(window), SAMPLE_RATE).item())

    return probability


class UtteranceDetector:
    """Feed PCM16 16 kHz chunks, get :data:`VADEvent` values; see the module docstring.

    Not thread-safe: one detector per audio stream.
    """

    def __init__(
        self,
        *,
        threshold: float = 0.5,
        min_silence_ms: int = 600,
        min_speech_ms: int = 250,
        speech_pad_ms: int = 200,
        max_utterance_seconds: float = 30.0,
        probability: SpeechProbability | None = None,
    ) -> None:
        self.threshold = threshold
        # Hysteresis (as Silero's own iterator): a window must fall clearly
        # below the threshold to count as silence, so breathy ends of words
        # do not split an utterance.
        self.neg_threshold = max(threshold - 0.15, 0.01)
        self.min_silence_windows = max(1, round(min_silence_ms / WINDOW_MS))
        self.min_speech_windows = max(1, round(min_speech_ms / WINDOW_MS))
        self.pad_windows = max(0, round(speech_pad_ms / WINDOW_MS))
        self.max_windows = max(1, round(max_utterance_seconds * 1000 / WINDOW_MS))
        self._probability = probability or silero_probability()
        self.reset()

    def reset(self) -> None:
        """Forget everything: a new stream starts at time 0."""
        self._remainder = b""
        self._window_index = 0  # windows seen since the stream started
        self._preroll: deque[bytes] = deque(maxlen=self.pad_windows or 1)
        self._buffer: list[bytes] = []
        self._state = "idle"  # idle -> candidate -> speaking -> idle
        self._speech_windows = 0
        self._silence_windows = 0
        self._start_window = 0

    @property
    def speaking(self) -> bool:
        """Is an utterance confirmed and still open?"""
        return self._state == "speaking"

    @property
    def position(self) -> float:
        """Seconds of audio fed so far (whole windows)."""
        return self._window_index * WINDOW / SAMPLE_RATE

    def feed(self, pcm: bytes) -> list[VADEvent]:
        """Process a chunk (any length); return the events it completed, in order.

        ~1 ms of CPU per 32 ms window: callers handling many streams can use
        :meth:`feed_async` to keep it off the event loop.
        """
        data = self._remainder + pcm
        events: list[VADEvent] = []
        whole = len(data) - len(data) % WINDOW_BYTES
        for offset in range(0, whole, WINDOW_BYTES):
            events.extend(self._window(data[offset : offset + WINDOW_BYTES]))
        self._remainder = data[whole:]
        return events

    async def feed_async(self, pcm: bytes) -> list[VADEvent]:
        """:meth:`feed` on a worker thread."""
        return await asyncio.to_thread(self.feed, pcm)

    def flush(self) -> list[VADEvent]:
        """End of the stream (``input_audio.commit``): close an open utterance.

        A candidate too short to count as speech is dropped.
        """
        events: list[VADEvent] = []
        if self._state == "speaking" and self._buffer:
            events.append(self._end(truncated=False, trim=0))
        self._state = "idle"
        self._buffer = []
        self._remainder = b""
        return events

    def _window(self, window: bytes) -> list[VADEvent]:
        prob = self._probability(pcm_to_float32(window))
        index = self._window_index
        self._window_index += 1
        is_speech = prob >= self.threshold
        is_silence = prob < self.neg_threshold
        if self._state == "idle":
            if is_speech:
                self._state = "candidate"
                self._buffer = [*self._preroll, window] if self.pad_windows else [window]
                self._preroll.clear()
                self._start_window = index
                self._speech_windows = 1
                self._silence_windows = 0
                if self._speech_windows >= self.min_speech_windows:
                    return self._confirm()
            else:
                self._preroll.append(window)
            return []
        self._buffer.append(window)
        if is_speech:
            self._speech_windows += 1
            self._silence_windows = 0
        elif is_silence:
            self._silence_windows += 1
        if self._state == "candidate":
            if self._speech_windows >= self.min_speech_windows:
                return self._confirm()
            if self._silence_windows >= self.min_silence_windows:
                # A click or a cough: not speech. Its tail becomes the next pre-roll.
                self._state = "idle"
                for w in self._buffer[-self.pad_windows :] if self.pad_windows else []:
                    self._preroll.append(w)
                self._buffer = []
            return []
        if self._silence_windows >= self.min_silence_windows:
            return [self._end(truncated=False, trim=self._silence_windows - self.pad_windows)]
        if len(self._buffer) >= self.max_windows:
            return [self._end(truncated=True, trim=0)]
        return []

    def _confirm(self) -> list[VADEvent]:
        self._state = "speaking"
        return [SpeechStarted(at=self._start_window * WINDOW / SAMPLE_RATE)]

    def _end(self, *, truncated: bool, trim: int) -> UtteranceEnded:
        kept = self._buffer[: len(self._buffer) - trim] if trim > 0 else self._buffer
        end_window = self._window_index - (trim if trim > 0 else 0)
        start_window = end_window - len(kept)
        self._state = "idle"
        self._buffer = []
        self._speech_windows = self._silence_windows = 0
        return UtteranceEnded(
            audio=AudioChunk(b"".join(kept), SAMPLE_RATE),
            start=max(0, start_window) * WINDOW / SAMPLE_RATE,
            end=end_window * WINDOW / SAMPLE_RATE,
            truncated=truncated,
        )


def create_detector(config: Any = None) -> UtteranceDetector:
    """An :class:`UtteranceDetector` with the ``SALON_VOICE_VAD_*`` settings."""
    from media.voice_config import VoiceConfig

    cfg: VoiceConfig = config or VoiceConfig()
    return UtteranceDetector(
        threshold=cfg.voice_vad_threshold,
        min_silence_ms=cfg.voice_vad_silence_ms,
        min_speech_ms=cfg.voice_vad_min_speech_ms,
        max_utterance_seconds=cfg.voice_vad_max_utterance_seconds,
    )
