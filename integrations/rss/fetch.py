"""Fetching a user-given feed URL safely: conditional GET with limits and SSRF checks.

Feed URLs come from API callers, so the server fetches on their behalf
whatever they name. This module refuses what a feed reader has no business
fetching (docs/feeds.md, "Security"):

- schemes other than http and https, at creation and at every redirect hop;
- hosts that resolve to loopback, private, link-local, multicast, reserved or
  otherwise non-global addresses (cloud metadata endpoints live there),
  unless ``allow_private`` is set;
- bodies over ``max_bytes`` once decoded (a gzip bomb stops at the cap) and
  fetches that take longer than ``timeout_seconds`` in all (a server that
  trickles bytes forever is cut off);
- more than ``max_redirects`` redirects; redirects are followed by hand so
  that each hop is checked like the first URL.

The address check resolves the name before connecting; a DNS server that
answers differently the second time (DNS rebinding) could still steer the
connection elsewhere. Deployments that need more put an egress proxy or a
network policy in front (docs/feeds.md).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import httpx

ALLOWED_SCHEMES = ("http", "https")
ACCEPT = (
    "application/rss+xml, application/atom+xml, application/rdf+xml, "
    "application/xml;q=0.9, text/xml;q=0.9, */*;q=0.5"
)


class FetchError(Exception):
    """A fetch that failed; the message is what operators see in ``last_error``."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class FetchResult:
    """What a fetch got: ``body`` is None on 304 Not Modified."""

    status: int
    url: str  # after redirects
    body: bytes | None
    content_type: str | None
    etag: str | None
    last_modified: str | None

    @property
    def not_modified(self) -> bool:
        return self.status == 304


def check_url(url: str, *, allow_private: bool) -> str:
    """Raise :class:`FetchError` for a URL that is never fetched; return it normalised.

    Only the syntax and literal addresses are checked here (no DNS): this is
    what the API runs when a feed is added. Names are resolved at fetch time.
    """
    if not isinstance(url, str) or not url.strip():
        raise FetchError("the URL is empty")
    url = url.strip()
    if len(url) > 2000:
        raise FetchError("the URL is longer than 2000 characters")
    try:
        parts = urlsplit(url)
        port = parts.port  # raises on a malformed port
    except ValueError as exc:
        raise FetchError(f"malformed URL: {exc}") from exc
    if parts.scheme.lower() not in ALLOWED_SCHEMES:
        raise FetchError(f"scheme {parts.scheme or '(none)'!r} is not allowed: use http or https")
    host = parts.hostname
    if not host:
        raise FetchError("the URL has no host")
    if parts.username or parts.password:
        raise FetchError("credentials in feed URLs are not supported")
    del port
    if not allow_private:
        if host.lower() in ("localhost", "localhost.localdomain") or host.lower().endswith(
            ".localhost"
        ):
            raise FetchError(f"host {host!r} is a local address (SALON_FEEDS_ALLOW_PRIVATE)")
        literal = _literal_ip(host)
        if literal is not None and not _is_public(literal):
            raise FetchError(f"address {host} is not public (SALON_FEEDS_ALLOW_PRIVATE)")
    return url


def _literal_ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _is_public(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    # An IPv4-mapped IPv6 address (::ffff:127.0.0.1) is judged as the IPv4 it maps.
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_global and not addr.is_multicast


async def _check_resolved(host: str, port: int) -> None:
    """Refuse a host any of whose addresses is not public (one bad record is enough)."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise FetchError(f"cannot resolve {host!r}: {exc.strerror or exc}") from exc
    for info in infos:
        addr = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if not _is_public(addr):
            raise FetchError(
                f"{host!r} resolves to {addr}, which is not public (SALON_FEEDS_ALLOW_PRIVATE)"
            )


class Fetcher:
    """One shared HTTP client; :meth:`fetch` does a conditional GET with every limit applied."""

    def __init__(
        self,
        *,
        allow_private: bool,
        timeout_seconds: float,
        max_bytes: int,
        max_redirects: int,
        user_agent: str,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.allow_private = allow_private
        self.timeout_seconds = timeout_seconds
        self.max_bytes = max_bytes
        self.max_redirects = max_redirects
        self._client = httpx.AsyncClient(
            follow_redirects=False,  # by hand, each hop checked
            timeout=httpx.Timeout(timeout_seconds),
            headers={"User-Agent": user_agent, "Accept": ACCEPT},
            transport=transport,
            # Proxies from the environment would see (and could bypass) our address checks.
            trust_env=False,
        )

    async def close(self) -> None:
        await self._client.aclose()

    async def fetch(
        self, url: str, *, etag: str | None = None, last_modified: str | None = None
    ) -> FetchResult:
        """GET ``url``; 304 when the validators still hold. Raises :class:`FetchError`."""
        try:
            async with asyncio.timeout(self.timeout_seconds):
                return await self._fetch(url, etag, last_modified)
        except TimeoutError as exc:
            raise FetchError(f"timed out after {self.timeout_seconds:g} s") from exc

    async def _fetch(self, url: str, etag: str | None, last_modified: str | None) -> FetchResult:
        headers: dict[str, str] = {}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        for _hop in range(self.max_redirects + 1):
            url = check_url(url, allow_private=self.allow_private)
            parts = urlsplit(url)
            if not self.allow_private:
                default_port = 443 if parts.scheme.lower() == "https" else 80
                await _check_resolved(parts.hostname or "", parts.port or default_port)
            try:
                async with self._client.stream("GET", url, headers=headers) as response:
                    if response.status_code in (301, 302, 303, 307, 308):
                        location = response.headers.get("location")
                        if not location:
                            raise FetchError(
                                f"HTTP {response.status_code} without a Location",
                                response.status_code,
                            )
                        url = urljoin(url, location)
                        continue
                    if response.status_code == 304:
                        return FetchResult(304, url, None, None, etag, last_modified)
                    if response.status_code >= 400 or response.status_code < 200:
                        raise FetchError(
                            f"HTTP {response.status_code} {response.reason_phrase}".strip(),
                            response.status_code,
                        )
                    body = await self._read_capped(response)
                    return FetchResult(
                        response.status_code,
                        url,
                        body,
                        response.headers.get("content-type"),
                        response.headers.get("etag"),
                        response.headers.get("last-modified"),
                    )
            except httpx.HTTPError as exc:
                raise FetchError(_describe(exc)) from exc
        raise FetchError(f"more than {self.max_redirects} redirects")

    async def _read_capped(self, response: httpx.Response) -> bytes:
        declared = response.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.max_bytes:
            raise FetchError(f"response is {declared} bytes, over the {self.max_bytes} byte limit")
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():  # decoded: the cap counts what we parse
            size += len(chunk)
            if size > self.max_bytes:
                raise FetchError(f"response is over the {self.max_bytes} byte limit")
            chunks.append(chunk)
        return b"".join(chunks)


def _describe(exc: httpx.HTTPError) -> str:
    kinds: dict[type[httpx.HTTPError], str] = {
        httpx.ConnectError: "connection failed",
        httpx.ConnectTimeout: "connection timed out",
        httpx.ReadTimeout: "read timed out",
        httpx.RemoteProtocolError: "protocol error",
        httpx.DecodingError: "could not decode the response",
    }
    kind = kinds.get(type(exc), type(exc).__name__)
    detail = str(exc).strip()
    return f"{kind}: {detail}" if detail else kind
