"""Language identification with py3langid (a naive Bayes model inside the wheel, offline).

Shared by every analyzer: the transformer models replace the lexicons, not
this. Short or ambiguous texts ("ok", "lol", an emoji) are left undetermined
(None) rather than guessed: below :data:`MIN_LETTERS` letters, or when the
model's normalized confidence is below :data:`MIN_CONFIDENCE`.
"""

from __future__ import annotations

import threading
from typing import Any

MIN_LETTERS = 3
MIN_CONFIDENCE = 0.5

_lock = threading.Lock()
_identifier: Any = None


def _load() -> Any:
    global _identifier
    with _lock:  # the model (a 4.5 MB xz file) is loaded once per process
        if _identifier is None:
            from py3langid.langid import MODEL_FILE, LanguageIdentifier

            _identifier = LanguageIdentifier.from_model_file(
                MODEL_FILE, norm_probs=True, min_confidence=MIN_CONFIDENCE
            )
    return _identifier


def detect_language(text: str) -> str | None:
    """The ISO 639-1 code of ``text``'s language, or None when it cannot be told."""
    if sum(1 for ch in text if ch.isalpha()) < MIN_LETTERS:
        return None
    identifier = _identifier if _identifier is not None else _load()
    language, _ = identifier.classify(text)
    return None if language == "und" else str(language)


def warm_up() -> None:
    """Load the model now (it is loaded on first use otherwise)."""
    _load()
