"""``salon chat``: a terminal client that streams tokens and survives dropped connections.

It remembers the last ``seq`` it printed; after a drop it reconnects with
backoff, sends ``session.start`` with ``resume_after`` and continues exactly
where it was. Messages not yet acknowledged are sent again with the same id,
which the server processes at most once.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import threading
import uuid
from typing import Any, TextIO

import websockets
from websockets.exceptions import InvalidStatus


def _stdin_lines(
    loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[str | None], stream: TextIO
) -> None:
    for line in stream:
        loop.call_soon_threadsafe(queue.put_nowait, line.rstrip("\n"))
    loop.call_soon_threadsafe(queue.put_nowait, None)


class ChatClient:
    def __init__(
        self,
        url: str,
        api_key: str,
        persona: str,
        user: str,
        conversation_id: str | None,
        out: TextIO,
    ) -> None:
        base = url.rstrip("/")
        self.ws_url = (
            "wss://" + base[8:]
            if base.startswith("https://")
            else "ws://" + base.split("://", 1)[-1]
        ) + "/v1/ws"
        self.api_key = api_key
        self.persona = persona
        self.user = user
        self.conversation_id = conversation_id
        self.last_seq: int | None = None
        self.pending: dict[str, str] = {}
        self.out = out
        self.persona_name = persona

    def _print(self, text: str, end: str = "\n") -> None:
        self.out.write(text + end)
        self.out.flush()

    def render(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        # session.ready's seq is the server's latest, not what this client has shown.
        if isinstance(event.get("seq"), int) and kind != "session.ready":
            self.last_seq = event["seq"]
        if kind == "session.ready":
            self.conversation_id = event["conversation_id"]
            self.persona_name = event.get("persona_slug", self.persona)
            if self.last_seq is None:
                self.last_seq = event["seq"]
        elif kind == "message.accepted":
            self.pending.pop(event.get("id", ""), None)
        elif kind == "response.created":
            self._print(f"{self.persona_name}: ", end="")
        elif kind == "response.text.delta":
            self._print(event["delta"], end="")
        elif kind == "response.done":
            self._print("")
        elif kind == "response.cancelled":
            self._print(" [cancelled]")
        elif kind == "error":
            self._print(f"\n[error {event.get('code')}: {event.get('message')}]")

    async def run(self, lines: asyncio.Queue[str | None]) -> int:
        backoff = 0.5
        while True:
            try:
                async with websockets.connect(
                    self.ws_url,
                    additional_headers={"Authorization": f"Bearer {self.api_key}"},
                    open_timeout=10,
                ) as ws:
                    start: dict[str, Any] = {
                        "type": "session.start",
                        "persona": self.persona,
                        "user": {"id": self.user},
                    }
                    if self.conversation_id:
                        start["conversation_id"] = self.conversation_id
                        if self.last_seq is not None:
                            start["resume_after"] = self.last_seq
                    await ws.send(json.dumps(start))
                    for cid, text in list(self.pending.items()):  # same id: processed at most once
                        await ws.send(
                            json.dumps({"type": "message.create", "id": cid, "text": text})
                        )
                    backoff = 0.5
                    code = await self._pump(ws, lines)
                    if code is not None:
                        return code
            except InvalidStatus as exc:
                status = exc.response.status_code
                if status in (401, 403):
                    self._print(f"[refused by server: HTTP {status}; check the API key]")
                    return 1
                self._print(f"[server answered HTTP {status}; retrying]")
            except (TimeoutError, OSError, websockets.ConnectionClosed) as exc:
                self._print(f"\n[connection lost ({type(exc).__name__}); reconnecting]")
            await asyncio.sleep(backoff + random.uniform(0, backoff / 2))
            backoff = min(backoff * 2, 8.0)

    async def _pump(self, ws: Any, lines: asyncio.Queue[str | None]) -> int | None:
        recv = asyncio.ensure_future(ws.recv())
        read = asyncio.ensure_future(lines.get())
        try:
            while True:
                done, _ = await asyncio.wait({recv, read}, return_when=asyncio.FIRST_COMPLETED)
                if recv in done:
                    event = json.loads(recv.result())
                    self.render(event)
                    if event.get("type") == "error" and event.get("code") == "unknown_persona":
                        return 1
                    recv = asyncio.ensure_future(ws.recv())
                if read in done:
                    line = read.result()
                    if line is None or line.strip() == "/quit":
                        return 0
                    read = asyncio.ensure_future(lines.get())
                    if line.strip() == "/cancel":
                        await ws.send(json.dumps({"type": "response.cancel"}))
                    elif line.strip():
                        cid = uuid.uuid4().hex
                        self.pending[cid] = line
                        await ws.send(
                            json.dumps({"type": "message.create", "id": cid, "text": line})
                        )
        finally:
            recv.cancel()
            if not read.done():
                read.cancel()


async def run_chat(
    url: str, api_key: str, persona: str, user: str, conversation_id: str | None
) -> int:
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str | None] = asyncio.Queue()
    threading.Thread(target=_stdin_lines, args=(loop, lines, sys.stdin), daemon=True).start()
    client = ChatClient(url, api_key, persona, user, conversation_id, sys.stdout)
    print(
        f"salon chat with {persona} (type /cancel to stop a reply, /quit to leave)", file=sys.stderr
    )
    try:
        return await client.run(lines)
    except (KeyboardInterrupt, asyncio.CancelledError):
        return 0
