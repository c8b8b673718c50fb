"""Streaming speech-to-text: audio goes in as it arrives, partial and final transcripts come out.

One interface covers a batch endpoint (buffer the utterance, transcribe it when it ends) and a
live one (Deepgram's WebSocket, which answers while the caller is still talking), so the call
shell can start with either and the core sees the same events::

    async with stt.stream(rate=8000) as s:
        await s.send(pcm)                    # as often as audio arrives (PCM16 mono)
        ...
        await s.finish()                     # no more audio: flush what is held, then close
        async for t in s.transcripts():      # Transcript(text, is_final, at, ...)
            ...

Reading and sending run concurrently in a real call (one task per direction). ``events()``
yields everything the service reports (transcripts, start of speech, end of utterance, the close),
``transcripts()`` only the transcripts; read from one of them, once. Every item carries ``at``,
the shell's monotonic clock when it arrived, like the core's events.

A peer fault (a dropped connection, a malformed message) never raises out of the reading side:
it is logged and ends the stream with `SttClosed(clean=False)`. Only opening a stream raises
(`SttError`: refused key, unreachable server), with a one-line message and never the key.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol

__all__ = [
    "SpeechStarted",
    "StreamingTranscriber",
    "SttClosed",
    "SttError",
    "SttEvent",
    "SttStream",
    "Transcript",
    "UtteranceEnd",
]


class SttError(Exception):
    """A stream could not be opened (or used): one line, no secret in it."""


@dataclass(frozen=True, slots=True)
class Transcript:
    """Words heard so far in one stretch of audio.

    ``is_final``: the service will not revise this stretch again (an interim one will be replaced by
    the next transcript covering the same audio). ``speech_final``: the service also detected the end
    of speech here (Deepgram's endpointing): a candidate end of turn. ``start`` and ``duration`` are
    seconds of the stream's audio that the text covers.
    """

    text: str
    is_final: bool
    at: float
    speech_final: bool = False
    start: float = 0.0
    duration: float = 0.0


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """The service heard speech begin at ``timestamp`` seconds into the stream's audio."""

    at: float
    timestamp: float


@dataclass(frozen=True, slots=True)
class UtteranceEnd:
    """A gap after the last finalised word long enough to call the utterance over."""

    at: float
    last_word_end: float


@dataclass(frozen=True, slots=True)
class SttClosed:
    """The last event of every stream. ``clean``: closed as asked (``finish``), else ``reason`` says why."""

    at: float
    clean: bool
    reason: str = ""


SttEvent = Transcript | SpeechStarted | UtteranceEnd | SttClosed


class SttStream(Protocol):
    """One caller's audio, one recognition session."""

    async def __aenter__(self) -> SttStream: ...

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None: ...

    async def send(self, pcm: bytes) -> None:
        """Queue PCM16 mono audio at the stream's rate; dropped (and logged once) after a close."""

    async def finish(self) -> None:
        """No more audio: the service flushes what it holds and the stream ends with `SttClosed`."""

    def events(self) -> AsyncIterator[SttEvent]:
        """Everything the service reports, ending with `SttClosed`."""

    def transcripts(self) -> AsyncIterator[Transcript]:
        """Only the transcripts, ending when the stream closes."""


class StreamingTranscriber(Protocol):
    """Opens one `SttStream` per utterance or per call (the implementation says which it suits)."""

    def stream(self, rate: int = 8000) -> SttStream: ...
