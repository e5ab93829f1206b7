"""Media file storage: generated files (images, videos, exports) by key.

A key is a relative, slash-separated path such as ``exports/job_1.json``:
segments of letters, digits, ``_``, ``-`` and ``.``, none starting with a dot
(so ``..`` and hidden names are impossible), at most 512 characters. Anything
else is refused with :class:`InvalidKey`, which is what keeps a key that came
from a URL or a job argument inside the storage root.
"""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path

_SEGMENT = r"[A-Za-z0-9_-][A-Za-z0-9_.-]*"
_KEY = re.compile(rf"^{_SEGMENT}(?:/{_SEGMENT})*$")
_MIME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*$")
MAX_KEY_LENGTH = 512
# Keys cannot start with a dot, so this directory is out of their reach.
_META_DIR = ".mime"


class InvalidKey(ValueError):
    """A key that is not a safe relative path."""


def validate_key(key: str) -> str:
    if not isinstance(key, str) or len(key) > MAX_KEY_LENGTH or not _KEY.match(key):
        raise InvalidKey(
            f"invalid media key {key!r}: use slash-separated segments of letters, digits, "
            "'_', '-', '.', not starting with '.'"
        )
    return key


class MediaStorage(ABC):
    """Where generated media lives; one implementation per backend (local files today)."""

    @abstractmethod
    async def put(self, key: str, data: bytes, mime: str) -> str:
        """Store ``data`` under ``key`` (replacing it) and return the key."""

    @abstractmethod
    async def open(self, key: str) -> tuple[bytes, str] | None:
        """``(data, mime)``, or None if there is no such file."""

    @abstractmethod
    async def delete(self, key: str) -> bool:
        """Remove the file; False if there was none."""

    @abstractmethod
    async def list_keys(self, prefix: str) -> list[str]:
        """Keys of the files under the folder ``prefix`` (``"exports"``), sorted; [] if none."""

    async def head(self, key: str, size: int) -> bytes | None:
        """The first ``size`` bytes of a file (None if there is no such file).

        The default reads the whole file; backends that can read a range override it.
        """
        found = await self.open(key)
        return None if found is None else found[0][:size]

    async def exists(self, key: str) -> bool:
        """Whether a file is stored under ``key``."""
        return await self.head(key, 0) is not None

    async def close(self) -> None:
        """Release clients and connections (nothing to do for local files)."""


class LocalMediaStorage(MediaStorage):
    """Files under ``root`` (``<data dir>/media`` by default).

    Several processes (replicas, workers) may share it when ``root`` is on a
    shared volume; writes are atomic (temp file + rename), so a reader never
    sees half a file.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        validate_key(key)
        root = self.root.resolve()
        path = (root / key).resolve()
        # Belt and braces: a symlink planted inside the root must not lead out of it.
        if not path.is_relative_to(root):
            raise InvalidKey(f"invalid media key {key!r}: outside the storage root")
        return path

    def _mime_path(self, key: str) -> Path:
        return self.root.resolve() / _META_DIR / key

    async def put(self, key: str, data: bytes, mime: str) -> str:
        path = self._path(key)
        if not isinstance(mime, str) or not _MIME.match(mime):
            raise ValueError(f"invalid mime type {mime!r}")
        await asyncio.to_thread(self._write, path, bytes(data))
        await asyncio.to_thread(self._write, self._mime_path(key), mime.encode())
        return key

    async def open(self, key: str) -> tuple[bytes, str] | None:
        path = self._path(key)
        return await asyncio.to_thread(self._read, path, self._mime_path(key))

    async def delete(self, key: str) -> bool:
        path = self._path(key)
        return await asyncio.to_thread(self._remove, path, self._mime_path(key))

    async def list_keys(self, prefix: str) -> list[str]:
        folder = self._path(prefix)
        root = self.root.resolve()
        return await asyncio.to_thread(self._list, folder, root)

    async def head(self, key: str, size: int) -> bytes | None:
        path = self._path(key)
        return await asyncio.to_thread(self._head, path, size)

    @staticmethod
    def _list(folder: Path, root: Path) -> list[str]:
        if not folder.is_dir():
            return []
        keys = []
        for path in folder.rglob("*"):
            # Temp files of unfinished writes start with a dot: not keys (yet).
            if path.is_file() and not path.name.startswith("."):
                keys.append(path.relative_to(root).as_posix())
        return sorted(keys)

    @staticmethod
    def _head(path: Path, size: int) -> bytes | None:
        try:
            with path.open("rb") as f:
                return f.read(size)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @staticmethod
    def _read(path: Path, mime_path: Path) -> tuple[bytes, str] | None:
        try:
            data = path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
        try:
            mime = mime_path.read_text().strip() or "application/octet-stream"
        except (FileNotFoundError, NotADirectoryError):
            mime = "application/octet-stream"
        return data, mime

    @staticmethod
    def _remove(path: Path, mime_path: Path) -> bool:
        mime_path.unlink(missing_ok=True)
        try:
            path.unlink()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return False
        return True


def create_media_storage(
    kind: str = "local",
    *,
    root: Path,
    bucket: str | None = None,
    prefix: str = "salon/",
    endpoint_url: str | None = None,
    region: str | None = None,
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
) -> MediaStorage:
    """The configured storage: ``local`` (files under ``root``, the default) or ``s3``."""
    if kind == "local":
        return LocalMediaStorage(root)
    if kind == "s3":
        from media.storage_s3 import S3MediaStorage

        return S3MediaStorage(
            bucket or "",
            prefix=prefix,
            endpoint_url=endpoint_url,
            region=region,
            access_key_id=access_key_id,
            secret_access_key=secret_access_key,
        )
    raise ValueError(f"unknown media storage {kind!r} (SALON_MEDIA_STORAGE: local or s3)")
