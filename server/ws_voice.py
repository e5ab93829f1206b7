"""The voice half of a WebSocket connection: input audio in, transcripts and barge-in out.

Holds the session's modalities and spoken-reply format
(``output_audio_format``), and pumps ``input_audio.append`` /
``input_audio.commit`` frames into an
:class:`agents.voice.AudioInput`, transcribes utterances with the app's STT
provider, and submits the text as the user's message through the same path
as ``message.create`` (docs/voice.md, "Voice over the WebSocket"). Spoken
replies need nothing here: they come from the conversation's event log like
every other reply event.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import TYPE_CHECKING, Any

import structlog

from agents.voice import (
    AudioInput,
    AudioInputError,
    check_input_format,
    decode_pcm16,
    transcribe,
)
from agents.voice_format import PCM16, OutputFormat, OutputFormatError, parse_output_format
from media.audio import AudioChunk
from media.stt.base import STTError
from server.audio_api import voice_services
from server.protocol import InputAudioAppend, InputAudioCommit, MessageCreate

if TYPE_CHECKING:
    from server.ws import Connection

log = structlog.get_logger(__name__)


class ConnectionVoice:
    """One socket's microphone state; reset by each ``session.start``."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.modalities: list[str] = ["text"]
        self.turn_detection = "none"
        self.input: AudioInput = AudioInput()
        self.output: OutputFormat = PCM16

    @property
    def speaks(self) -> bool:
        """Replies to this session's messages are spoken."""
        return "audio" in self.modalities

    @property
    def reply_format(self) -> OutputFormat | None:
        """How replies to this session's messages are spoken (None: they are not)."""
        return self.output if self.speaks else None

    @staticmethod
    def output_format(raw: str | dict[str, Any] | None) -> OutputFormat | OutputFormatError:
        """``session.start``'s ``output_audio_format``, or the error to answer it with."""
        try:
            return parse_output_format(raw)
        except OutputFormatError as exc:
            return exc

    async def start(
        self,
        modalities: list[str],
        turn_detection: str | None,
        output: OutputFormat = PCM16,
    ) -> str | None:
        """Configure for a new session; returns an error message if server VAD is unavailable."""
        self.modalities = list(dict.fromkeys(["text", *modalities]))
        self.turn_detection = "none"
        self.input = AudioInput()
        self.output = output
        if turn_detection != "server_vad":
            return None
        try:
            from media.vad import create_detector

            config = voice_services(self.conn.ws.app).config
            # Loading Silero takes tens of ms of CPU: on a thread.
            detector = await asyncio.to_thread(create_detector, config)
        except Exception as exc:  # VADUnavailable (no torch/silero-vad), a broken model
            log.warning("vad_unavailable", error=repr(exc))
            return f"server-side turn detection is unavailable ({exc}); commit utterances yourself"
        self.input = AudioInput(vad=detector)
        self.turn_detection = "server_vad"
        return None

    async def append(self, event: InputAudioAppend) -> None:
        conn = self.conn
        if conn.session is None:
            await conn.error("no_session", "send session.start first", event.id)
            return
        try:
            check_input_format(event.format)
            pcm = decode_pcm16(event.audio)
            started, utterances = await self.input.append(pcm)
        except AudioInputError as exc:
            await conn.error(exc.code, str(exc), event.id)
            return
        if started:
            await self._speech_started()
        for utterance in utterances:
            await self._submit(utterance.audio, f"vad_{uuid.uuid4().hex[:16]}", auto=True)

    async def commit(self, event: InputAudioCommit) -> None:
        conn = self.conn
        if conn.session is None:
            await conn.error("no_session", "send session.start first", event.id)
            return
        audio = self.input.commit()
        if audio is None:
            await conn.error(
                "no_audio",
                "nothing to commit: send input_audio.append first"
                + (" (the server's VAD heard no speech)" if self.turn_detection != "none" else ""),
                event.id,
            )
            return
        await self._submit(audio, event.id or f"audio_{uuid.uuid4().hex[:16]}", auto=False)

    async def _speech_started(self) -> None:
        """The person started talking (server VAD): say so, and barge in on a reply."""
        conn = self.conn
        assert conn.session is not None
        conv_id = conn.session.conversation.id
        service = conn.state.service
        await service.events.append(conv_id, {"type": "input_audio.speech_started"})
        # Only a reply already speaking is interrupted (one still being
        # prepared answers what was just said). The server cannot know the
        # client's playback position: a client that can should also send
        # response.cancel with played_ms.
        if await service.replying(conv_id):
            await service.cancel(conv_id)

    async def _submit(self, audio: AudioChunk, client_id: str, *, auto: bool) -> None:
        conn = self.conn
        assert conn.session is not None
        services = voice_services(conn.ws.app)
        started = time.perf_counter()
        try:
            stt = await services.stt()
            text = await transcribe(stt, audio, services.config.stt_language)
        except Exception as exc:  # STTError, or a provider that cannot even be built
            if not isinstance(exc, STTError):
                log.warning("stt_failed", error=repr(exc))
            kept = not auto and self.input.vad is None
            if kept:
                self.input.restore(audio)  # nothing lost: the same commit can be sent again
            await conn.error(
                exc.code if isinstance(exc, STTError) else "stt_error",
                f"the audio could not be transcribed: {exc}"
                + ("; the audio is kept, send input_audio.commit again" if kept else ""),
                client_id,
            )
            return
        if not text:
            await conn.error("no_speech", "no speech was recognized in the audio", client_id)
            return
        transcript: dict[str, Any] = {
            "type": "input_audio.transcript",
            "id": client_id,
            "text": text,
            "audio_ms": round(audio.duration * 1000),
            "auto": auto,
        }
        log.info(
            "audio_transcribed",
            chars=len(text),
            audio_ms=transcript["audio_ms"],
            stt_ms=round((time.perf_counter() - started) * 1000),
        )
        await conn.state.service.events.append(conn.session.conversation.id, transcript)
        await conn.message_create(MessageCreate(type="message.create", id=client_id, text=text))
