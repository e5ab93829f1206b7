"""Plain audio values shared by TTS, STT and VAD: PCM16 chunks and containers.

Everything inside Salon moves audio as raw PCM16 (signed 16-bit little-endian,
mono) with its sample rate carried next to the bytes: that is what the
WebSocket protocol sends (``response.audio.delta`` / ``input_audio.append``),
what every TTS engine can produce and what Whisper and Silero consume.
Containers (WAV) and codecs (MP3, Opus) exist only at the edges: HTTP bodies
and uploads. WAV is the standard library's; MP3/Opus use PyAV (``av``, which
the ``voice`` extra brings in with faster-whisper) and say so when it is missing.
"""

from __future__ import annotations

import io
import struct
import wave
from dataclasses import dataclass
from typing import Any

SAMPLE_WIDTH = 2  # bytes per PCM16 sample

# Content types of what :func:`encode` can produce.
MIME_TYPES = {
    "pcm": "audio/pcm",
    "wav": "audio/wav",
    "mp3": "audio/mpeg",
    "opus": "audio/ogg; codecs=opus",
}


class AudioFormatError(ValueError):
    """Audio bytes could not be read or written in the requested format."""


@dataclass(frozen=True)
class AudioChunk:
    """A piece of PCM16 mono audio with its sample rate declared.

    ``data`` always holds whole samples (an even number of bytes).
    """

    data: bytes
    sample_rate: int
    channels: int = 1

    @property
    def samples(self) -> int:
        return len(self.data) // (SAMPLE_WIDTH * self.channels)

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.samples / self.sample_rate if self.sample_rate else 0.0


def pcm_duration(pcm: bytes, sample_rate: int) -> float:
    """Seconds of mono PCM16 audio in ``pcm``."""
    return len(pcm) / (SAMPLE_WIDTH * sample_rate)


