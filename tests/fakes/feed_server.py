"""A small real HTTP server on loopback that serves feeds, for the feeds tests.

Documents are registered by path (:meth:`FeedServer.put`) or served from
tests/fakes/feeds/. Every document gets an ETag (a hash of its bytes) and a
Last-Modified; a request whose ``If-None-Match`` or ``If-Modified-Since``
still holds gets 304, as a real feed host answers a conditional GET.
Special paths:

- ``/status/<code>``: answers that status (``/status/500``);
- ``/redirect?to=<url>``: 302 to ``to`` (e.g. a ``file:`` URL);
- ``/huge``: a feed-looking body larger than any sane cap;
- ``/slow``: starts a feed, then trickles bytes for a long time.

Every request is kept in ``requests`` (path and headers) for assertions.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.fakes.loopback import LoopbackServer

FIXTURES = Path(__file__).parent / "feeds"


@dataclass
class Doc:
    body: bytes
    content_type: str
    last_modified: datetime

    @property
    def etag(self) -> str:
        return '"' + hashlib.sha256(self.body).hexdigest()[:16] + '"'


def rss(items: list[dict[str, Any]], *, title: str = "Fixture News") -> bytes:
    """An RSS 2.0 document; each item has title, and optionally link, guid, description, date."""
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<rss version="2.0"><channel>',
        f"<title>{escape(title)}</title><link>http://example.test/</link>",
        "<description>fixture</description>",
    ]
    for item in items:
        parts.append("<item>")
        parts.append(f"<title>{escape(item['title'])}</title>")
        if item.get("link"):
            parts.append(f"<link>{escape(item['link'])}</link>")
        if item.get("guid"):
            parts.append(f'<guid isPermaLink="false">{escape(item["guid"])}</guid>')
        if item.get("description"):
            parts.append(f"<description>{escape(item['description'])}</description>")
        date = item.get("date")
        if isinstance(date, datetime):
            parts.append(f"<pubDate>{format_datetime(date, usegmt=True)}</pubDate>")
        parts.append("</item>")
    parts.append("</channel></rss>")
    return "\n".join(parts).encode()


class FeedServer(LoopbackServer):
    def __init__(self) -> None:
        self.docs: dict[str, Doc] = {}
        self.requests: list[dict[str, Any]] = []
        super().__init__(Starlette(routes=[Route("/{path:path}", self._serve, methods=["GET"])]))

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}"

    def put(self, path: str, body: bytes | str, content_type: str = "application/rss+xml") -> str:
        """Serve ``body`` at ``path`` from now on (a new version: new ETag, Last-Modified now)."""
        data = body.encode() if isinstance(body, str) else body
        # Last-Modified has one-second resolution: make each version strictly newer.
        now = datetime.now(UTC).replace(microsecond=0)
        old = self.docs.get(path.lstrip("/"))
        if old is not None and now <= old.last_modified:
            now = old.last_modified + timedelta(seconds=1)
        self.docs[path.lstrip("/")] = Doc(data, content_type, now)
        return self.url(path)

    def put_fixture(self, name: str, content_type: str = "application/rss+xml") -> str:
        return self.put(name, (FIXTURES / name).read_bytes(), content_type)

    def hits(self, path: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["path"] == path.lstrip("/")]

    async def _serve(self, request: Request) -> Response:
        path = request.path_params["path"]
        self.requests.append({"path": path, "headers": dict(request.headers)})
        if path.startswith("status/"):
            return Response("error page", int(path.split("/", 1)[1]), media_type="text/html")
        if path == "redirect":
            return RedirectResponse(request.query_params["to"], 302)
        if path == "huge":
            return Response(b"<rss><channel>" + b"x" * (8 * 1024 * 1024), media_type="text/xml")
        if path == "slow":

            async def trickle() -> Any:
                yield b"<rss><channel><title>slow</title>"
                for _ in range(600):
                    await asyncio.sleep(0.1)
                    yield b" "

            return StreamingResponse(trickle(), media_type="text/xml")
        doc = self.docs.get(path)
        if doc is None:
            return Response("not found", 404)
        headers = {
            "ETag": doc.etag,
            "Last-Modified": format_datetime(doc.last_modified, usegmt=True),
        }
        inm = request.headers.get("if-none-match")
        ims = request.headers.get("if-modified-since")
        if inm is not None:
            if doc.etag in [t.strip() for t in inm.split(",")]:
                return Response(status_code=304, headers=headers)
        elif ims is not None and ims == headers["Last-Modified"]:
            return Response(status_code=304, headers=headers)
        return Response(doc.body, media_type=doc.content_type, headers=headers)
