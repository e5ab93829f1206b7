"""Signing in to the operator console: operator passwords and console tokens.

Operators sign in with an email and a password (an operator account, one
tenant, one role) or with a tenant API key. Either way they get a console
token, ``ot1.<payload>.<signature>`` (HMAC-SHA256 under a key shared by the
replicas through the database, like session tokens), which the console sends
as ``Authorization: Bearer`` and as ``?token=`` on the operator socket
(browsers cannot set headers on a WebSocket, and an API key must never sit in
a URL). Each use re-reads the account or key, so disabling an operator,
changing their role or password, or revoking the key takes effect at once,
not at expiry.

Passwords are hashed with scrypt (hashlib, N=2^14, r=8, p=1, 16-byte salt),
in a worker thread so a sign-in does not stall the event loop.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import time
from dataclasses import dataclass
from typing import Any

from memory.console_store import ConsoleStore, OperatorRecord
from memory.store import Store
from server.auth import CONSOLE_TOKEN_PREFIX, Principal

_N, _R, _P = 2**14, 8, 1
MIN_PASSWORD = 10
MAX_PASSWORD = 1024


@dataclass(frozen=True)
class Login:
    """A successful sign-in: who, the console token and its expiry, the account if any."""

    principal: Principal
    token: str
    expires_at: int
    operator: OperatorRecord | None = None


class LoginError(Exception):
    """Wrong email, password or key; or a disabled account (the same answer for each)."""


def hash_password(password: str) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return f"scrypt${_N}${_R}${_P}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        got = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)


# Checked when the email is unknown, so an unknown email costs what a wrong password does.
_DUMMY_HASH = hash_password("not a real password, only for timing")


def _password_stamp(record: OperatorRecord) -> str:
    """Changes with the password, so a new password ends the tokens issued before it."""
    return hashlib.sha256(record.password_hash.encode()).hexdigest()[:16]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class ConsoleAuth:
    """Sign-in and console-token checks (the ``console`` of :func:`server.auth.authenticate`)."""

    def __init__(self, store: Store, secret: str, *, ttl_seconds: int) -> None:
        self.store = store
        self.operators = ConsoleStore(store)
        self.ttl_seconds = ttl_seconds
        self._key = hashlib.sha256(("salon-console:" + secret).encode()).digest()
        # scrypt runs in the shared thread pool: a flood of sign-ins waits here
        # instead of taking every worker thread (16 MiB of memory each, too).
        self._checks = asyncio.Semaphore(4)

    # -- sign-in --------------------------------------------------------------

    async def login_password(self, email: str, password: str) -> Login:
        if len(password) > MAX_PASSWORD:
            raise LoginError
        record = await self.operators.find_operator_by_email(email)
        stored = record.password_hash if record is not None else _DUMMY_HASH
        async with self._checks:
            ok = await asyncio.to_thread(verify_password, password, stored)
        if record is None or not ok or record.disabled:
            raise LoginError
        principal = self._operator_principal(record)
        return Login(principal, *self.mint(principal, record), operator=record)

    async def login_api_key(self, api_key: str) -> Login:
        key = await self.store.find_api_key(api_key)
        if key is None:
            raise LoginError
        principal = Principal(
            tenant_id=key.tenant_id, kind="api_key", role=key.role, name=f"key {key.prefix}…"
        )
        payload = {"t": key.tenant_id, "k": "api_key", "i": key.id, "n": principal.name}
        return Login(principal, *self._sign_payload(payload))

    def mint(self, principal: Principal, record: OperatorRecord) -> tuple[str, int]:
        payload = {
            "t": principal.tenant_id,
            "k": "operator",
            "i": principal.operator_id,
            "v": _password_stamp(record),
        }
        return self._sign_payload(payload)

    def _sign_payload(self, payload: dict[str, Any]) -> tuple[str, int]:
        expires = int(time.time() + self.ttl_seconds)
        body = _b64(json.dumps({**payload, "e": expires}, separators=(",", ":")).encode())
        return f"{CONSOLE_TOKEN_PREFIX}{body}.{self._sign(body)}", expires

    def _sign(self, body: str) -> str:
        return _b64(hmac.new(self._key, body.encode(), hashlib.sha256).digest())

    # -- verification ---------------------------------------------------------

    async def verify(self, token: str) -> Principal | None:
        """The principal behind a console token, as its account or key is now; or None."""
        try:
            body, signature = token[len(CONSOLE_TOKEN_PREFIX) :].split(".", 1)
            if not hmac.compare_digest(signature.encode(), self._sign(body).encode()):
                return None
            payload = json.loads(_unb64(body))
            tenant, kind, ident = payload["t"], payload["k"], payload["i"]
            if int(payload["e"]) < time.time():
                return None
        except (ValueError, KeyError, TypeError):
            return None
        if kind == "operator":
            record = await self.operators.get_operator(tenant, ident)
            if record is None or record.disabled:
                return None
            if not hmac.compare_digest(str(payload.get("v", "")), _password_stamp(record)):
                return None  # the password changed since: sign in again
            return self._operator_principal(record)
        if kind == "api_key":
            role = await self.operators.api_key_role(tenant, ident)
            if role is None:
                return None
            return Principal(tenant_id=tenant, kind="api_key", role=role, name=payload.get("n"))
        return None

    @staticmethod
    def _operator_principal(record: OperatorRecord) -> Principal:
        return Principal(
            tenant_id=record.tenant_id,
            kind="operator",
            role=record.role,
            operator_id=record.id,
            name=record.name,
        )
