"""Signed, expiring URLs for media files: anyone holding the URL may fetch it until it expires.

A client shows a generated image in an ``<img>`` tag or hands a video URL to
a player, neither of which can send an ``Authorization`` header, so a media
URL carries its own proof: ``?exp=<unix seconds>&sig=<hex>``, where ``sig``
is HMAC-SHA256 over the path and the expiry with a server secret. Verifying
takes constant time (``hmac.compare_digest``) and needs no database read.
Changing the secret revokes every URL at once.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from urllib.parse import urlencode


def signature(path: str, expires_at: int, secret: bytes) -> str:
    message = f"{path}\n{int(expires_at)}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def sign_url(path: str, secret: bytes, ttl_seconds: int, *, now: float | None = None) -> str:
    """``path?exp=...&sig=...``, valid for ``ttl_seconds`` from ``now``."""
    expires_at = int((time.time() if now is None else now) + ttl_seconds)
    query = urlencode({"exp": expires_at, "sig": signature(path, expires_at, secret)})
    return f"{path}?{query}"


def verify(
    path: str, exp: str | None, sig: str | None, secret: bytes, *, now: float | None = None
) -> bool:
    """Whether ``sig`` signs ``path`` until ``exp`` and ``exp`` has not passed."""
    if not exp or not sig or not exp.isdigit() or len(exp) > 12:
        return False
    if int(exp) < (time.time() if now is None else now):
        return False
    return hmac.compare_digest(signature(path, int(exp), secret), sig)
