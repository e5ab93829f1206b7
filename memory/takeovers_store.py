"""Operator takeovers, recorded (agents/takeover.py): who, when, how, how many messages.

One tenant-owned table, ``takeovers`` (migration 0011).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, ForeignKey, Index, Integer, String, select, update
from sqlalchemy.orm import Mapped, mapped_column

from memory.ids import new_id
from memory.models import Base, aware, utcnow
from memory.store import Store


class Takeover(Base):
    __tablename__ = "takeovers"
    __table_args__ = (Index("ix_takeovers_conversation", "tenant_id", "conversation_id"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    operator: Mapped[str] = mapped_column(String(200))
    mode: Mapped[str] = mapped_column(String(20))
    messages: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    ended_by: Mapped[str | None] = mapped_column(String(200), nullable=True)


@dataclass(frozen=True)
class TakeoverRecord:
    id: str
    tenant_id: str
    conversation_id: str
    operator: str
    mode: str
    messages: int
    started_at: datetime
    ended_at: datetime | None
    ended_by: str | None

    def to_public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "conversation_id": self.conversation_id,
            "operator": self.operator,
            "mode": self.mode,
            "messages": self.messages,
            "started_at": self.started_at.isoformat(),
            "ended_at": self.ended_at.isoformat() if self.ended_at else None,
            "ended_by": self.ended_by,
        }


def _record(row: Takeover) -> TakeoverRecord:
    return TakeoverRecord(
        row.id,
        row.tenant_id,
        row.conversation_id,
        row.operator,
        row.mode,
        row.messages,
        aware(row.started_at) or utcnow(),
        aware(row.ended_at),
        row.ended_by,
    )


class TakeoverStore:
    def __init__(self, store: Store) -> None:
        self._tx = store._tx

    async def start(
        self, tenant_id: str, conversation_id: str, operator: str, mode: str
    ) -> TakeoverRecord:
        row = Takeover(
            id=new_id("tko"),
            tenant_id=tenant_id,
            conversation_id=conversation_id,
            operator=operator,
            mode=mode,
            messages=0,
            started_at=utcnow(),
        )
        async with self._tx(tenant_id) as s:
            s.add(row)
        return _record(row)

    async def count_message(self, tenant_id: str, takeover_id: str) -> None:
        async with self._tx(tenant_id) as s:
            await s.execute(
                update(Takeover)
                .where(Takeover.tenant_id == tenant_id, Takeover.id == takeover_id)
                .values(messages=Takeover.messages + 1)
            )

    async def end(self, tenant_id: str, takeover_id: str, operator: str) -> TakeoverRecord | None:
        async with self._tx(tenant_id) as s:
            row = await s.get(Takeover, takeover_id)
            if row is None or row.tenant_id != tenant_id:
                return None
            if row.ended_at is None:
                row.ended_at = utcnow()
                row.ended_by = operator
            return _record(row)

    async def for_conversation(self, tenant_id: str, conversation_id: str) -> list[TakeoverRecord]:
        async with self._tx(tenant_id) as s:
            rows = (
                await s.execute(
                    select(Takeover)
                    .where(
                        Takeover.tenant_id == tenant_id, Takeover.conversation_id == conversation_id
                    )
                    .order_by(Takeover.started_at)
                )
            ).scalars()
            return [_record(r) for r in rows]
