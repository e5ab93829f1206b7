"""Personas and Character Card V1/V2/V3 import/export (JSON and PNG).

Salon stores a persona as :class:`PersonaSpec`. Cards from other tools arrive as
Character Card JSON (``chara_card_v2`` / ``chara_card_v3``), flat V1 JSON, or a
PNG whose ``chara`` (V2) / ``ccv3`` (V3) text chunk holds base64 of UTF-8 JSON.
Import is lossless for what the specs define: ``extensions`` and
``character_book`` are kept verbatim, so a card survives import -> export.
Salon's own settings (voice, slug) travel in ``data.extensions["salon"]``.
"""

from __future__ import annotations

import base64
import binascii
import copy
import difflib
import io
import json
import re
import struct
import unicodedata
import zlib
from pathlib import Path
from typing import Annotated, Any

from PIL import Image
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)

__all__ = [
    "CardError",
    "PersonaSpec",
    "apply_patch",
    "load_card_file",
    "parse_persona_payload",
    "persona_to_public",
    "read_png_card",
    "slugify",
    "to_card_v2",
    "to_card_v3",
    "write_png_card",
]


class CardError(ValueError):
    """A persona or card payload could not be read; the message is meant for humans."""


Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Slug = Annotated[str, StringConstraints(pattern=r"^[a-z0-9-]+$", min_length=1, max_length=100)]


class PersonaSpec(BaseModel):
    """A Salon persona: the Character Card V2 fields, V3 extras, and Salon's voice/slug."""

    # strict: a number where text belongs is a mistake in the card, not something to coerce.
    model_config = ConfigDict(extra="forbid", strict=True)

    name: Name
    slug: Slug | None = None
    description: str = ""
    personality: str = ""
    scenario: str = ""
    first_mes: str = ""
    mes_example: str = ""
    system_prompt: str = ""
    post_history_instructions: str = ""
    alternate_greetings: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    creator: str = ""
    creator_notes: str = ""
    character_version: str = ""
    character_book: dict[str, Any] | None = None
    extensions: dict[str, Any] = Field(default_factory=dict)
    voice: dict[str, Any] | str | None = None
    nickname: str | None = None
    group_only_greetings: list[str] = Field(default_factory=list)
    creator_notes_multilingual: dict[str, str] | None = None
    source: list[str] | None = None
    assets: list[dict[str, Any]] | None = None
    creation_date: int | None = None
    modification_date: int | None = None

    @field_validator("creation_date", "modification_date", mode="before")
    @classmethod
    def _integral_timestamp(cls, value: Any) -> Any:
        # Some exporters (JavaScript) write timestamps as floats; accept them, reject bools.
        if isinstance(value, float) and value == value and abs(value) != float("inf"):
            return int(value)
        return value

    @property
    def resolved_slug(self) -> str:
        """The explicit slug, or one derived from the name."""
        return self.slug or slugify(self.name)


_FIELDS = frozenset(PersonaSpec.model_fields)
V2_FIELDS = (
    "name", "description", "personality", "scenario", "first_mes", "mes_example",
    "creator_notes", "system_prompt", "post_history_instructions", "alternate_greetings",
    "character_book", "tags", "creator", "character_version", "extensions",
)  # fmt: skip
V3_EXTRA_FIELDS = (
    "nickname", "creator_notes_multilingual", "source", "group_only_greetings",
    "creation_date", "modification_date", "assets",
)  # fmt: skip
# Keys that old TavernAI (V1) exports put next to the card fields; harmless to drop.
_V1_LEGACY_KEYS = frozenset({"avatar", "chat", "create_date", "talkativeness", "fav"})
_DEFAULT_ASSETS = [{"type": "icon", "uri": "ccdefault:", "name": "main", "ext": "png"}]
_SALON_EXT = "salon"

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CARD_KEYWORDS = ("ccv3", "chara")  # order = preference
_TEXT_CHUNKS = (b"tEXt", b"zTXt", b"iTXt")
_MAX_TEXT = 32 * 1024 * 1024  # cap on inflated text so a zTXt bomb can't exhaust memory


