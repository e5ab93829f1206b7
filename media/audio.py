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


# -- streaming encoders (response.audio.delta in MP3 / Ogg Opus) ----------------

# Sample rates each codec takes as input (libmp3lame: MPEG-1/2/2.5 rates).
STREAM_RATES = {
    "mp3": (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000),
    "opus": (8000, 12000, 16000, 24000, 48000),
}
# Speech-grade mono bitrates: ~6 KB (MP3) / ~4 KB (Opus) per second of speech.
STREAM_BITRATES = {"mp3": 48000, "opus": 32000}


class StreamEncoder:
    """Mono PCM16 in, consecutive pieces of *one* MP3 or Ogg Opus stream out.

    :meth:`encode` takes the next piece of audio and returns the bytes the
    codec finished meanwhile (possibly none: an encoder holds back a few ms
    of look-ahead); :meth:`finish` returns the rest and ends the stream. The
    concatenation of everything returned is one valid file, so a client may
    feed pieces to a streaming decoder (MediaSource, ``ffplay -``) or save
    them. MP3 is a bare frame stream (no ID3/Xing header: its length is
    unknown when it starts); Opus is wrapped in Ogg pages (RFC 7845), one
    page per :meth:`encode` call, written here rather than by FFmpeg's Ogg
    muxer, which holds its last page back until the next one is full.

    Not thread-safe; calls for one stream must not overlap (they may run on
    a worker thread: PyAV releases the GIL while the codec works).
    """

    def __init__(self, fmt: str, sample_rate: int, *, bitrate: int | None = None) -> None:
        if fmt not in STREAM_RATES:
            raise AudioFormatError(f"no streaming encoder for {fmt!r}; use mp3 or opus")
        if sample_rate not in STREAM_RATES[fmt]:
            raise AudioFormatError(
                f"{fmt} cannot encode {sample_rate} Hz; use one of {STREAM_RATES[fmt]}"
            )
        av = _require_av()
        codec = {"mp3": "libmp3lame", "opus": "libopus"}[fmt]
        if codec not in av.codecs_available:
            raise AudioFormatError(f"this PyAV build has no {codec} encoder")
        self.format = fmt
        self.sample_rate = sample_rate
        self._av = av
        context = av.CodecContext.create(codec, "w")
        context.sample_rate = sample_rate
        context.layout = "mono"
        context.format = "s16"
        context.bit_rate = bitrate or STREAM_BITRATES[fmt]
        if fmt == "opus":
            context.options = {"application": "voip"}  # tuned for speech
        context.open()
        self._context = context
        self._pts = 0  # samples handed to the codec
        self._ogg = _OggOpusWriter(bytes(context.extradata or b"")) if fmt == "opus" else None
        self.finished = False

    def encode(self, pcm: bytes) -> bytes:
        """Encode the next audio; returns the stream bytes ready now (may be empty)."""
        if self.finished:
            raise AudioFormatError("the stream was finished")
        pcm = pcm[: len(pcm) - len(pcm) % SAMPLE_WIDTH]
        if not pcm:
            return b""
        import numpy as np

        frame = self._av.AudioFrame.from_ndarray(
            np.frombuffer(pcm, dtype="<i2").reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = self.sample_rate
        frame.pts = self._pts
        self._pts += len(pcm) // SAMPLE_WIDTH
        return self._wrap(list(self._context.encode(frame)), last=False)

    def finish(self) -> bytes:
        """Flush the codec and end the stream (Ogg: the end-of-stream page)."""
        if self.finished:
            return b""
        self.finished = True
        return self._wrap(list(self._context.encode(None)), last=True)

    def _wrap(self, packets: list[Any], *, last: bool) -> bytes:
        if self._ogg is None:
            return b"".join(bytes(p) for p in packets)  # MP3 packets are whole frames
        scale = 48000 // self.sample_rate  # Ogg Opus counts time at 48 kHz
        return self._ogg.page([(bytes(p), int(p.duration or 0) * scale) for p in packets], last)


def _ogg_crc_table() -> list[int]:
    table = []
    for i in range(256):
        r = i << 24
        for _ in range(8):
            r = ((r << 1) ^ 0x04C11DB7) if r & 0x80000000 else r << 1
        table.append(r & 0xFFFFFFFF)
    return table


_OGG_CRC = _ogg_crc_table()


def _ogg_crc(data: bytes) -> int:
    """Ogg's CRC-32 (polynomial 0x04C11DB7, not reflected: not zlib's)."""
    crc = 0
    table = _OGG_CRC
    for byte in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ table[(crc >> 24) ^ byte]
    return crc


class _OggOpusWriter:
    """Ogg pages for one Opus stream (RFC 3533 framing, RFC 7845 mapping)."""

    def __init__(self, head: bytes) -> None:
        import secrets

        if not head.startswith(b"OpusHead"):
            raise AudioFormatError("the Opus encoder gave no OpusHead header")
        self.serial = secrets.randbits(32)
        self.sequence = 0
        self.granule = 0  # 48 kHz samples decoded through the last packet written
        vendor = b"salon"
        tags = b"OpusTags" + struct.pack("<I", len(vendor)) + vendor + struct.pack("<I", 0)
        # The two header pages go out with the first audio.
        self._pending = self._page([head], 0, 0x02) + self._page([tags], 0, 0)

    def page(self, packets: list[tuple[bytes, int]], last: bool) -> bytes:
        out, self._pending = self._pending, b""
        group: list[bytes] = []
        segments = 0
        for i, (data, duration) in enumerate(packets):
            lacing = len(data) // 255 + 1
            if group and segments + lacing > 255:  # a page holds 255 lacing values
                out += self._page(group, self.granule, 0)
                group, segments = [], 0
            group.append(data)
            segments += lacing
            self.granule += duration
            if i == len(packets) - 1:
                out += self._page(group, self.granule, 0x04 if last else 0)
        return out

    def _page(self, packets: list[bytes], granule: int, flags: int) -> bytes:
        table = bytearray()
        for data in packets:
            table += b"\xff" * (len(data) // 255) + bytes([len(data) % 255])
        header = (
            b"OggS\x00"
            + bytes([flags])
            + struct.pack("<qII", granule, self.serial, self.sequence)
            + b"\x00\x00\x00\x00"
            + bytes([len(table)])
            + bytes(table)
        )
        self.sequence += 1
        page = bytearray(header + b"".join(packets))
        page[22:26] = struct.pack("<I", _ogg_crc(bytes(page)))
        return bytes(page)
