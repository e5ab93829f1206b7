"""Content-addressed media files: one stored copy per distinct content.

Generated media is stored under the SHA-256 of its bytes
(``cas/<2 hex>/<64 hex><ext>``): two identical results (the same seed and
prompt, an avatar imported twice) share one file, a file is never rewritten
in place, and a key says nothing of who asked. Which tenant owns what, and
when a file may be deleted (no row refers to it any more), is the media
table's business (memory/media_store.py), not this module's.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from media.storage import MediaStorage

FOLDER = "cas"
EXTENSIONS = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/webp": ".webp",
    "video/mp4": ".mp4",
    "model/gltf-binary": ".glb",
    "model/vrm": ".vrm",
    "application/json": ".json",
}


@dataclass(frozen=True)
class ContentRef:
    """Where some content is stored, and what it is."""

    sha256: str
    key: str
    size: int
    mime: str


def content_key(sha256: str, mime: str) -> str:
    return f"{FOLDER}/{sha256[:2]}/{sha256}{EXTENSIONS.get(mime, '.bin')}"


async def put_content(storage: MediaStorage, data: bytes, mime: str) -> ContentRef:
    """Store ``data`` once under its hash; an identical file already there is reused."""
    digest = hashlib.sha256(data).hexdigest()
    key = content_key(digest, mime)
    if not await storage.exists(key):
        await storage.put(key, data, mime)
    return ContentRef(digest, key, len(data), mime)
