"""Check and describe an avatar made elsewhere: a GLB or VRM file, given as bytes.

Ready Player Me exports GLB; VRoid Studio and UniVRM export VRM, which is a
GLB whose JSON declares the ``VRM`` (VRM 0.x) or ``VRMC_vrm`` (VRM 1.0)
extension. Both are stored as they came (never rewritten): this module only
decides whether the bytes are a well-formed, self-contained glTF 2.0 binary
worth storing for a persona, and says what is inside.

Fetching a URL is not done here: the caller downloads with the project's
SSRF guard (``SALON_AVATAR_IMPORT_ALLOW_PRIVATE``) and hands over bytes.

MIME type: VRM has no registered type (``model/vrm`` is used by some tools
but is not registered), and every VRM file is a valid GLB, so both formats
are stored as ``model/gltf-binary``; ``meta["format"]`` (``glb`` or
``vrm``) and ``meta["extension"]`` (``.glb`` / ``.vrm``) tell them apart,
e.g. for a download's file name or for picking a VRM-aware viewer.

Only the container and the JSON's references are checked (pure Python, no
3D library), not every accessor's numbers: a viewer still has the last
word. Anything unusable is a :class:`MediaGenerationError` with
``code="invalid_request"`` and a message a person can act on.
"""

from __future__ import annotations

import json
import struct
from typing import Any

from media.avatar.base import GLB_MIME
from media.generation import GeneratedMedia, MediaGenerationError

GLB_MAGIC = b"glTF"
CHUNK_JSON = 0x4E4F534A
CHUNK_BIN = 0x004E4942
DEFAULT_MAX_BYTES = 50 * 1024 * 1024  # MediaConfig.avatar_import_max_bytes
_TEXT_LIMIT = 200  # longest string copied from a file's metadata into ours


def _invalid(message: str) -> MediaGenerationError:
    return MediaGenerationError(message, code="invalid_request")


def _dict(value: Any) -> dict[str, Any]:
    """``value`` when it is a JSON object, else empty: foreign metadata is not trusted."""
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _text(value: Any) -> str | None:
    if isinstance(value, str) and value.strip():
        return value.strip()[:_TEXT_LIMIT]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return ", ".join(value)[:_TEXT_LIMIT]
    return None


def read_glb(data: bytes) -> tuple[dict[str, Any], int]:
    """Split a GLB into its parsed JSON and the length of its BIN chunk (0 if none).

    Checks the 12-byte header (magic, version 2, declared length equal to
    the data's), the chunk layout, and that the JSON chunk is a glTF 2.x
    document.
    """
    if data[:1] == b"{":
        raise _invalid(
            "this is a .gltf JSON file; upload the binary .glb (or .vrm) with its textures embedded"
        )
    if len(data) < 20:
        raise _invalid("not a GLB file: too short")
    magic, version, length = struct.unpack_from("<4sII", data, 0)
    if magic != GLB_MAGIC:
        raise _invalid("not a GLB or VRM file (no glTF binary header)")
    if version != 2:
        raise _invalid(f"glTF binary version {version} is not supported (only glTF 2.0)")
    if length > len(data):
        raise _invalid(f"the file is truncated: header says {length} bytes, got {len(data)}")
    if length < len(data):
        raise _invalid(f"unexpected bytes after the GLB's end ({len(data) - length} extra)")
    document: dict[str, Any] | None = None
    bin_length = 0
    offset = 12
    while offset < length:
        if offset + 8 > length:
            raise _invalid("the file is truncated inside a chunk header")
        chunk_length, chunk_type = struct.unpack_from("<II", data, offset)
        start, end = offset + 8, offset + 8 + chunk_length
        if end > length:
            raise _invalid("the file is truncated inside a chunk")
        if document is None:
            if chunk_type != CHUNK_JSON:
                raise _invalid("the GLB's first chunk is not its JSON")
            document = _parse_json(data[start:end])
        elif chunk_type == CHUNK_BIN:
            if bin_length:
                raise _invalid("the GLB has more than one binary chunk")
            bin_length = chunk_length
        # Other chunk types are reserved for extensions: skipped, as the spec says.
        offset = end + (-chunk_length % 4)  # chunks start 4-byte aligned
    if document is None:
        raise _invalid("the GLB has no JSON chunk")
    return document, bin_length


