"""espeak-ng: the always-there fallback voice (Debian's ``espeak-ng`` binary).

Formant synthesis: robotic, but ~100 languages, no model files and a
real-time factor near 0.01. Run as an asyncio subprocess (never blocking the
event loop) with the text on stdin, so no text is ever parsed as a flag;
``--stdout`` writes a streamed WAV whose PCM is forwarded as it arrives.
Closing the iterator kills the process. Emotion is approximated with the
pitch, speed and loudness flags (``-p``, ``-s``, ``-a``); a language hint
picks the voice when the voice id is for another language.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator

from media.audio import SAMPLE_WIDTH, AudioChunk, AudioFormatError, parse_wav_header
from media.tts.base import (
    OPENAI_VOICES,
    TTSCapabilities,
    TTSError,
    TTSProvider,
    VoiceSettings,
    primary_language,
)

INSTALL_HINT = "install the espeak-ng package (Debian/Ubuntu: apt-get install espeak-ng)"
BASE_WPM = 175  # espeak-ng's default speaking rate, words per minute
CHUNK_BYTES = 4096
# Emotion -> (pitch 0-99, default 50; speed factor; amplitude 0-200, default 100).
EMOTION_CONTROLS: dict[str, tuple[int, float, int]] = {
    "cheerful": (62, 1.05, 100),
    "excited": (70, 1.15, 115),
    "sad": (38, 0.88, 85),
    "angry": (42, 1.08, 125),
}


class EspeakProvider(TTSProvider):
    """Speak with ``espeak-ng --stdout``; ``voice`` is an espeak-ng voice (``en-us``, ``de``, ...)."""

    name = "espeak"
    capabilities = TTSCapabilities(
        streaming=True,
        languages=("*",),  # espeak-ng --voices lists ~100
        emotion=True,  # approximated: pitch, speed, loudness (EMOTION_CONTROLS)
        local=True,
        output_formats=("pcm", "wav"),
    )

    def __init__(self, *, binary: str = "espeak-ng", default_voice: str = "en-us") -> None:
        self.binary = binary
        self.default_voice = default_voice

    def _executable(self) -> str:
        path = shutil.which(self.binary)
        if path is None:
            raise TTSError(
                f"the espeak-ng binary {self.binary!r} was not found; {INSTALL_HINT} "
                "or set SALON_TTS_ESPEAK_BINARY",
                code="tts_unavailable",
            )
        return path

    async def start(self) -> None:
        self._executable()

    def _voice(self, voice: VoiceSettings) -> str:
        name = voice.voice
        if not name or name in OPENAI_VOICES:
            return voice.language or self.default_voice
        # espeak-ng voices are languages ("en-us", "de", "en-us+f3": + a variant):
        # a hint for another language (a German reply, detected) wins over the id.
        base, plus, variant = name.partition("+")
        if voice.language and primary_language(voice.language) != primary_language(base):
            return voice.language + plus + variant
        return name

    def arguments(self, voice: VoiceSettings) -> list[str]:
        """The espeak-ng flags for ``voice``: voice, speed, and emotion as pitch/speed/loudness."""
        speed = min(max(voice.speed, 0.25), 4.0)
        args = ["-v", self._voice(voice)]
        controls = EMOTION_CONTROLS.get((voice.emotion or "").lower())
        if controls is not None:
            pitch, factor, amplitude = controls
            speed *= factor
            args += ["-p", str(pitch), "-a", str(amplitude)]
        return [*args, "-s", str(round(BASE_WPM * speed))]

    async def synthesize(self, text: str, voice: VoiceSettings) -> AsyncIterator[AudioChunk]:
        if not text.strip():
            return
        process = await asyncio.create_subprocess_exec(
            self._executable(),
            "--stdout",
            *self.arguments(voice),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert process.stdin is not None and process.stdout is not None
        try:
            process.stdin.write(text.encode())
            await process.stdin.drain()
            process.stdin.close()
            header = b""
            rate = offset = 0
            while not rate:
                data = await process.stdout.read(CHUNK_BYTES)
                if not data:
                    break
                header += data
                with contextlib.suppress(AudioFormatError):
                    rate, _channels, offset = parse_wav_header(header)
            if not rate:
                await process.wait()
                stderr = (await process.stderr.read()).decode(errors="replace").strip()  # type: ignore[union-attr]
                code = "tts_bad_request" if "voice" in stderr.lower() else "tts_error"
                raise TTSError(f"espeak-ng failed: {stderr or 'no audio'}", code=code)
            pending = header[offset:]
            while True:
                whole = len(pending) - len(pending) % SAMPLE_WIDTH
                if whole:
                    yield AudioChunk(pending[:whole], rate)
                    pending = pending[whole:]
                data = await process.stdout.read(CHUNK_BYTES)
                if not data:
                    break
                pending += data
            await process.wait()
        finally:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
