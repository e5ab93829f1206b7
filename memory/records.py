"""Plain, immutable values the store hands out (never live ORM objects)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class TenantRecord:
    id: str
    name: str


@dataclass(frozen=True)
class ApiKeyRecord:
    id: str
    tenant_id: str
    name: str
    role: str
    prefix: str


@dataclass(frozen=True)
class PersonaRecord:
    id: str
    tenant_id: str
    slug: str
    name: str
    data: dict[str, Any]
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class UserRecord:
    id: str
    tenant_id: str
    external_id: str
    name: str | None


@dataclass(frozen=True)
class ConversationRecord:
    id: str
    tenant_id: str
    persona_id: str
    user_id: str
    channel: str
    last_seq: int
    created_at: datetime


@dataclass(frozen=True)
class MessageRecord:
    id: str
    tenant_id: str
    conversation_id: str
    role: str
    content: str
    status: str
    created_at: datetime
    client_id: str | None = None
    response_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "conversation_id": self.conversation_id,
            "role": self.role,
            "content": self.content,
            "status": self.status,
            "client_id": self.client_id,
            "response_id": self.response_id,
            "created_at": self.created_at.isoformat(),
        }


def _rounded(value: float) -> float:
    return round(float(value), 4)


@dataclass(frozen=True)
class AnalysisRecord:
    """The stored analysis of one message (docs/analysis.md)."""

    message_id: str
    compound: float
    pos: float
    neu: float
    neg: float
    emotions: dict[str, float]
    language: str | None
    analyzer: str
    created_at: datetime

    def to_public(self) -> dict[str, Any]:
        """The ``analysis`` object of a message in history and in ``message.analysis``."""
        return {
            "sentiment": {
                "compound": _rounded(self.compound),
                "pos": _rounded(self.pos),
                "neu": _rounded(self.neu),
                "neg": _rounded(self.neg),
            },
            "emotions": {name: _rounded(score) for name, score in self.emotions.items()},
            "language": self.language,
        }


@dataclass(frozen=True)
class AnalysisBucketRecord:
    """Averages over the analyses of one time bucket (a point of an analytics series)."""

    start: datetime
    count: int
    sentiment: dict[str, float]
    emotions: dict[str, float]

    def to_public(self, *, sentiment: bool = True, emotions: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {"start": self.start.isoformat(), "count": self.count}
        if sentiment:
            out["sentiment"] = {k: _rounded(v) for k, v in self.sentiment.items()}
        if emotions:
            out["emotions"] = {k: _rounded(v) for k, v in self.emotions.items()}
        return out
