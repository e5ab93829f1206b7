"""Media storage on S3 or any S3-compatible store (MinIO, Cloudflare R2, Ceph, ...).

The production option for media files (``SALON_MEDIA_STORAGE=s3``): every
replica and worker sees the same bucket, so no shared volume is needed. Keys
are the same validated relative paths as :class:`LocalMediaStorage` uses,
under ``SALON_MEDIA_S3_PREFIX``; the MIME type is the object's Content-Type.

Uses ``aioboto3`` (the ``s3`` extra): the AWS SDK's asyncio port, kept in
step with botocore, so credentials come from the usual places too
(variables, instance roles) when the settings leave them unset. One client is
opened on first use and kept; :meth:`close` releases it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from media.storage import _MIME, MediaStorage, validate_key

EXTRA_HINT = "pip install 'salon[s3]'"


class S3MediaStorage(MediaStorage):
    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "salon/",
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
    ) -> None:
        if not bucket:
            raise ValueError("an S3 bucket is required (SALON_MEDIA_S3_BUCKET)")
        self.bucket = bucket
        self.prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
        self._options: dict[str, Any] = {
            "endpoint_url": endpoint_url,
            "region_name": region,
            "aws_access_key_id": access_key_id,
            "aws_secret_access_key": secret_access_key,
        }
        self._client: Any = None
        self._context: Any = None
        self._lock = asyncio.Lock()

    async def _s3(self) -> Any:
        if self._client is None:
            async with self._lock:
                if self._client is None:
                    try:
                        import aioboto3
                    except ImportError as exc:
                        raise RuntimeError(
                            f"S3 media storage needs aioboto3: {EXTRA_HINT}"
                        ) from exc
                    options = {k: v for k, v in self._options.items() if v is not None}
                    self._context = aioboto3.Session().client("s3", **options)
                    self._client = await self._context.__aenter__()
        return self._client

    def _object(self, key: str) -> str:
        return self.prefix + validate_key(key)

    async def put(self, key: str, data: bytes, mime: str) -> str:
        if not isinstance(mime, str) or not _MIME.match(mime):
            raise ValueError(f"invalid mime type {mime!r}")
        s3 = await self._s3()
        await s3.put_object(
            Bucket=self.bucket, Key=self._object(key), Body=bytes(data), ContentType=mime
        )
        return key

    async def open(self, key: str) -> tuple[bytes, str] | None:
        s3 = await self._s3()
        try:
            answer = await s3.get_object(Bucket=self.bucket, Key=self._object(key))
        except s3.exceptions.NoSuchKey:
            return None
        async with answer["Body"] as body:
            data = await body.read()
        return data, answer.get("ContentType") or "application/octet-stream"

    async def head(self, key: str, size: int) -> bytes | None:
        if size <= 0:
            return b"" if await self.exists(key) else None
        s3 = await self._s3()
        try:
            answer = await s3.get_object(
                Bucket=self.bucket, Key=self._object(key), Range=f"bytes=0-{size - 1}"
            )
        except s3.exceptions.NoSuchKey:
            return None
        async with answer["Body"] as body:
            return bytes(await body.read())

    async def exists(self, key: str) -> bool:
        s3 = await self._s3()
        try:
            await s3.head_object(Bucket=self.bucket, Key=self._object(key))
        except s3.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    async def delete(self, key: str) -> bool:
        # S3's DELETE succeeds for a missing key too: ask first, to answer as the base says.
        if not await self.exists(key):
            return False
        s3 = await self._s3()
        await s3.delete_object(Bucket=self.bucket, Key=self._object(key))
        return True

    async def list_keys(self, prefix: str) -> list[str]:
        s3 = await self._s3()
        folder = self._object(prefix) + "/"
        keys: list[str] = []
        paginator = s3.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=folder):
            for item in page.get("Contents", []):
                keys.append(item["Key"][len(self.prefix) :])
        return sorted(keys)

    async def close(self) -> None:
        if self._context is not None:
            context, self._context, self._client = self._context, None, None
            await context.__aexit__(None, None, None)
