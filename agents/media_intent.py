"""The persona answers "show me ..." with an image (or a video, or its avatar) on its own.

A rule, so it works with the embedded model, which cannot call tools: after a
person's message is stored (an ``after_message`` hook, in the background,
never delaying the text reply), :func:`detect` looks for a request to *see*
something; when it finds one, the persona queues the media itself, in the
same conversation, so ``media.progress`` / ``media.done`` arrive beside the
reply. Each message asks at most once (its id is the request's client id).
``SALON_MEDIA_INTENTS=false`` turns it off.

Deliberately narrow: "show me how to ..." is a question, not a picture
request, and nothing fires on words alone ("image" in passing).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import structlog

from agents.media import MediaError, MediaService
from agents.sessions import Session
from memory.records import MessageRecord

log = structlog.get_logger(__name__)

MAX_SUBJECT = 200
_PICTURE = r"(?:picture|photo|photograph|image|pic|selfie|drawing|painting|sketch|portrait)s?"
_VIDEO = r"(?:video|clip|animation|gif)s?"
_NOT_A_THING = r"(?!how\b|what\b|why\b|where\b|when\b|who\b|which\b|that\b|this\b|it\b|around\b)"
_REQUESTS = [
    # "show me a picture of your cat", "send me a video of the beach", "can you draw me a dragon"
    re.compile(
        rf"\b(?:show|send|give|make|create|generate)\s+(?:me\s+|us\s+)?(?:a|an|some|the|one|another)?\s*"
        rf"(?P<medium>{_PICTURE}|{_VIDEO})\s+(?:of\s+|with\s+|showing\s+)?(?P<what>.+)",
        re.I,
    ),
    # "show me your garden", "show me a sunset over Paris"
    re.compile(
        rf"\bshow\s+me\s+{_NOT_A_THING}(?P<what>(?:a|an|the|your|some|my)\s+.+)",
        re.I,
    ),
    # "draw me a castle", "paint a lighthouse"
    re.compile(
        r"\b(?:draw|paint|sketch)\s+(?:me\s+|us\s+)?(?P<what>(?:a|an|the|your|some)\s+.+)", re.I
    ),
    # "can I see your avatar?", "let me see the puppy"
    re.compile(rf"\b(?:can|could|may)\s+i\s+see\s+{_NOT_A_THING}(?P<what>.+)", re.I),
    re.compile(rf"\blet\s+me\s+see\s+{_NOT_A_THING}(?P<what>.+)", re.I),
]
_AVATAR = re.compile(r"\b(?:3d|avatar|glb|vrm|model of (?:you|yourself))\b", re.I)
_TRAILING = re.compile(r"(?:[\s,]*(?:please|pls|now|for me|thanks?|thank you))+[\s.!?]*$", re.I)


@dataclass(frozen=True)
class MediaIntent:
    """A request to see something: what kind of media, and of what."""

    kind: str
    prompt: str


def detect(text: str) -> MediaIntent | None:
    """The media the person asks to see in ``text``, if they ask for any."""
    for sentence in re.split(r"(?<=[.!?])\s+|\n+", text):
        for pattern in _REQUESTS:
            match = pattern.search(sentence)
            if match is None:
                continue
            what = match.group("what").strip().rstrip(".!?").strip()
            what = _TRAILING.sub("", what).strip(" ,.!?")
            if not what or len(what) > MAX_SUBJECT:
                continue
            medium = (match.groupdict().get("medium") or "").lower()
            if _AVATAR.search(what) or _AVATAR.search(medium):
                return MediaIntent("avatar", what)
            if re.fullmatch(_VIDEO, medium, re.I):
                return MediaIntent("video", what)
            return MediaIntent("image", what)
    return None


def intent_hook(service: MediaService) -> Any:
    """The ``after_message`` hook: a person's message asking to see something queues the media."""

    async def after_message(session: Session, message: MessageRecord) -> None:
        if message.role != "user":
            return
        intent = detect(message.content)
        if intent is None:
            return
        conv = session.conversation
        try:
            await service.request(
                conv.tenant_id,
                kind=intent.kind,
                prompt=intent.prompt,
                persona_id=conv.persona_id,
                user_id=conv.user_id,
                conversation_id=conv.id,
                client_id=f"intent:{message.id}",
                requested_by="persona",
            )
        except MediaError as exc:
            # The person asked; say why nothing comes rather than stay silent.
            await service.events.append(
                conv.id,
                {"type": "error", "code": exc.code, "message": exc.message, "kind": intent.kind},
            )
            log.info("media_intent_refused", code=exc.code, conversation_id=conv.id)

    return after_message