def slugify(name: str) -> str:
    """Return a URL-safe slug (``[a-z0-9-]``, at most 100 chars, never empty).

    Accents are folded to ASCII ("Ångström" -> "angstrom"); a name with no usable
    characters at all falls back to ``"persona"``.
    """
    ascii_name = unicodedata.normalize("NFKD", str(name)).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")
    slug = slug[:100].rstrip("-")
    return slug or "persona"


def _format_errors(exc: ValidationError, prefix: str) -> str:
    parts = []
    for err in exc.errors():
        path = ".".join(str(p) for p in (prefix, *err["loc"]) if p != "")
        parts.append(f"{path or '(root)'}: {err['msg']}")
    return "; ".join(parts)


def _validate(values: dict[str, Any], prefix: str = "") -> PersonaSpec:
    try:
        # deepcopy: pydantic copies only the outer dict, and a spec must not share nested
        # extension/lorebook objects with the caller's payload.
        return PersonaSpec.model_validate(copy.deepcopy(values))
    except ValidationError as exc:
        raise CardError(f"invalid persona: {_format_errors(exc, prefix)}") from None


def _reject_unknown(keys: set[str], what: str) -> None:
    unknown = sorted(keys - _FIELDS)
    if not unknown:
        return
    hints = []
    for key in unknown:
        close = difflib.get_close_matches(key, _FIELDS, n=1)
        hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    raise CardError(f"unknown {what} field(s): {', '.join(hints)}")


def parse_persona_payload(payload: dict) -> PersonaSpec:
    """Read Salon persona JSON, a flat V1 card, or a V2/V3 card into a :class:`PersonaSpec`.

    For cards, keys in ``data`` that the spec does not define are ignored, everything in
    ``data.extensions`` is kept verbatim, and Salon's voice/slug are read from
    ``data.extensions["salon"]``. Raises :class:`CardError` with the failing field path.
    """
    if not isinstance(payload, dict):
        raise CardError(f"persona payload must be a JSON object, not {type(payload).__name__}")
    spec_name = payload.get("spec")
    if spec_name is None:
        # Salon JSON or V1: strict about unknown keys so typos are reported, not lost.
        flat = {k: v for k, v in payload.items() if k not in _V1_LEGACY_KEYS}
        _reject_unknown(set(flat), "persona")
        return _validate(flat)
    if spec_name == "chara_card_v2":
        allowed: tuple[str, ...] = V2_FIELDS
    elif spec_name == "chara_card_v3":
        allowed = V2_FIELDS + V3_EXTRA_FIELDS
    else:
        raise CardError(f"unsupported card spec {spec_name!r} (expected chara_card_v2 or v3)")
    data = payload.get("data")
    if not isinstance(data, dict):
        raise CardError(f"{spec_name} card must have a 'data' object")
    # Real-world cards often write null for absent optional fields; treat null as absent.
    values = {k: data[k] for k in allowed if data.get(k) is not None}
    salon = values.get("extensions", {})
    salon = salon.get(_SALON_EXT) if isinstance(salon, dict) else None
    if isinstance(salon, dict):
        for key in ("voice", "slug"):
            if salon.get(key) is not None:
                values[key] = salon[key]
    return _validate(values, prefix="data")


def _card_data(spec: PersonaSpec, fields: tuple[str, ...]) -> dict[str, Any]:
    dumped = spec.model_dump(mode="json")
    data = {k: dumped[k] for k in fields if k in V2_FIELDS or dumped[k] is not None}
    if data.get("character_book") is None:
        data.pop("character_book", None)  # optional in both specs; absent beats null
    # The spec's voice/slug are authoritative; merge them over any stale salon extension.
    ext = data["extensions"]
    salon = dict(ext[_SALON_EXT]) if isinstance(ext.get(_SALON_EXT), dict) else {}
    for key in ("voice", "slug"):
        if dumped[key] is not None:
            salon[key] = dumped[key]
        else:
            salon.pop(key, None)
    if salon:
        ext[_SALON_EXT] = salon
    else:
        ext.pop(_SALON_EXT, None)
    return data


def to_card_v2(spec: PersonaSpec) -> dict[str, Any]:
    """Export as a Character Card V2 dict (Salon voice/slug in ``extensions.salon``)."""
    return {"spec": "chara_card_v2", "spec_version": "2.0", "data": _card_data(spec, V2_FIELDS)}