def _parse_json(raw: bytes) -> dict[str, Any]:
    try:
        # Trailing spaces pad the chunk to 4 bytes; a BOM is not allowed but harmless.
        document = json.loads(raw.decode("utf-8-sig").rstrip(" \x00"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise _invalid(f"the GLB's JSON chunk does not parse: {exc}") from exc
    if not isinstance(document, dict):
        raise _invalid("the GLB's JSON is not an object")
    asset = document.get("asset")
    version = asset.get("version") if isinstance(asset, dict) else None
    if not isinstance(version, str) or not version.startswith("2."):
        raise _invalid("the GLB's JSON is not a glTF 2.0 document (asset.version)")
    return document


def _items(document: dict[str, Any], key: str) -> list[Any]:
    value = document.get(key, [])
    if not isinstance(value, list):
        raise _invalid(f"the glTF {key!r} is not a list")
    return value


def _check_references(document: dict[str, Any], bin_length: int) -> None:
    """Buffers inside the file, views inside their buffers, indices that exist."""
    buffers = _items(document, "buffers")
    sizes: list[int] = []
    for index, buffer in enumerate(buffers):
        if not isinstance(buffer, dict) or not isinstance(buffer.get("byteLength"), int):
            raise _invalid(f"buffer {index} has no byteLength")
        uri = buffer.get("uri")
        if uri is None:
            if index != 0 or buffer["byteLength"] > bin_length:
                raise _invalid(f"buffer {index} is larger than the GLB's binary chunk")
        elif not (isinstance(uri, str) and uri.startswith("data:")):
            raise _invalid("the model refers to external files; export it as one .glb/.vrm")
        sizes.append(buffer["byteLength"])
    for index, view in enumerate(_items(document, "bufferViews")):
        if not isinstance(view, dict):
            raise _invalid(f"bufferView {index} is not an object")
        buffer_index, length = view.get("buffer"), view.get("byteLength")
        offset = view.get("byteOffset", 0)
        if not (isinstance(buffer_index, int) and 0 <= buffer_index < len(sizes)):
            raise _invalid(f"bufferView {index} refers to a missing buffer")
        if not (isinstance(length, int) and isinstance(offset, int) and offset >= 0):
            raise _invalid(f"bufferView {index} has no valid byteOffset/byteLength")
        if offset + length > sizes[buffer_index]:
            raise _invalid(f"bufferView {index} runs past the end of its buffer")
    for index, image in enumerate(_items(document, "images")):
        uri = image.get("uri") if isinstance(image, dict) else None
        if isinstance(uri, str) and not uri.startswith("data:"):
            raise _invalid(f"image {index} is an external file; embed textures in the GLB")
    meshes = _items(document, "meshes")
    for index, node in enumerate(_items(document, "nodes")):
        mesh = node.get("mesh") if isinstance(node, dict) else None
        if mesh is not None and not (isinstance(mesh, int) and 0 <= mesh < len(meshes)):
            raise _invalid(f"node {index} refers to a missing mesh")
    if not meshes:
        raise _invalid("the model has no meshes: nothing to show as an avatar")


def _vrm_version(document: dict[str, Any]) -> str | None:
    used = {name for name in _list(document.get("extensionsUsed")) if isinstance(name, str)}
    names = used | set(_dict(document.get("extensions")))
    if "VRMC_vrm" in names:
        return "1.0"
    if "VRM" in names:
        return "0.x"
    return None


def _vrm_meta(document: dict[str, Any], version: str) -> dict[str, Any]:
    """Title, author and licence terms: what an operator must see before using a VRM."""
    extensions = _dict(document.get("extensions"))
    out: dict[str, Any] = {}
    if version == "1.0":
        meta = _dict(_dict(extensions.get("VRMC_vrm")).get("meta"))
        fields = {
            "title": meta.get("name"),
            "author": meta.get("authors"),
            "license": meta.get("licenseUrl"),
            "avatar_permission": meta.get("avatarPermission"),
            "commercial_usage": meta.get("commercialUsage"),
        }
    else:
        meta = _dict(_dict(extensions.get("VRM")).get("meta"))
        fields = {
            "title": meta.get("title"),
            "author": meta.get("author"),
            "license": meta.get("licenseName"),
            "avatar_permission": meta.get("allowedUserName"),
            "commercial_usage": meta.get("commercialUssageName"),  # sic, the VRM 0.x key
        }
    for key, value in fields.items():
        text = _text(value)
        if text:
            out[key] = text
    return out


def _source(document: dict[str, Any], tool: str | None, vrm: str | None) -> str | None:
    """Best-effort origin: Ready Player Me names its meshes ``Wolf3D_*``."""
    names = [
        item.get("name", "")
        for key in ("nodes", "meshes")
        for item in _list(document.get(key))
        if isinstance(item, dict) and isinstance(item.get("name"), str)
    ]
    lowered = (tool or "").lower()
    if "ready player me" in lowered or any(n.startswith("Wolf3D_") for n in names):
        return "ready_player_me"
    if "vroid" in lowered:
        return "vroid"
    return "vrm" if vrm else None


def describe_glb(data: bytes) -> dict[str, Any]:
    """Check a GLB/VRM and list what is in it (the ``meta`` of an imported avatar)."""
    document, bin_length = read_glb(data)
    _check_references(document, bin_length)
    vrm = _vrm_version(document)
    tool = _text(_dict(document.get("asset")).get("generator"))
    animations = [
        (a.get("name") if isinstance(a, dict) and isinstance(a.get("name"), str) else None)
        or f"animation_{i}"
        for i, a in enumerate(_items(document, "animations"))
    ]
    primitives = [
        p
        for mesh in _items(document, "meshes")
        if isinstance(mesh, dict)
        for p in _list(mesh.get("primitives"))
        if isinstance(p, dict)
    ]
    meta: dict[str, Any] = {
        "format": "vrm" if vrm else "glb",
        "extension": ".vrm" if vrm else ".glb",
        "nodes": len(_items(document, "nodes")),
        "meshes": len(_items(document, "meshes")),
        "materials": len(_items(document, "materials")),
        "skins": len(_items(document, "skins")),
        "morph_targets": sum(bool(p.get("targets")) for p in primitives),
        "animations": animations,
        "extensions_required": sorted(
            e for e in _list(document.get("extensionsRequired")) if isinstance(e, str)
        ),
    }
    if tool:
        meta["authoring_tool"] = tool
    source = _source(document, tool, vrm)
    if source:
        meta["source"] = source
    if vrm:
        meta["vrm_version"] = vrm
        meta.update(_vrm_meta(document, vrm))
    return meta


def import_avatar(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> GeneratedMedia:
    """Validate an uploaded or fetched GLB/VRM and wrap it for storage.

    ``max_bytes``: ``SALON_AVATAR_IMPORT_MAX_BYTES``. The bytes are returned
    unchanged, as ``model/gltf-binary``, with :func:`describe_glb`'s meta
    plus ``generator="import"``.
    """
    if not data:
        raise _invalid("the avatar file is empty")
    if len(data) > max_bytes:
        raise _invalid(
            f"the avatar file is {len(data)} bytes; the limit is {max_bytes} "
            "(SALON_AVATAR_IMPORT_MAX_BYTES)"
        )
    meta = describe_glb(data)
    return GeneratedMedia(data=data, mime=GLB_MIME, meta={"generator": "import", **meta})
