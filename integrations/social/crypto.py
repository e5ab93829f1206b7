"""Platform credentials and app secrets at rest: Fernet (AES-128-CBC + HMAC-SHA256).

``cryptography``'s Fernet authenticates what it decrypts, so a tampered or
foreign value is an error, never garbage. The key is
``SALON_SOCIAL_CREDENTIALS_KEY`` (a Fernet key from a secret store, in
production); unset, one is generated once and kept in the database's server
secrets, which protects a leaked backup of the social tables alone but not a
leaked database: documented in docs/integrations.md.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from cryptography.fernet import Fernet, InvalidToken


class CredentialsError(Exception):
    """Stored credentials that cannot be read with this key."""


class Vault:
    """Encrypts JSON objects to text and back."""

    def __init__(self, key: str | bytes) -> None:
        raw = key.encode() if isinstance(key, str) else key
        try:
            self._fernet = Fernet(raw)
        except ValueError:
            # Not a Fernet key: derive one (lets a passphrase-like secret work too).
            self._fernet = Fernet(base64.urlsafe_b64encode(hashlib.sha256(raw).digest()))

    def seal(self, value: dict[str, Any]) -> str:
        if not value:
            return ""
        return self._fernet.encrypt(json.dumps(value).encode()).decode()

    def open(self, token: str) -> dict[str, Any]:
        if not token:
            return {}
        try:
            data = json.loads(self._fernet.decrypt(token.encode()))
        except (InvalidToken, ValueError) as exc:
            raise CredentialsError(
                "stored credentials cannot be decrypted (was SALON_SOCIAL_CREDENTIALS_KEY changed?)"
            ) from exc
        if not isinstance(data, dict):
            raise CredentialsError("stored credentials are not an object")
        return data
