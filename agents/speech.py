"""Speaking a streamed reply: sentence segmentation and a socket-free TTS pipeline.

An LLM reply arrives as small text deltas; TTS engines want whole sentences
(prosody needs them) and the listener wants the first sound early. So:

- :class:`SentenceSegmenter` cuts complete sentences out of the deltas as soon
  as a boundary is certain, without splitting "Dr. Smith", "3.14", "e.g. this",
  an ellipsis that continues the sentence, or a URL; CJK full stops cut at
  once; ``flush`` gives the tail when the reply ends.
- :class:`SpeechStream` turns an async iterator of deltas into audio chunks in
  order, synthesizing sentence N+1 while sentence N is being consumed, and
  stops at once on :meth:`SpeechStream.cancel` (barge-in). It records when
  each sentence starts in the audio, so the caller can tell which text the
  listener actually heard (:meth:`SpeechStream.spoken_text`) and store that
  as the reply instead of what was generated.

No sockets here: the WebSocket layer pumps :class:`SpeechChunk` values out as
``response.audio.delta`` events.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import unicodedata
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from media.audio import AudioChunk, resample
from media.tts.base import TTSProvider, VoiceSettings, first_audio

# (sentence index, its speakable text, all text received so far) -> who speaks it, how.
SentencePlan = Callable[[int, str, str], Awaitable[tuple[TTSProvider, VoiceSettings]]]

# Words that end with a period without ending a sentence (compared lowercased,
# without the final period). Single letters (initials: "J. R. R.") are handled apart.
ABBREVIATIONS = frozenset(
    """
    mr mrs ms mx dr prof sr jr st mt ft vs etc e.g i.e cf al approx appt apt dept est
    fig inc ltd co corp no nos vol pp op ed eds rev gen col capt lt sgt cmdr gov sen rep
    jan feb mar apr jun jul aug sep sept oct nov dec mon tue wed thu fri sat sun
    a.m p.m u.s u.k u.n ph.d b.a m.a d.c
    """.split()
)
TERMINATORS = ".!?…"
# CJK full stop, fullwidth exclamation and question marks, halfwidth full stop.
CJK_TERMINATORS = "\u3002\uff01\uff1f\uff61"
# Characters that belong to the sentence they follow: closing quotes and brackets.
# Curly quotes, guillemet, CJK corner/fullwidth brackets.
CLOSERS = "\"')]}\u201d\u2019\u00bb\u300d\u300f\uff09\u3011\u3015"
CLAUSE_BREAK = re.compile(r"[,;:\u2014\u2013\u3001\uff0c]\s")


class SentenceSegmenter:
    """Cut sentences out of streamed text; see the module docstring.

    ``push`` returns the sentences that a delta completed (with their leading
    whitespace, so joining them gives back the text); ``flush`` returns what is
    left. A sentence longer than ``max_chars`` with no boundary in sight is cut
    at a clause break (comma, semicolon, dash) or a space, so one run-on
    sentence cannot hold back the first audio for long.

    ``first_clause_words`` (0 = off): the text's *first* piece ends at the
    first clause break after at least that many words ("Hello there, it is
    good to hear from you." -> "Hello there," + the rest), so the first
    synthesis is short and the listener hears something sooner. Engines that
    render a whole unit before its first sample (Piper) gain most; the cost
    is a clause spoken with its own intonation, at a point where a speaker
    pauses anyway.
    """

    def __init__(self, *, max_chars: int = 300, first_clause_words: int = 0) -> None:
        self.max_chars = max_chars
        self.first_clause_words = first_clause_words
        self._buffer = ""
        self._scan = 0  # everything before this index has been checked for a boundary
        self._first = True  # no piece handed out yet

    def push(self, delta: str) -> list[str]:
        self._buffer += delta
        sentences: list[str] = []
        while True:
            end = self._boundary()
            if self._first and self.first_clause_words:
                clause = self._first_clause(end)
                if clause is not None:
                    end = clause
            if end is None:
                end = self._forced_cut()
            if end is None:
                return sentences
            piece, self._buffer = self._buffer[:end], self._buffer[end:]
            self._scan = 0
            if piece.strip():
                sentences.append(piece)
                self._first = False
            else:  # whitespace only: keep it with the next sentence
                self._buffer = piece + self._buffer
                self._scan = len(piece)

    def _first_clause(self, limit: int | None) -> int | None:
        """End of the first clause of the text, if it comes before ``limit`` (the sentence end)."""
        window = self._buffer if limit is None else self._buffer[:limit]
        for match in CLAUSE_BREAK.finditer(window):
            if len(window[: match.start()].split()) >= self.first_clause_words:
                return match.end()
        return None

    def flush(self) -> str | None:
        """The tail of the text (the reply ended); ``None`` when nothing is left."""
        tail, self._buffer, self._scan = self._buffer, "", 0
        self._first = False
        return tail if tail.strip() else None

    def cut_probable(self) -> str | None:
        """The pending text, if it already ends like a sentence; else ``None``.

        For a stream that paused right after "...five." or "...five. ": the
        next word would settle it ("Dr. Who"?), but waiting for a slow model
        delays the audio. Abbreviations and initials are still not cut.
        """
        text = self._buffer.rstrip()
        end = len(text)
        while end and (text[end - 1] in CLOSERS or _is_symbol(text[end - 1])):
            end -= 1
        if not end or text[end - 1] not in TERMINATORS + CJK_TERMINATORS:
            return None
        dot = end - 1
        while dot and text[dot - 1] in TERMINATORS:
            dot -= 1
        marks = text[dot:end]
        if "." in marks and _continues(text, dot, marks, "A"):
            return None
        tail, self._buffer, self._scan = self._buffer, "", 0
        self._first = False
        return tail

    @property
    def pending(self) -> str:
        """Text received but not yet returned as a sentence."""
        return self._buffer

    def _boundary(self) -> int | None:
        """End index of the first complete sentence in the buffer, if certain yet."""
        buf = self._buffer
        i = self._scan
        while i < len(buf):
            c = buf[i]
            if c == "\n":
                if buf[:i].strip():
                    return i + 1
                i += 1
                continue
            if c in CJK_TERMINATORS:
                j = _skip(buf, i + 1, CJK_TERMINATORS + CLOSERS)
                if j == len(buf):
                    self._scan = i
                    return None  # a closing quote may still come
                return j
            if c not in TERMINATORS:
                i += 1
                continue
            j = _skip(buf, i + 1, TERMINATORS + CLOSERS)
            if j == len(buf):
                self._scan = i
                return None  # "3." may become "3.14": wait for the next character
            if not buf[j].isspace():
                i = j  # "3.14", "example.com", "?!x": not a boundary
                continue
            marks = buf[i:j]
            if "." in marks or "…" in marks:
                k = j
                while k < len(buf) and buf[k].isspace():
                    k += 1
                if k == len(buf):
                    self._scan = i
                    return None  # need the next word to decide
                if _continues(buf, i, marks, buf[k]):
                    i = j
                    continue
            return j
        self._scan = len(buf)
        return None

    def _forced_cut(self) -> int | None:
        buf = self._buffer
        if len(buf) <= self.max_chars:
            return None
        window = buf[: self.max_chars]
        breaks = list(CLAUSE_BREAK.finditer(window))
        if breaks and breaks[-1].end() > self.max_chars // 3:
            return breaks[-1].end()
        space = window.rfind(" ")
        return space + 1 if space > self.max_chars // 3 else self.max_chars


def _skip(text: str, start: int, chars: str) -> int:
    """The first index at or after ``start`` whose character is not in ``chars`` (nor an emoji)."""
    while start < len(text) and (text[start] in chars or _is_symbol(text[start])):
        start += 1
    return start


def _is_symbol(char: str) -> bool:
    """Emoji and pictographs (and their joiners/variation selectors)."""
    if char in "\u200d\ufe0f":
        return True
    return unicodedata.category(char) == "So"


def _continues(buf: str, dot: int, marks: str, next_char: str) -> bool:
    """Does the text after the period(s) at ``dot`` continue the same sentence?"""
    if next_char.islower():
        return True  # "e.g. this", "Well... then"
    if "\u2026" in marks or ".." in marks:
        return False  # "Well... I": an ellipsis before a capital ends the sentence
    word = _word_before(buf, dot)
    if not word:
        return False
    if word.lower() in ABBREVIATIONS:
        return True
    if len(word) == 1 and word.isalpha() and word.isupper():
        return True  # an initial: "J. K. Rowling"
    # "1. First item" at the start of a line: a list marker, not a sentence.
    start = dot - len(word)
    line_start = buf.rfind("\n", 0, start) + 1
    return word.isdigit() and len(word) <= 2 and not buf[line_start:start].strip()


def _word_before(buf: str, dot: int) -> str:
    start = dot
    while start > 0 and (buf[start - 1].isalnum() or buf[start - 1] == "."):
        start -= 1
    return buf[start:dot]


def speakable(text: str) -> str:
    """``text`` as a TTS engine should get it: emoji and markup symbols removed.

    Engines either skip emoji or read their names aloud ("party popper"),
    and Markdown emphasis marks come out as "asterisk".
    """
    cleaned = "".join(" " if _is_symbol(c) or c in "*_`#~|" else c for c in text)
    if not any(c.isalnum() for c in cleaned):
        return ""  # only punctuation left: nothing to say
    return re.sub(r"\s+", " ", cleaned).strip()


# -- the pipeline --------------------------------------------------------------


@dataclass(frozen=True)
class SpeechChunk:
    """Audio for the sentence ``index``; ``offset`` is where it starts in the reply's audio (s)."""

    audio: AudioChunk
    index: int
    offset: float


@dataclass
class SpokenSentence:
    """A sentence of the reply and where its audio sits in the reply's audio."""

    text: str  # as generated, with its leading whitespace
    start: float  # seconds into the reply's audio
    duration: float = 0.0  # audio delivered so far
    complete: bool = False  # all of its audio was delivered


_END = object()
SECONDS_PER_WORD = 0.3  # speaking rate used to estimate a sentence not fully rendered


class SpeechStream:
    """Speak a stream of text deltas: an async iterator of :class:`SpeechChunk`.

    ``lookahead`` sentences are synthesized ahead of the one being consumed
    (1: sentence N+1 renders while N plays). When the text source pauses for
    ``idle_cut_seconds`` after what looks like the end of a sentence, that
    sentence is spoken without waiting for the next word. ``sample_rate``
    resamples every chunk to one rate (clients then get one format whatever
    the provider); ``None`` keeps the provider's rate. ``plan`` chooses the
    provider and voice per sentence (emotion, language: agents/voice_style.py);
    by default every sentence is spoken by ``tts`` with ``voice``.

    :meth:`cancel` (or leaving an ``async with`` block) stops synthesis and
    the text source at once; the iteration then ends. A consumer that stops
    iterating early must call it (or use ``async with``), or the producer
    keeps reading the text source. Errors of the text source or the TTS provider are
    raised from the iteration. One pass only.
    """

    def __init__(
        self,
        deltas: AsyncIterator[str],
        tts: TTSProvider,
        voice: VoiceSettings | None = None,
        *,
        lookahead: int = 1,
        segmenter: SentenceSegmenter | None = None,
        idle_cut_seconds: float = 0.3,
        sample_rate: int | None = None,
        plan: SentencePlan | None = None,
    ) -> None:
        self._deltas = deltas
        self._tts = tts
        self._voice = voice or VoiceSettings()
        self._plan = plan
        self._lookahead = max(0, lookahead)
        self._segmenter = segmenter or SentenceSegmenter()
        self._idle_cut = idle_cut_seconds
        self._sample_rate = sample_rate
        self.sentences: list[SpokenSentence] = []
        self._out: asyncio.Queue[Any] = asyncio.Queue()
        self._consumed_index = -1  # the sentence whose audio the consumer last received
        self._progress = asyncio.Event()  # wakes the synthesizer when the consumer moves on
        self._task: asyncio.Task[None] | None = None
        self._cancelled = False
        self._finished = False
        self._audio_time = 0.0  # seconds of audio handed to the consumer
        self._received = ""

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    @property
    def text(self) -> str:
        """All the text received so far (spoken or not)."""
        return self._received

    @property
    def audio_seconds(self) -> float:
        """Seconds of audio handed to the consumer."""
        return self._audio_time

    def spoken_text(self, played_seconds: float | None = None) -> str:
        """The text the listener heard.

        ``played_seconds`` is the playback position the client reported (or
        the caller measured); by default, all audio handed out counts as
        heard. A sentence cut in the middle contributes its words in
        proportion to the part of its audio that played.
        """
        limit = self._audio_time if played_seconds is None else played_seconds
        parts: list[str] = []
        for sentence in self.sentences:
            heard = limit - sentence.start
            if sentence.complete and heard >= 0 and heard >= sentence.duration - 1e-6:
                parts.append(sentence.text)
                continue
            if heard <= 0:
                break
            words = sentence.text.split()
            # A sentence cut off mid-synthesis: guess its full length from its words.
            total = sentence.duration
            if not sentence.complete:
                total = max(total, len(words) * SECONDS_PER_WORD)
            count = int(len(words) * min(1.0, heard / total)) if total > 0 else 0
            if count:
                lead = sentence.text[: len(sentence.text) - len(sentence.text.lstrip())]
                parts.append(lead + " ".join(words[:count]))
            break
        return "".join(parts).strip()

    # -- iteration -------------------------------------------------------------

    def __aiter__(self) -> SpeechStream:
        return self

    async def __anext__(self) -> SpeechChunk:
        if self._cancelled or self._finished:
            raise StopAsyncIteration
        if self._task is None:
            self._task = asyncio.create_task(self._produce(), name="salon-speech")
        while True:
            item = await self._out.get()
            if self._cancelled:
                raise StopAsyncIteration
            if item is _END:
                self._finished = True
                raise StopAsyncIteration
            if isinstance(item, BaseException):
                self._finished = True
                raise item
            if isinstance(item, _SentenceDone):
                self.sentences[item.index].complete = True
                self._reached(item.index + 1)  # the consumer now waits for the next one
                continue
            chunk: SpeechChunk = item
            sentence = self.sentences[chunk.index]
            sentence.duration += chunk.audio.duration
            self._audio_time = sentence.start + sentence.duration
            self._reached(chunk.index)
            return chunk

    def _reached(self, index: int) -> None:
        if index > self._consumed_index:
            self._consumed_index = index
            self._progress.set()

    async def cancel(self) -> None:
        """Stop now (barge-in): no more chunks; synthesis and the text source are closed."""
        self._cancelled = True
        self._out.put_nowait(_END)  # wake a consumer waiting in __anext__
        await self._stop_task()

    async def aclose(self) -> None:
        """Stop and release, as :meth:`cancel` (also when iteration ended normally)."""
        if not self._finished:
            await self.cancel()
        else:
            await self._stop_task()

    async def __aenter__(self) -> SpeechStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _stop_task(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await _close(self._deltas)

    # -- the producer ------------------------------------------------------------

    async def _produce(self) -> None:
        """Read deltas, cut sentences, synthesize them in order, ``lookahead`` ahead."""
        sentences: asyncio.Queue[str | None] = asyncio.Queue()
        reader = asyncio.create_task(self._read(sentences), name="salon-speech-text")
        try:
            index = 0
            offset = 0.0  # where the next sentence starts in the reply's audio
            while True:
                text = await sentences.get()
                if text is None:
                    break
                # Stay at most ``lookahead`` sentences ahead of the consumer.
                while index > max(self._consumed_index, 0) + self._lookahead:
                    self._progress.clear()
                    await self._progress.wait()
                self.sentences.append(SpokenSentence(text=text, start=offset))
                offset += await self._speak(index, text, offset)
                index += 1
            await reader  # re-raises an error of the text source
            self._out.put_nowait(_END)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._out.put_nowait(exc)
        finally:
            if not reader.done():
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await reader

    async def _speak(self, index: int, text: str, offset: float) -> float:
        """Queue the audio of one sentence; return its duration in seconds."""
        rendered = 0.0
        spoken = speakable(text)
        if spoken:
            tts, voice = self._tts, self._voice
            if self._plan is not None:
                tts, voice = await self._plan(index, spoken, self._received)
            # The reply's first audio is what the listener waits for: engines
            # with a work queue run it ahead of other replies' later sentences.
            token = first_audio.set(index == 0)
            stream = tts.synthesize(spoken, voice)
            try:
                async for audio in stream:
                    if self._sample_rate and audio.sample_rate != self._sample_rate:
                        audio = AudioChunk(
                            resample(audio.data, audio.sample_rate, self._sample_rate),
                            self._sample_rate,
                        )
                    if audio.samples:
                        self._out.put_nowait(SpeechChunk(audio, index, offset + rendered))
                        rendered += audio.duration
            finally:
                first_audio.reset(token)
                await _close(stream)
        # Also for a sentence with no audio (only emoji): the consumer marks
        # it complete and moves on, which lets the synthesizer go on too.
        self._out.put_nowait(_SentenceDone(index))
        return rendered

    async def _read(self, sentences: asyncio.Queue[str | None]) -> None:
        # The next delta is awaited in its own task so that a pause can be
        # noticed without cancelling (and so ending) the text source.
        source = aiter(self._deltas)
        pending: asyncio.Future[str] | None = None
        try:
            while True:
                if pending is None:
                    pending = asyncio.ensure_future(anext(source))
                done, _ = await asyncio.wait({pending}, timeout=self._idle_cut)
                if not done:
                    tail = self._segmenter.cut_probable()
                    if tail is not None:
                        sentences.put_nowait(tail)
                    await asyncio.wait({pending})
                try:
                    delta = pending.result()
                except StopAsyncIteration:
                    break
                pending = None
                self._received += delta
                for sentence in self._segmenter.push(delta):
                    sentences.put_nowait(sentence)
            tail = self._segmenter.flush()
            if tail is not None:
                sentences.put_nowait(tail)
        finally:
            if pending is not None and not pending.done():
                pending.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await pending
            sentences.put_nowait(None)


@dataclass(frozen=True)
class _SentenceDone:
    index: int


async def _close(iterator: Any) -> None:
    close = getattr(iterator, "aclose", None)
    if close is not None:
        with contextlib.suppress(Exception):
            await close()