def wav_bytes(pcm: bytes, sample_rate: int, channels: int = 1) -> bytes:
    """``pcm`` (PCM16) in a WAV container with exact sizes."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(SAMPLE_WIDTH)
        out.setframerate(sample_rate)
        out.writeframes(pcm)
    return buffer.getvalue()


def streaming_wav_header(sample_rate: int, channels: int = 1) -> bytes:
    """A WAV header for a stream of unknown length (sizes set to the maximum).

    The same convention as ``espeak-ng --stdout`` and OpenAI's streamed WAV:
    players read until the connection ends.
    """
    byte_rate = sample_rate * channels * SAMPLE_WIDTH
    return (
        b"RIFF"
        + struct.pack("<I", 0xFFFFFFFF)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, channels, sample_rate, byte_rate, channels * 2, 16)
        + b"data"
        + struct.pack("<I", 0xFFFFFFFF)
    )


def parse_wav_header(header: bytes) -> tuple[int, int, int]:
    """``(sample_rate, channels, data_offset)`` of a PCM16 WAV header.

    Reads the chunks by hand instead of with :mod:`wave`, because streamed
    WAVs (``espeak-ng --stdout``) declare impossible sizes that ``wave``
    trusts. ``header`` must reach at least the start of the ``data`` chunk.
    """
    if len(header) < 12 or header[:4] != b"RIFF" or header[8:12] != b"WAVE":
        raise AudioFormatError("not a WAV (RIFF/WAVE) stream")
    pos = 12
    rate = channels = bits = 0
    while pos + 8 <= len(header):
        chunk_id = header[pos : pos + 4]
        (size,) = struct.unpack("<I", header[pos + 4 : pos + 8])
        if chunk_id == b"fmt ":
            fmt, channels, rate = struct.unpack("<HHI", header[pos + 8 : pos + 16])
            (bits,) = struct.unpack("<H", header[pos + 22 : pos + 24])
            if fmt not in (1, 0xFFFE) or bits != 16:
                raise AudioFormatError("only 16-bit PCM WAV is supported")
        elif chunk_id == b"data":
            if not rate:
                raise AudioFormatError("WAV data chunk before its fmt chunk")
            return rate, channels, pos + 8
        pos += 8 + size + (size & 1)
    raise AudioFormatError("incomplete WAV header")


def read_wav(data: bytes) -> AudioChunk:
    """Mono PCM16 audio from a WAV file (stereo is mixed down)."""
    rate, channels, offset = parse_wav_header(data[:65536])
    pcm = data[offset:]
    pcm = pcm[: len(pcm) - len(pcm) % (SAMPLE_WIDTH * max(channels, 1))]
    if channels > 1:
        pcm = to_mono(pcm, channels)
    return AudioChunk(pcm, rate)


def to_mono(pcm: bytes, channels: int) -> bytes:
    """Interleaved PCM16 with ``channels`` channels mixed down to mono."""
    import numpy as np

    frames = np.frombuffer(pcm, dtype="<i2").reshape(-1, channels).astype(np.int32)
    return bytes(frames.mean(axis=1).astype("<i2").tobytes())


def resample(pcm: bytes, src_rate: int, dst_rate: int) -> bytes:
    """Mono PCM16 from ``src_rate`` to ``dst_rate`` by linear interpolation.

    Good enough for speech between the rates TTS engines and Whisper use
    (16-48 kHz); no extra dependency beyond numpy.
    """
    if src_rate == dst_rate or not pcm:
        return pcm
    import numpy as np

    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32)
    count = max(1, round(len(samples) * dst_rate / src_rate))
    positions = np.linspace(0, len(samples) - 1, count)
    out = np.interp(positions, np.arange(len(samples)), samples)
    return bytes(np.clip(out, -32768, 32767).astype("<i2").tobytes())


def pcm_to_float32(pcm: bytes) -> Any:
    """Mono PCM16 as a numpy float32 array in [-1, 1] (what Whisper and Silero take)."""
    import numpy as np

    return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0


def float32_to_pcm(samples: Any) -> bytes:
    """A float array in [-1, 1] as PCM16 bytes (clipped)."""
    import numpy as np

    clipped = np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0)
    return bytes((clipped * 32767.0).astype("<i2").tobytes())


def _require_av() -> Any:
    try:
        import av
    except ImportError as exc:
        raise AudioFormatError(
            "this audio format needs PyAV; install it with: pip install 'salon[voice]'"
        ) from exc
    return av


def codec_available(fmt: str) -> bool:
    """Can :func:`encode` produce ``fmt`` on this installation?"""
    if fmt in ("pcm", "wav"):
        return True
    try:
        av = _require_av()
    except AudioFormatError:
        return False
    return {"mp3": "libmp3lame", "opus": "libopus"}.get(fmt, "") in av.codecs_available


def encode(pcm: bytes, sample_rate: int, fmt: str) -> bytes:
    """Mono PCM16 as a whole file in ``fmt``: ``pcm``, ``wav``, ``mp3`` or ``opus`` (Ogg)."""
    if fmt == "pcm":
        return pcm
    if fmt == "wav":
        return wav_bytes(pcm, sample_rate)
    if fmt not in ("mp3", "opus"):
        raise AudioFormatError(f"unsupported audio format {fmt!r}")
    av = _require_av()
    import numpy as np

    if fmt == "opus" and sample_rate not in (8000, 12000, 16000, 24000, 48000):
        pcm, sample_rate = resample(pcm, sample_rate, 48000), 48000  # rates Opus accepts
    out = io.BytesIO()
    container = av.open(out, mode="w", format="mp3" if fmt == "mp3" else "ogg")
    stream = container.add_stream("libmp3lame" if fmt == "mp3" else "libopus", rate=sample_rate)
    stream.layout = "mono"
    frame = av.AudioFrame.from_ndarray(
        np.frombuffer(pcm, dtype="<i2").reshape(1, -1), format="s16", layout="mono"
    )
    frame.sample_rate = sample_rate
    for packet in stream.encode(frame):
        container.mux(packet)
    for packet in stream.encode(None):
        container.mux(packet)
    container.close()
    return out.getvalue()


def decode(data: bytes, sample_rate: int = 16000) -> AudioChunk:
    """Any uploaded audio file as mono PCM16 at ``sample_rate``.

    WAV is read with the standard library; other containers (MP3, Ogg/Opus,
    WebM, M4A, FLAC) need PyAV.
    """
    if data[:4] == b"RIFF":
        try:
            chunk = read_wav(data)
            return AudioChunk(resample(chunk.data, chunk.sample_rate, sample_rate), sample_rate)
        except AudioFormatError:
            if not codec_available("mp3"):  # no PyAV: nothing else can read it
                raise
            # Float or 24-bit WAV (browsers record these): PyAV reads them.
    av = _require_av()
    import numpy as np

    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            resampler = av.AudioResampler(format="s16", layout="mono", rate=sample_rate)
            parts: list[Any] = []
            for frame in container.decode(audio=0):
                for out in resampler.resample(frame):
                    parts.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):
                parts.append(out.to_ndarray().reshape(-1))
    except (av.error.FFmpegError, IndexError, ValueError) as exc:
        raise AudioFormatError(f"could not decode the audio file: {exc}") from exc
    pcm = np.concatenate(parts).astype("<i2").tobytes() if parts else b""
    return AudioChunk(bytes(pcm), sample_rate)
