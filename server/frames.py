"""Writing text frames to an accepted socket, several at a time when several are ready.

A reply streamed with delta coalescing off is one event per token, and when the
model sends tokens faster than one loop turn (or a socket's follower fell
behind) several of them wait for the same socket at once. Written one ASGI
``send`` each, every frame costs a ``write`` syscall and a coroutine; a quarter
of the embedded server's CPU per delta was that syscall. :class:`FrameWriter`
frames a batch with the protocol's own websockets connection and hands the
bytes to the transport in one write, on uvicorn's ``websockets-sansio``
protocol (what ``salon serve`` runs). Everywhere else (another ASGI server,
Starlette's test client) it sends one ASGI message per frame, as before.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from websockets.exceptions import InvalidState

Send = Callable[[dict[str, Any]], Awaitable[None]]

MAX_FRAMES_PER_WRITE = 256


class SocketGone(Exception):
    """The socket is closed (or closing): nothing more can be written to it."""


class FrameWriter:
    """Sends text frames on one accepted socket (``send`` is the ASGI server's own)."""

    __slots__ = ("_protocol", "_send")

    def __init__(self, send: Send) -> None:
        self._send = send
        self._protocol = _sansio_protocol(send)

    async def write(self, texts: Sequence[str]) -> None:
        """Send ``texts`` as text frames, in order; raise :class:`SocketGone` if closed."""
        proto = self._protocol
        if proto is None or len(texts) <= 1:
            for text in texts:
                await self._send({"type": "websocket.send", "text": text})
            return
        for start in range(0, len(texts), MAX_FRAMES_PER_WRITE):
            # What uvicorn's send does for one frame, for each write: wait while
            # the client is slow to read (the transport is paused), refuse once
            # it is gone. A long backlog (a resume) goes in several writes, so a
            # slow reader holds back at most one write beyond the transport's limit.
            await proto.writable.wait()
            if proto.disconnected or proto.close_sent or not proto.handshake_complete:
                raise SocketGone()
            conn = proto.conn
            try:
                for text in texts[start : start + MAX_FRAMES_PER_WRITE]:
                    conn.send_text(text.encode())
            except InvalidState as exc:
                raise SocketGone() from exc
            proto.transport.write(b"".join(conn.data_to_send()))


def _sansio_protocol(send: Send) -> Any | None:
    """uvicorn's websockets-sansio protocol behind ``send``, or None for any other server."""
    try:
        from uvicorn.protocols.websockets.websockets_sansio_impl import (
            WebSocketsSansIOProtocol,
        )
    except ImportError:  # pragma: no cover - uvicorn is a core dependency
        return None
    owner = getattr(send, "__self__", None)
    if isinstance(owner, WebSocketsSansIOProtocol) and owner.initial_response is None:
        return owner
    return None
