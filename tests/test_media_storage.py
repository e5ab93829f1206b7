"""Media storage contract, on local files and on S3 (moto's S3 server on loopback).

moto's server speaks S3's real HTTP API, so the aioboto3 client, signing and
XML parsing all run as against AWS or MinIO. Plus content addressing and
signed URLs, which sit on top of any storage.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from media.content_store import content_key, put_content
from media.signed_urls import sign_url, verify
from media.storage import InvalidKey, LocalMediaStorage, MediaStorage, create_media_storage


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


async def _bucket(endpoint: str) -> str:
    import aioboto3

    name = f"salon-{uuid.uuid4().hex[:12]}"
    async with aioboto3.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    ) as s3:
        await s3.create_bucket(Bucket=name)
    return name


@pytest.fixture(params=["local", "s3"])
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MediaStorage]:
    if request.param == "local":
        store: MediaStorage = create_media_storage("local", root=tmp_path / "media")
    else:
        endpoint = request.getfixturevalue("s3_endpoint")
        store = create_media_storage(
            "s3",
            root=tmp_path,
            bucket=await _bucket(endpoint),
            prefix="tenant-files",
            endpoint_url=endpoint,
            region="us-east-1",
            access_key_id="test",
            secret_access_key="test",
        )
    try:
        yield store
    finally:
        await store.close()


async def test_put_open_head_exists_delete(storage: MediaStorage) -> None:
    data = bytes(range(256)) * 10
    assert await storage.put("images/a/one.png", data, "image/png") == "images/a/one.png"

    assert await storage.open("images/a/one.png") == (data, "image/png")
    assert await storage.head("images/a/one.png", 4) == data[:4]
    assert await storage.exists("images/a/one.png")
    assert not await storage.exists("images/a/two.png")
    assert await storage.open("images/a/two.png") is None
    assert await storage.head("images/a/two.png", 4) is None

    await storage.put("images/a/one.png", b"new", "image/webp")  # replaced whole
    assert await storage.open("images/a/one.png") == (b"new", "image/webp")
    assert await storage.delete("images/a/one.png") is True
    assert await storage.delete("images/a/one.png") is False
    assert await storage.open("images/a/one.png") is None


async def test_list_keys_of_a_folder(storage: MediaStorage) -> None:
    for key in ("exports/t1/c1/a.json", "exports/t1/c2/b.json", "exports/t2/c.json", "other/x"):
        await storage.put(key, b"{}", "application/json")

    assert await storage.list_keys("exports/t1") == ["exports/t1/c1/a.json", "exports/t1/c2/b.json"]
    assert await storage.list_keys("exports") == [
        "exports/t1/c1/a.json",
        "exports/t1/c2/b.json",
        "exports/t2/c.json",
    ]
    assert await storage.list_keys("nothing") == []


@pytest.mark.parametrize("key", ["../escape", "/abs", "a//b", ".hidden/x", "a/../../b", ""])
async def test_unsafe_keys_are_refused(storage: MediaStorage, key: str) -> None:
    with pytest.raises(InvalidKey):
        await storage.put(key, b"x", "text/plain")


async def test_bad_mime_is_refused(storage: MediaStorage) -> None:
    with pytest.raises(ValueError, match="mime"):
        await storage.put("a.bin", b"x", "not a mime\r\nX-Injected: 1")


async def test_content_is_stored_once_under_its_hash(storage: MediaStorage) -> None:
    first = await put_content(storage, b"\x89PNG same bytes", "image/png")
    second = await put_content(storage, b"\x89PNG same bytes", "image/png")
    other = await put_content(storage, b"\x89PNG other bytes", "image/png")

    assert first == second and first.size == len(b"\x89PNG same bytes")
    assert first.key == content_key(first.sha256, "image/png")
    assert first.key.startswith(f"cas/{first.sha256[:2]}/") and first.key.endswith(".png")
    assert other.key != first.key
    assert await storage.open(first.key) == (b"\x89PNG same bytes", "image/png")
    assert sorted(await storage.list_keys("cas")) == sorted({first.key, other.key})


def test_s3_without_a_bucket_says_what_to_set(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="SALON_MEDIA_S3_BUCKET"):
        create_media_storage("s3", root=tmp_path)
    with pytest.raises(ValueError, match="local or s3"):
        create_media_storage("ftp", root=tmp_path)
    assert isinstance(create_media_storage("local", root=tmp_path), LocalMediaStorage)


# -- signed URLs ------------------------------------------------------------------


def test_signed_urls_verify_until_they_expire() -> None:
    secret = b"k" * 32
    url = sign_url("/v1/media/files/ten_1/med_1", secret, 60, now=1000.0)
    path, query = url.split("?")
    params: dict[str, Any] = dict(p.split("=") for p in query.split("&"))

    assert path == "/v1/media/files/ten_1/med_1" and params["exp"] == "1060"
    assert verify(path, params["exp"], params["sig"], secret, now=1059.0)
    assert not verify(path, params["exp"], params["sig"], secret, now=1061.0)  # expired
    assert not verify(path, params["exp"], params["sig"], b"x" * 32, now=1000.0)  # other secret
    assert not verify(
        "/v1/media/files/ten_2/med_1", params["exp"], params["sig"], secret, now=1000.0
    )
    assert not verify(path, "1999999999", params["sig"], secret, now=1000.0)  # extended expiry
    assert not verify(path, None, params["sig"], secret, now=1000.0)
    assert not verify(path, "soon", params["sig"], secret, now=1000.0)
    assert not verify(path, params["exp"], "", secret, now=1000.0)