def to_card_v3(spec: PersonaSpec) -> dict[str, Any]:
    """Export as a Character Card V3 dict; ``assets`` defaults to the card image as icon."""
    data = _card_data(spec, V2_FIELDS + V3_EXTRA_FIELDS)
    if "assets" not in data:
        data["assets"] = copy.deepcopy(_DEFAULT_ASSETS)
    return {"spec": "chara_card_v3", "spec_version": "3.0", "data": data}


def persona_to_public(spec: PersonaSpec) -> dict[str, Any]:
    """Salon persona JSON (JSON-safe); :func:`parse_persona_payload` reads it back unchanged."""
    return spec.model_dump(mode="json")


def apply_patch(spec: PersonaSpec, patch: dict) -> PersonaSpec:
    """Return a copy of ``spec`` with the given top-level fields replaced, re-validated."""
    if not isinstance(patch, dict):
        raise CardError(f"patch must be a JSON object, not {type(patch).__name__}")
    _reject_unknown(set(patch), "persona")
    return _validate({**spec.model_dump(), **patch})


# --- PNG -------------------------------------------------------------------------------


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes, bytes]]:
    """Split a PNG into (type, payload, raw bytes) chunks, up to and including IEND."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise CardError("PNG data must be bytes")
    data = bytes(data)
    if not data.startswith(PNG_SIGNATURE):
        raise CardError("not a PNG file (missing PNG signature)")
    chunks, pos = [], len(PNG_SIGNATURE)
    while pos < len(data):
        if pos + 8 > len(data):
            raise CardError("PNG file is truncated (incomplete chunk header)")
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        ctype = data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if end > len(data):
            raise CardError(f"PNG file is truncated (chunk {ctype!r} runs past the end)")
        chunks.append((ctype, data[pos + 8 : pos + 8 + length], data[pos:end]))
        pos = end
        if ctype == b"IEND":
            break  # anything after IEND is not part of the image
    if not chunks or chunks[0][0] != b"IHDR" or chunks[-1][0] != b"IEND":
        raise CardError("malformed PNG (must start with IHDR and end with IEND)")
    return chunks


def _inflate(blob: bytes) -> bytes:
    try:
        dec = zlib.decompressobj()
        out = dec.decompress(blob, _MAX_TEXT)
    except zlib.error as exc:
        raise CardError(f"PNG text chunk has corrupt compressed data: {exc}") from None
    if dec.unconsumed_tail:
        raise CardError("PNG text chunk is too large once decompressed")
    return out


def _text_chunk(ctype: bytes, payload: bytes) -> tuple[str, str] | None:
    """Decode a tEXt/zTXt/iTXt chunk to (keyword, text); None for other chunk types."""
    if ctype not in _TEXT_CHUNKS or b"\0" not in payload:
        return None
    keyword, rest = payload.split(b"\0", 1)
    key = keyword.decode("latin-1")
    if ctype == b"tEXt":
        return key, rest.decode("latin-1")
    if ctype == b"zTXt":
        return key, _inflate(rest[1:]).decode("latin-1")
    # iTXt: compression flag, method, language\0, translated keyword\0, UTF-8 text.
    if len(rest) < 2 or rest[2:].count(b"\0") < 2:
        return None
    flag, body = rest[0], rest[2:].split(b"\0", 2)[2]
    raw = _inflate(body) if flag else body
    return key, raw.decode("utf-8", errors="replace")


def _decode_card_text(keyword: str, text: str) -> dict[str, Any]:
    stripped = "".join(text.split())
    if stripped.startswith("{"):
        raw = stripped.encode()  # a few tools store plain JSON; accept it
    else:
        try:
            raw = base64.b64decode(stripped + "=" * (-len(stripped) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise CardError(f"PNG {keyword!r} chunk is not valid base64") from None
    try:
        card = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise CardError(f"PNG {keyword!r} chunk does not decode to UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise CardError(f"PNG {keyword!r} chunk is not valid JSON: {exc}") from None
    if not isinstance(card, dict):
        raise CardError(f"PNG {keyword!r} chunk must hold a JSON object")
    return card


def read_png_card(data: bytes) -> dict[str, Any]:
    """Return the card JSON embedded in a PNG (``ccv3`` chunk preferred over ``chara``).

    If the preferred chunk is unreadable but another card chunk is fine, the other is used;
    otherwise the first decoding error is raised as :class:`CardError`.
    """
    found: dict[str, str] = {}
    for ctype, payload, _raw in _png_chunks(data):
        decoded = _text_chunk(ctype, payload)
        if decoded and decoded[0].lower() in _CARD_KEYWORDS:
            found.setdefault(decoded[0].lower(), decoded[1])
    if not found:
        raise CardError("PNG has no character card (no 'chara' or 'ccv3' text chunk)")
    first_error: CardError | None = None
    for keyword in _CARD_KEYWORDS:
        if keyword in found:
            try:
                return _decode_card_text(keyword, found[keyword])
            except CardError as exc:
                first_error = first_error or exc
    assert first_error is not None
    raise first_error


def _chunk(ctype: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(ctype + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + ctype + payload + struct.pack(">I", crc)


def _as_png(image: bytes | None) -> bytes:
    if image is not None and bytes(image[:8]) == PNG_SIGNATURE:
        return bytes(image)
    buf = io.BytesIO()
    try:
        img = Image.new("RGBA", (1, 1)) if image is None else Image.open(io.BytesIO(image))
        if img.mode not in ("1", "L", "LA", "I", "P", "RGB", "RGBA"):
            img = img.convert("RGBA")  # e.g. CMYK JPEG: PNG cannot store that mode
        img.save(buf, format="PNG")  # JPEG/WebP avatars are converted so the card fits
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise CardError(f"card image is not a readable image: {exc}") from None
    return buf.getvalue()


def write_png_card(card: dict | PersonaSpec, image: bytes | None = None) -> bytes:
    """Embed ``card`` into a PNG as both ``chara`` (V2) and ``ccv3`` (V3) tEXt chunks.

    ``card`` is any payload :func:`parse_persona_payload` accepts (or a PersonaSpec); it
    is normalised so both chunks agree. Existing card chunks are replaced, every other
    chunk is copied byte for byte. Without ``image`` a transparent 1x1 PNG is used.
    """
    spec = card if isinstance(card, PersonaSpec) else parse_persona_payload(card)
    chunks = _png_chunks(_as_png(image))
    kept = [
        raw
        for ctype, payload, raw in chunks[:-1]
        if not ((t := _safe_text(ctype, payload)) and t[0].lower() in _CARD_KEYWORDS)
    ]
    new = []
    for keyword, exported in (("chara", to_card_v2(spec)), ("ccv3", to_card_v3(spec))):
        text = json.dumps(exported, ensure_ascii=False, separators=(",", ":"))
        encoded = base64.b64encode(text.encode("utf-8"))
        new.append(_chunk(b"tEXt", keyword.encode("latin-1") + b"\0" + encoded))
    return PNG_SIGNATURE + b"".join(kept + new) + chunks[-1][2]


def _safe_text(ctype: bytes, payload: bytes) -> tuple[str, str] | None:
    # When replacing chunks, a corrupt old text chunk must not block writing a new card.
    try:
        return _text_chunk(ctype, payload)
    except CardError:
        keyword = payload.split(b"\0", 1)[0].decode("latin-1")
        return (keyword, "") if ctype in _TEXT_CHUNKS else None


def load_card_file(path: str | Path) -> PersonaSpec:
    """Load a persona from a ``.png`` card or ``.json`` file (other names are sniffed)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CardError(f"cannot read {path.name}: {exc.strerror or exc}") from None
    suffix = path.suffix.lower()
    if suffix == ".png" or (suffix != ".json" and raw.startswith(PNG_SIGNATURE)):
        return parse_persona_payload(read_png_card(raw))
    try:
        payload = json.loads(raw.decode("utf-8-sig"))  # -sig: tolerate a BOM from Windows tools
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CardError(f"{path.name} is neither a PNG card nor valid JSON: {exc}") from None
    return parse_persona_payload(payload)
