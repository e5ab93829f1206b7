"""Media items: what was asked for, by whom, its state, and the stored file (docs/media.md).

Two tenant-owned tables, created by migration 0009:

- ``media_items``: one generated or imported image, video or avatar: who
  asked (persona, user, conversation), the prompt and options, its state
  (``queued`` -> ``running`` -> ``done`` | ``failed`` | ``cancelled``), and
  once done the content it points to (SHA-256, storage key, MIME, size).
  Files are content-addressed (media/content_store.py), so several rows may
  point at one file; a file is deleted when its last row goes
  (:meth:`MediaStore.unreferenced`).
- ``media_quotas``: a tenant's byte quota when it differs from the default.

Usage against the quota counts every item that holds a file (``done``) plus
the declared size of nothing else: a queued item costs nothing until it has
bytes. Transactions come from the main store (row-level security on
Postgres, as for every tenant-owned table).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    delete,
    func,
    select,
    update,
)
from sqlalchemy.orm import Mapped, mapped_column

from memory.ids import new_id
from memory.models import Base, aware, utcnow
from memory.store import Store

STATES = ("queued", "running", "done", "failed", "cancelled")
FINISHED = ("done", "failed", "cancelled")
SOURCES = ("generated", "import")


class MediaItem(Base):
    """One image, video or avatar of a tenant."""

    __tablename__ = "media_items"
    __table_args__ = (
        Index("ix_media_items_owner", "tenant_id", "persona_id", "kind", "created_at"),
        Index("ix_media_items_user", "tenant_id", "user_id"),
        # Which rows still point at a file (deleting the last one deletes the file).
        Index("ix_media_items_sha256", "sha256"),
    )
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    persona_id: Mapped[str | None] = mapped_column(
        ForeignKey("personas.id", ondelete="CASCADE"), nullable=True
    )
    user_id: Mapped[str | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=True
    )
    conversation_id: Mapped[str | None] = mapped_column(
        ForeignKey("conversations.id", ondelete="SET NULL"), nullable=True
    )
    kind: Mapped[str] = mapped_column(String(20))  # image, video, avatar
    source: Mapped[str] = mapped_column(String(20), default="generated")  # generated, import
    state: Mapped[str] = mapped_column(String(20), default="queued")
    prompt: Mapped[str] = mapped_column(Text, default="")
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    client_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    requested_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    generator: Mapped[str | None] = mapped_column(String(100), nullable=True)
    sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    storage_key: Mapped[str | None] = mapped_column(String(512), nullable=True)
    mime: Mapped[str | None] = mapped_column(String(100), nullable=True)
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    width: Mapped[int | None] = mapped_column(Integer, nullable=True)
    height: Mapped[int | None] = mapped_column(Integer, nullable=True)
    seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error_code: Mapped[str | None] = mapped_column(String(100), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class MediaQuota(Base):
    """A tenant's own byte quota (absent: the configured default)."""

    __tablename__ = "media_quotas"
    tenant_id: Mapped[str] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    max_bytes: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


@dataclass(frozen=True)
class MediaRecord:
    id: str
    tenant_id: str
    persona_id: str | None
    user_id: str | None
    conversation_id: str | None
    kind: str
    source: str
    state: str
    prompt: str
    options: dict[str, Any] = field(default_factory=dict)
    client_id: str | None = None
    requested_by: str | None = None
    progress: float = 0.0
    generator: str | None = None
    sha256: str | None = None
    storage_key: str | None = None
    mime: str | None = None
    bytes: int = 0
    width: int | None = None
    height: int | None = None
    seconds: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    error_code: str | None = None
    error: str | None = None
    created_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def finished(self) -> bool:
        return self.state in FINISHED


_COLUMNS = [c.name for c in MediaItem.__table__.columns]


def _aware(value: Any) -> Any:
    return aware(value) if isinstance(value, datetime) else value


def _record(row: MediaItem) -> MediaRecord:
    return MediaRecord(**{name: _aware(getattr(row, name)) for name in _COLUMNS})


