"""Persona operations shared by the HTTP API and the CLI."""

from __future__ import annotations

from typing import Any

from agents.cards import PersonaSpec, apply_patch, parse_persona_payload
from memory.records import PersonaRecord
from memory.store import Conflict, Store


def spec_of(record: PersonaRecord) -> PersonaSpec:
    return PersonaSpec.model_validate({**record.data, "slug": record.slug})


def public_persona(record: PersonaRecord) -> dict[str, Any]:
    """The persona as the API returns it: Salon persona JSON plus id and timestamps."""
    return {
        "id": record.id,
        **record.data,
        "slug": record.slug,
        "created_at": record.created_at.isoformat(),
        "updated_at": record.updated_at.isoformat(),
    }


def _stored(spec: PersonaSpec) -> dict[str, Any]:
    return spec.model_dump(mode="json", exclude={"slug"})


async def create_persona(store: Store, tenant_id: str, payload: dict[str, Any]) -> PersonaRecord:
    """Create from Salon JSON or a Character Card; a derived slug gets a suffix if taken.

    Raises :class:`agents.cards.CardError` for bad input and
    :class:`memory.store.Conflict` when an explicitly given slug is taken.
    """
    spec = parse_persona_payload(payload)
    if spec.slug:
        return await store.create_persona(
            tenant_id, slug=spec.slug, name=spec.name, data=_stored(spec)
        )
    base = spec.resolved_slug
    for n in range(1, 100):
        slug = base if n == 1 else f"{base[:95]}-{n}"
        try:
            return await store.create_persona(
                tenant_id, slug=slug, name=spec.name, data=_stored(spec)
            )
        except Conflict:
            continue
    raise Conflict(f"could not find a free slug for {spec.name!r}")


async def update_persona(
    store: Store, tenant_id: str, persona_id: str, patch: dict[str, Any]
) -> PersonaRecord | None:
    record = await store.get_persona(tenant_id, persona_id)
    if record is None:
        return None
    spec = apply_patch(spec_of(record), patch)
    return await store.update_persona(
        tenant_id, record.id, slug=spec.slug or record.slug, name=spec.name, data=_stored(spec)
    )
