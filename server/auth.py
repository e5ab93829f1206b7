"""Who is calling: tenant API keys and short-lived session tokens.

An API key is a trusted backend of its tenant: it may act for any user. A
session token is minted by ``POST /v1/sessions`` for one user (and optionally
one persona) and is what browsers and apps put in ``?token=``; it is signed
with HMAC-SHA256 under a key shared by replicas through the database, so any
replica can check it without a lookup. Keys and tokens are never logged.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from typing import Protocol

from memory.store import Store

TOKEN_PREFIX = "st1."
CONSOLE_TOKEN_PREFIX = "ot1."

# Operator roles, weakest first: viewer reads; moderator also takes over,
# resolves flags, decides comment replies and edits memories; admin does all.
ROLE_RANK = {"viewer": 1, "moderator": 2, "admin": 3}


@dataclass(frozen=True)
class Principal:
    tenant_id: str
    kind: str  # "api_key" | "session" | "operator" (a console token, server/console_auth.py)
    role: str = "admin"
    user_id: str | None = None  # session tokens: the only user this caller may be
    user_name: str | None = None
    persona: str | None = None  # session tokens: the only persona, if bound
    operator_id: str | None = None  # console tokens of an operator account
    name: str | None = None  # console tokens: who is signed in (for records such as takeovers)

    @property
    def is_session(self) -> bool:
        return self.kind == "session"

    def allows(self, role: str) -> bool:
        """Does this tenant principal hold ``role`` or a stronger one? (Never a session.)"""
        return not self.is_session and ROLE_RANK.get(self.role, 0) >= ROLE_RANK[role]

    @property
    def actor(self) -> str:
        """Who did it, for records: the operator's name, else the credential kind and role."""
        return self.name or f"{self.kind}:{self.role}"


class TokenError(Exception):
    pass


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionTokens:
    """Mint and verify session tokens: ``st1.<payload>.<signature>``."""

    def __init__(self, secret: str) -> None:
        self._key = hashlib.sha256(("salon-session:" + secret).encode()).digest()

    def mint(
        self,
        *,
        tenant_id: str,
        user_id: str,
        user_name: str | None,
        persona: str | None,
        ttl_seconds: int,
        now: float | None = None,
    ) -> tuple[str, int]:
        expires = int((time.time() if now is None else now) + ttl_seconds)
        payload = {"t": tenant_id, "u": user_id, "n": user_name, "p": persona, "e": expires}
        body = _b64(json.dumps(payload, separators=(",", ":")).encode())
        return f"{TOKEN_PREFIX}{body}.{self._sign(body)}", expires

    def verify(self, token: str, *, now: float | None = None) -> Principal:
        if not token.startswith(TOKEN_PREFIX):
            raise TokenError("not a session token")
        try:
            body, signature = token[len(TOKEN_PREFIX) :].split(".", 1)
        except ValueError as exc:
            raise TokenError("malformed session token") from exc
        # Bytes, not str: compare_digest refuses non-ASCII str with TypeError.
        if not hmac.compare_digest(signature.encode(), self._sign(body).encode()):
            raise TokenError("bad session token signature")
        try:
            payload = json.loads(_unb64(body))
        except ValueError as exc:
            raise TokenError("malformed session token") from exc
        if payload.get("e", 0) < (time.time() if now is None else now):
            raise TokenError("session token expired")
        return Principal(
            tenant_id=payload["t"],
            kind="session",
            role="user",
            user_id=payload["u"],
            user_name=payload.get("n"),
            persona=payload.get("p"),
        )

    def _sign(self, body: str) -> str:
        return _b64(hmac.new(self._key, body.encode(), hashlib.sha256).digest())


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


class ConsoleTokenVerifier(Protocol):
    async def verify(self, token: str) -> Principal | None: ...


async def authenticate(
    store: Store,
    tokens: SessionTokens,
    credential: str | None,
    *,
    allow_api_key: bool = True,
    console: ConsoleTokenVerifier | None = None,
) -> Principal | None:
    """The principal behind a bearer credential, or None.

    API keys and session tokens always; console tokens (``ot1.``) only where
    ``console`` is given: the HTTP API and the operator socket, not ``/v1/ws``.
    """
    if not credential:
        return None
    if credential.startswith(CONSOLE_TOKEN_PREFIX):
        return await console.verify(credential) if console is not None else None
    if credential.startswith(TOKEN_PREFIX):
        try:
            return tokens.verify(credential)
        except TokenError:
            return None
    if not allow_api_key:
        return None
    key = await store.find_api_key(credential)
    if key is None:
        return None
    return Principal(tenant_id=key.tenant_id, kind="api_key", role=key.role)
