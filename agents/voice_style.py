"""How each sentence of a spoken reply is said: its emotion, the reply's language, who speaks it.

- **Emotion.** Unless the persona's voice fixes one (or ``SALON_VOICE_EMOTION``
  is ``off``), each sentence gets an emotion from its sentiment: VADER's
  compound score, and NRC's emotion words to tell anger from sadness
  (:func:`emotion_of`, with the analysis package's lexicons). Providers map
  it to what they can control (media/tts/*: ``EMOTION_*`` tables).
- **Language.** A persona's voice ``language`` wins. Otherwise the reply's
  language is detected (py3langid, agents/analysis/language.py) once enough
  text is in (:data:`MIN_LANGUAGE_LETTERS`), and then kept for the reply, so a
  short "Ok!" cannot flip it.
- **Who speaks.** The configured provider, unless it cannot speak that
  language (its ``capabilities.languages``: the bundled Piper voice is
  English only); then the fallback provider (``SALON_VOICE_LANGUAGE_FALLBACK``,
  espeak-ng by default) speaks it, with its voice for that language.

docs/voice.md ("Emotion", "Language") has the tables.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import structlog

from media.tts.base import TTSProvider, VoiceSettings, primary_language
from media.voice_config import VoiceConfig

log = structlog.get_logger(__name__)

# Fewer letters than this do not decide a reply's language: "Hallo Anna," or
# "Ok!" are too short for a reliable guess (py3langid also needs confidence).
MIN_LANGUAGE_LETTERS = 20
# Past this much text without a confident answer, stop trying for this reply.
MAX_LANGUAGE_LETTERS = 400

TTSFactory = Callable[[], Awaitable[TTSProvider]]
OptionalTTSFactory = Callable[[], Awaitable[TTSProvider | None]]

_lexicons: Any = None  # agents.analysis.lexicon.LexiconAnalyzer, loaded
_load_lock = threading.Lock()
_load_failed = False


def _load() -> None:
    global _lexicons, _load_failed
    with _load_lock:
        if _lexicons is not None or _load_failed:
            return
        try:
            from agents.analysis.language import warm_up
            from agents.analysis.lexicon import LexiconAnalyzer

            analyzer = LexiconAnalyzer()
            analyzer.start()  # VADER and NRC lexicons
            warm_up()  # py3langid's model
            _lexicons = analyzer
        except Exception as exc:  # a broken install: speak without style
            _load_failed = True
            log.warning("voice_style_unavailable", error=repr(exc))


async def warm_up() -> None:
    """Load the lexicons and the language model (~1-2 s of CPU, once per process) off the loop."""
    if _lexicons is None and not _load_failed:
        await asyncio.to_thread(_load)


def emotion_of(text: str) -> str | None:
    """The emotion to speak ``text`` with (media.tts.base.EMOTIONS); None before :func:`warm_up`.

    Thresholds on VADER's compound score (-1..1): at least 0.5 with an
    exclamation mark is ``excited``, at least 0.3 ``cheerful``; at most -0.3
    is ``angry`` when NRC finds more anger/disgust than sadness/fear words,
    else ``sad``; anything milder is ``neutral``. English lexicons: other
    languages come out mostly neutral.
    """
    analyzer = _lexicons
    if analyzer is None:
        return None
    compound = analyzer.sentiment(text).compound
    if compound >= 0.5 and "!" in text:
        return "excited"
    if compound >= 0.3:
        return "cheerful"
    if compound <= -0.3:
        shares = analyzer.emotions(text)
        hostile = shares.get("anger", 0.0) + shares.get("disgust", 0.0)
        hurt = shares.get("sadness", 0.0) + shares.get("fear", 0.0)
        return "angry" if hostile > hurt else "sad"
    return "neutral"


def detect_language(text: str) -> str | None:
    """The language of ``text`` when it is long and clear enough (else None)."""
    if _lexicons is None or sum(c.isalpha() for c in text) < MIN_LANGUAGE_LETTERS:
        return None
    from agents.analysis.language import detect_language as detect

    return detect(text)


@dataclass(frozen=True)
class StyleSettings:
    """What may vary per sentence (from :class:`~media.voice_config.VoiceConfig`)."""

    emotion: bool = True  # SALON_VOICE_EMOTION=auto
    detect_language: bool = True  # SALON_VOICE_DETECT_LANGUAGE

    @classmethod
    def from_config(cls, config: VoiceConfig) -> StyleSettings:
        return cls(
            emotion=config.voice_emotion.strip().lower() != "off",
            detect_language=config.voice_detect_language,
        )


class CachedTTS:
    """A provider built and started on first use, then kept; None if it cannot be built.

    For the language fallback: a failure (espeak-ng missing) is logged once
    and remembered, so every sentence does not try again.
    """

    def __init__(self, build: Callable[[], TTSProvider]) -> None:
        self._build = build
        self._provider: TTSProvider | None = None
        self._failed = False
        self._lock = asyncio.Lock()

    async def __call__(self) -> TTSProvider | None:
        if self._provider is None and not self._failed:
            async with self._lock:
                if self._provider is None and not self._failed:
                    try:
                        provider = self._build()
                        await provider.start()
                        self._provider = provider
                    except Exception as exc:
                        self._failed = True
                        log.warning("voice_fallback_unavailable", error=repr(exc))
        return self._provider

    async def close(self) -> None:
        provider, self._provider = self._provider, None
        if provider is not None:
            await provider.close()


def fallback_from_config(config: VoiceConfig) -> CachedTTS | None:
    """The ``SALON_VOICE_LANGUAGE_FALLBACK`` provider, built on first use (None: no fallback)."""
    name = config.voice_language_fallback.strip().lower()
    if not name:
        return None

    def build() -> TTSProvider:
        from media.tts.registry import create_tts

        # The main provider's voice id means nothing to the fallback: it picks
        # its voice by language.
        return create_tts(config.model_copy(update={"tts_provider": name, "tts_voice": None}))

    return CachedTTS(build)


class ReplyStyle:
    """Chooses, sentence by sentence, who speaks one reply and how (a ``SentencePlan``).

    ``voice`` is the persona's resolved voice; ``fixed`` names the fields the
    persona set itself (``"language"``, ``"emotion"``), which are never
    overridden. ``spoken_by`` records (provider name, language) per sentence.
    """

    def __init__(
        self,
        main: TTSProvider,
        voice: VoiceSettings,
        *,
        settings: StyleSettings | None = None,
        fixed: frozenset[str] = frozenset(),
        fallback: OptionalTTSFactory | None = None,
    ) -> None:
        self.main = main
        self.voice = voice
        self.settings = settings or StyleSettings()
        self.fixed = fixed
        self._fallback = fallback
        # A language the persona fixed is decided from the start; so is "no detection".
        self.language: str | None = voice.language
        self._decided = "language" in fixed or not self.settings.detect_language
        self.spoken_by: list[tuple[str, str | None]] = []

    def _decide(self, received: str) -> None:
        if self._decided:
            return
        if sum(c.isalpha() for c in received) > MAX_LANGUAGE_LETTERS:
            self._decided = True  # no clear answer: keep the configured language
            return
        detected = detect_language(received)
        if detected is None:
            return
        self._decided = True
        configured = self.voice.language
        if configured is None or primary_language(configured) != primary_language(detected):
            self.language = detected

    async def __call__(
        self, index: int, text: str, received: str
    ) -> tuple[TTSProvider, VoiceSettings]:
        self._decide(received or text)
        tts, voice = self.main, self.voice
        if self.language != voice.language:
            voice = replace(voice, language=self.language)
        if self.language and not tts.capabilities.speaks(self.language):
            fallback = await self._fallback() if self._fallback is not None else None
            if fallback is not None and fallback.capabilities.speaks(self.language):
                # Its own voice for the language: the main voice's id and
                # reference recording belong to the main provider.
                tts = fallback
                voice = replace(voice, voice=None, reference_audio=None, extra={})
        if self.settings.emotion and "emotion" not in self.fixed and tts.capabilities.emotion:
            emotion = emotion_of(text)
            if emotion is not None:
                voice = replace(voice, emotion=emotion)
        self.spoken_by.append((tts.name, voice.language))
        return tts, voice
