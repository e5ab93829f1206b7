"""A minimal, cheap WebSocket client (RFC 6455) on a raw asyncio protocol.

The load generator must cost as little CPU as possible: on a 2-core machine
every cycle it spends is taken from the server under test. This client does
the handshake itself, parses server frames in ``data_received`` and hands each
complete message (bytes, not decoded) to a callback together with the
``time.monotonic()`` of the read that completed it. It masks what it sends
(``websockets.speedups.apply_mask``), answers pings, and can offer
``permessage-deflate`` the way browsers do (then it inflates compressed
messages; it never compresses its own). The same client drives Salon and the
bare ``websockets`` baselines, so both pay the same client cost.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
import time
import zlib
from collections.abc import Callable

from websockets.speedups import apply_mask

OnMessage = Callable[["WSConn", bytes, float], None]
SYNC_TAIL = b"\x00\x00\xff\xff"


class HandshakeError(Exception):
    pass


class WSConn(asyncio.Protocol):
    def __init__(self, on_message: OnMessage | None = None) -> None:
        self.on_message = on_message
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.buf = b""
        self.is_open = False
        self.inflater: zlib._Decompress | None = None
        self.fragments: list[bytes] = []
        self.fragment_compressed = False
        self.state: object = None  # free slot for the load generator

    # -- transport callbacks ---------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.is_open = False
        if not self.opened.done():
            self.opened.set_exception(HandshakeError(f"connection lost: {exc!r}"))
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        buf = self.buf + data if self.buf else data
        if not self.is_open:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buf = buf
                return
            self._handshake_done(buf[:end])
            buf = buf[end + 4 :]
            if not self.is_open:
                return
        pos, size = 0, len(buf)
        while size - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            length, header = b1 & 0x7F, 2
            if length == 126:
                if size - pos < 4:
                    break
                length, header = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
            elif length == 127:
                if size - pos < 10:
                    break
                length, header = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
            if size - pos < header + length:
                break
            payload = buf[pos + header : pos + header + length]
            pos += header + length
            opcode = b0 & 0x0F
            if opcode in (1, 2):
                if b0 & 0x80:
                    self._deliver(payload, bool(b0 & 0x40), now)
                else:
                    self.fragments, self.fragment_compressed = [payload], bool(b0 & 0x40)
            elif opcode == 0:
                self.fragments.append(payload)
                if b0 & 0x80:
                    whole, self.fragments = b"".join(self.fragments), []
                    self._deliver(whole, self.fragment_compressed, now)
            elif opcode == 9:
                self._send_frame(0xA, payload)
            elif opcode == 8:
                self._send_frame(0x8, payload[:2])
                self.is_open = False
                if self.transport is not None:
                    self.transport.close()
                break
        self.buf = buf[pos:]

    def _deliver(self, payload: bytes, compressed: bool, now: float) -> None:
        if compressed:
            if self.inflater is None:
                raise HandshakeError("compressed frame without permessage-deflate")
            payload = self.inflater.decompress(payload + SYNC_TAIL)
        if self.on_message is not None:
            self.on_message(self, payload, now)

    def _handshake_done(self, head: bytes) -> None:
        status_line, _, rest = head.partition(b"\r\n")
        if b" 101 " not in status_line + b" ":
            if not self.opened.done():
                self.opened.set_exception(HandshakeError(status_line.decode(errors="replace")))
            if self.transport is not None:
                self.transport.close()
            return
        if b"permessage-deflate" in rest.lower():
            self.inflater = zlib.decompressobj(wbits=-15)
        self.is_open = True
        if not self.opened.done():
            self.opened.set_result(None)

    # -- sending -----------------------------------------------------------------

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        length = len(payload)
        if length < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
        elif length < 65536:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
        mask = os.urandom(4)
        self.transport.write(header + mask + apply_mask(payload, mask))

    def send_text(self, payload: bytes) -> None:
        self._send_frame(0x1, payload)

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self._send_frame(0x8, struct.pack("!H", 1000))
            self.transport.close()


async def connect(
    host: str,
    port: int,
    path: str = "/",
    *,
    headers: dict[str, str] | None = None,
    deflate: bool = False,
    on_message: OnMessage | None = None,
    timeout: float = 30.0,
) -> WSConn:
    """Open a WebSocket; raises :class:`HandshakeError` if the upgrade is refused."""
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(lambda: WSConn(on_message), host, port)
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    if deflate:
        lines.append("Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits")
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    assert conn.transport is not None
    conn.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    try:
        await asyncio.wait_for(asyncio.shield(conn.opened), timeout)
    except BaseException:
        conn.transport.close()
        raise
    return conn


def event_type(payload: bytes) -> bytes:
    """The ``type`` of a server event without decoding the JSON (it is the first key)."""
    start = payload.find(b'"type":"')
    if start < 0:
        return b""
    start += 8
    return payload[start : payload.find(b'"', start)]