class MediaStore:
    """Tenant-scoped access to ``media_items`` and ``media_quotas``."""

    def __init__(self, store: Store) -> None:
        self._tx = store._tx

    async def create(
        self,
        tenant_id: str,
        *,
        kind: str,
        prompt: str,
        persona_id: str | None = None,
        user_id: str | None = None,
        conversation_id: str | None = None,
        options: dict[str, Any] | None = None,
        client_id: str | None = None,
        requested_by: str | None = None,
        source: str = "generated",
        media_id: str | None = None,
    ) -> MediaRecord:
        """A new item, ``queued``."""
        if source not in SOURCES:
            raise ValueError(f"unknown source {source!r}")
        row = MediaItem(
            id=media_id or new_id("med"),
            tenant_id=tenant_id,
            persona_id=persona_id,
            user_id=user_id,
            conversation_id=conversation_id,
            kind=kind,
            source=source,
            state="queued",
            prompt=prompt,
            options=dict(options or {}),
            client_id=client_id,
            requested_by=requested_by,
            progress=0.0,
            bytes=0,
            meta={},
            created_at=utcnow(),
        )
        async with self._tx(tenant_id) as s:
            s.add(row)
            await s.flush()
            return _record(row)

    async def get(self, tenant_id: str, media_id: str) -> MediaRecord | None:
        async with self._tx(tenant_id) as s:
            row = await s.get(MediaItem, media_id)
            return _record(row) if row is not None and row.tenant_id == tenant_id else None

    async def by_client_id(
        self, tenant_id: str, conversation_id: str, client_id: str
    ) -> MediaRecord | None:
        """The item a socket's ``media.create`` with this id made (a resend is processed once)."""
        async with self._tx(tenant_id) as s:
            row = (
                await s.execute(
                    select(MediaItem).where(
                        MediaItem.tenant_id == tenant_id,
                        MediaItem.conversation_id == conversation_id,
                        MediaItem.client_id == client_id,
                    )
                )
            ).scalar_one_or_none()
            return _record(row) if row is not None else None

    async def list_items(
        self,
        tenant_id: str,
        *,
        persona_id: str | None = None,
        user_id: str | None = None,
        conversation_id: str | None = None,
        kind: str | None = None,
        source: str | None = None,
        states: Sequence[str] | None = None,
        limit: int = 100,
        before: datetime | None = None,
    ) -> list[MediaRecord]:
        """Newest first."""
        q = select(MediaItem).where(MediaItem.tenant_id == tenant_id)
        for column, value in (
            (MediaItem.persona_id, persona_id),
            (MediaItem.user_id, user_id),
            (MediaItem.conversation_id, conversation_id),
            (MediaItem.kind, kind),
            (MediaItem.source, source),
        ):
            if value is not None:
                q = q.where(column == value)
        if states:
            q = q.where(MediaItem.state.in_(list(states)))
        if before is not None:
            q = q.where(MediaItem.created_at < before)
        q = q.order_by(MediaItem.created_at.desc(), MediaItem.id.desc()).limit(limit)
        async with self._tx(tenant_id) as s:
            return [_record(r) for r in (await s.execute(q)).scalars()]

    async def start(self, tenant_id: str, media_id: str, generator: str) -> MediaRecord | None:
        """``queued`` -> ``running``; None when the item is gone or no longer queued (cancelled)."""
        async with self._tx(tenant_id) as s:
            result = await s.execute(
                update(MediaItem)
                .where(
                    MediaItem.tenant_id == tenant_id,
                    MediaItem.id == media_id,
                    MediaItem.state.in_(("queued", "running")),
                )
                .values(state="running", generator=generator)
            )
            if not result.rowcount:  # type: ignore[attr-defined]
                return None
            row = await s.get(MediaItem, media_id)
            return _record(row) if row is not None else None

    async def set_progress(self, tenant_id: str, media_id: str, progress: float) -> None:
        async with self._tx(tenant_id) as s:
            await s.execute(
                update(MediaItem)
                .where(
                    MediaItem.tenant_id == tenant_id,
                    MediaItem.id == media_id,
                    MediaItem.state == "running",
                )
                .values(progress=max(0.0, min(1.0, progress)))
            )

    async def finish(
        self,
        tenant_id: str,
        media_id: str,
        *,
        sha256: str,
        storage_key: str,
        mime: str,
        size: int,
        width: int | None = None,
        height: int | None = None,
        seconds: float | None = None,
        meta: dict[str, Any] | None = None,
    ) -> MediaRecord | None:
        """``running`` -> ``done`` with its file; None if it was cancelled meanwhile."""
        async with self._tx(tenant_id) as s:
            result = await s.execute(
                update(MediaItem)
                .where(
                    MediaItem.tenant_id == tenant_id,
                    MediaItem.id == media_id,
                    MediaItem.state.in_(("queued", "running")),
                )
                .values(
                    state="done",
                    progress=1.0,
                    sha256=sha256,
                    storage_key=storage_key,
                    mime=mime,
                    bytes=size,
                    width=width,
                    height=height,
                    seconds=seconds,
                    meta=dict(meta or {}),
                    finished_at=utcnow(),
                )
            )
            if not result.rowcount:  # type: ignore[attr-defined]
                return None
            row = await s.get(MediaItem, media_id)
            return _record(row) if row is not None else None

    async def fail(
        self, tenant_id: str, media_id: str, code: str, message: str, *, state: str = "failed"
    ) -> bool:
        """End an unfinished item as ``failed`` (or ``cancelled``); False if it had finished."""
        if state not in ("failed", "cancelled"):
            raise ValueError(f"not an end state for a failure: {state!r}")
        async with self._tx(tenant_id) as s:
            result = await s.execute(
                update(MediaItem)
                .where(
                    MediaItem.tenant_id == tenant_id,
                    MediaItem.id == media_id,
                    MediaItem.state.in_(("queued", "running")),
                )
                .values(state=state, error_code=code, error=message[:2000], finished_at=utcnow())
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    async def delete(self, tenant_id: str, media_id: str) -> MediaRecord | None:
        """Delete the row; returns it (its file may now be unreferenced)."""
        async with self._tx(tenant_id) as s:
            row = await s.get(MediaItem, media_id)
            if row is None or row.tenant_id != tenant_id:
                return None
            record = _record(row)
            await s.delete(row)
            return record

    async def delete_for_user(self, tenant_id: str, user_id: str) -> list[MediaRecord]:
        """Delete every item of a person; returns them (to delete their unreferenced files)."""
        async with self._tx(tenant_id) as s:
            rows = (
                await s.execute(
                    select(MediaItem).where(
                        MediaItem.tenant_id == tenant_id, MediaItem.user_id == user_id
                    )
                )
            ).scalars()
            records = [_record(r) for r in rows]
            await s.execute(
                delete(MediaItem).where(
                    MediaItem.tenant_id == tenant_id, MediaItem.user_id == user_id
                )
            )
            return records

    async def unreferenced(self, sha256s: Sequence[str]) -> list[str]:
        """Of these content hashes, those no row of any tenant points at any more."""
        wanted = sorted({h for h in sha256s if h})
        if not wanted:
            return []
        # Across tenants: one tenant's delete must not remove a file another still shows.
        async with self._tx(system=True) as s:
            used = set(
                (
                    await s.execute(
                        select(MediaItem.sha256).where(MediaItem.sha256.in_(wanted)).distinct()
                    )
                ).scalars()
            )
        return [h for h in wanted if h not in used]

    async def usage_bytes(self, tenant_id: str) -> int:
        async with self._tx(tenant_id) as s:
            total = (
                await s.execute(
                    select(func.coalesce(func.sum(MediaItem.bytes), 0)).where(
                        MediaItem.tenant_id == tenant_id, MediaItem.state == "done"
                    )
                )
            ).scalar_one()
            return int(total or 0)

    async def get_quota(self, tenant_id: str) -> int | None:
        async with self._tx(tenant_id) as s:
            row = await s.get(MediaQuota, tenant_id)
            return int(row.max_bytes) if row is not None else None

    async def set_quota(self, tenant_id: str, max_bytes: int | None) -> None:
        """Set the tenant's own quota; None returns it to the default."""
        async with self._tx(tenant_id) as s:
            row = await s.get(MediaQuota, tenant_id)
            if max_bytes is None:
                if row is not None:
                    await s.delete(row)
                return
            if row is None:
                s.add(MediaQuota(tenant_id=tenant_id, max_bytes=max_bytes, updated_at=utcnow()))
            else:
                row.max_bytes = max_bytes
                row.updated_at = utcnow()
