"""Client-to-server WebSocket events (docs/protocol.md), validated with pydantic.

Unknown fields are ignored so newer clients can talk to older servers;
unknown ``type`` values and wrong field types are refused with a clear error.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError


class _Event(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class UserRef(_Event):
    id: Annotated[str, Field(min_length=1, max_length=200)]
    name: Annotated[str, Field(max_length=200)] | None = None


class SessionStart(_Event):
    type: Literal["session.start"]
    persona: Annotated[str, Field(min_length=1, max_length=200)]
    user: UserRef | None = None
    conversation_id: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    resume_after: Annotated[int, Field(ge=0, le=2**53)] | None = None
    modalities: list[Literal["text", "audio"]] = ["text"]
    # "server_vad": the server finds where utterances end in input_audio.append
    # audio and commits them itself (docs/voice.md); None/"none": the client commits.
    turn_detection: Literal["server_vad", "none"] | None = None
    # The format of spoken replies' response.audio.delta audio: "pcm16" (the
    # default), "mp3", "opus" or {"type", "sample_rate"?}; checked by
    # agents/voice_format.py (unsupported_audio_format).
    output_audio_format: str | dict[str, Any] | None = None


class MessageCreate(_Event):
    type: Literal["message.create"]
    id: Annotated[str, Field(min_length=1, max_length=200)]
    text: str


class ResponseCancel(_Event):
    type: Literal["response.cancel"]
    id: str | None = None
    # How much of the reply's audio the client played: the reply is stored up to there.
    played_ms: Annotated[int, Field(ge=0, le=24 * 3600 * 1000)] | None = None


class Ping(_Event):
    type: Literal["ping"]
    id: str | None = None


class InputAudioAppend(_Event):
    type: Literal["input_audio.append"]
    # base64 PCM16 mono 16 kHz; a frame is at most SALON_MAX_FRAME_BYTES (64 KB: ~1.5 s)
    audio: Annotated[str, Field(max_length=4 * 1024 * 1024)]
    id: str | None = None
    # Optional, to be explicit: "pcm16" or {"type": "pcm16", "sample_rate": 16000,
    # "channels": 1}; anything else is refused (unsupported_audio_format).
    format: str | dict[str, Any] | None = None


class InputAudioCommit(_Event):
    type: Literal["input_audio.commit"]
    # The client id of the message the transcript becomes (a repeated id is processed once).
    id: Annotated[str, Field(min_length=1, max_length=200)] | None = None


class MediaCreate(_Event):
    type: Literal["media.create"]
    kind: Literal["image", "video", "avatar"]
    prompt: Annotated[str, Field(max_length=4000)] = ""  # required for image and video
    options: dict[str, Any] | None = None  # width, height, steps, seconds, fps, seed, ...
    # The client's id: a repeated id is processed once.
    id: Annotated[str, Field(min_length=1, max_length=200)] | None = None


class MediaCancel(_Event):
    type: Literal["media.cancel"]
    job_id: Annotated[str, Field(min_length=1, max_length=100)]
    id: str | None = None


ClientEvent = Annotated[
    SessionStart
    | MessageCreate
    | ResponseCancel
    | Ping
    | InputAudioAppend
    | InputAudioCommit
    | MediaCreate
    | MediaCancel,
    Field(discriminator="type"),
]
_ADAPTER: TypeAdapter[ClientEvent] = TypeAdapter(ClientEvent)
KNOWN_TYPES = frozenset(
    [
        "session.start",
        "message.create",
        "response.cancel",
        "ping",
        "input_audio.append",
        "input_audio.commit",
        "media.create",
        "media.cancel",
    ]
)


class ProtocolError(Exception):
    def __init__(self, code: str, message: str, event_id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.event_id = event_id


def parse_client_event(raw: str | bytes) -> ClientEvent:
    """Parse one text frame; raise :class:`ProtocolError` with a code the client can act on."""
    if isinstance(raw, bytes):
        raise ProtocolError("invalid_frame", "binary frames are not accepted; send JSON text")
    try:
        data: Any = json.loads(raw)
    except ValueError as exc:
        raise ProtocolError("invalid_json", f"frame is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ProtocolError("invalid_event", "frame must be a JSON object with a 'type'")
    event_id = data.get("id") if isinstance(data.get("id"), str) else None
    kind = data.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("invalid_event", "missing string field 'type'", event_id)
    if kind not in KNOWN_TYPES:
        raise ProtocolError("unknown_event", f"unknown event type {kind!r}", event_id)
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'][1:]) or 'event'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ProtocolError("invalid_event", f"{kind}: {problems}", event_id) from exc
