"""A batch transcriber behind the streaming interface: buffer the audio, transcribe it on ``finish``.

This is how an OpenAI-compatible ``/audio/transcriptions`` endpoint (OpenAI, Groq, a local
faster-whisper server; see `bridge.agents.openai.OpenAITranscriber`) fits the interface: it yields
no interim results and one final transcript per stream, after the whole utterance, so its latency
is the request's round trip counted from the end of speech. Open one stream per utterance.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from types import TracebackType

import httpx

from bridge.agents.base import AgentError, Transcriber
from bridge.agents.stt.base import SttClosed, SttError, SttEvent, Transcript
from bridge.agents.stt.feed import EventFeed

__all__ = ["BatchStream", "BatchTranscriber"]

log = logging.getLogger("bridge.agents.stt.batch")

_RATE = 8000  # the narrowband phone path's rate


class BatchTranscriber:
    """``BatchTranscriber(OpenAITranscriber(...))``: any `Transcriber` as a `StreamingTranscriber`."""

    def __init__(self, transcriber: Transcriber, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.transcriber = transcriber
        self._clock = clock

    def stream(self, rate: int = _RATE) -> BatchStream:
        return BatchStream(self.transcriber, rate, self._clock)


class BatchStream:
    """One utterance: ``send`` appends, ``finish`` transcribes and ends the stream."""

    def __init__(self, transcriber: Transcriber, rate: int, clock: Callable[[], float]) -> None:
        if rate <= 0:
            raise SttError(f"batch transcription: a sample rate of {rate} Hz")
        self._transcriber, self._rate, self._clock = transcriber, rate, clock
        self._chunks: list[bytes] = []
        self._feed = EventFeed()

    async def __aenter__(self) -> BatchStream:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self._feed.close(SttClosed(at=self._clock(), clean=False, reason="closed before finish"))

    async def send(self, pcm: bytes) -> None:
        if self._feed.closed is None:
            self._chunks.append(pcm)

    async def finish(self) -> None:
        """Transcribe the buffered audio (awaits the request); errors end the stream, logged."""
        if self._feed.closed is not None:
            return
        pcm = b"".join(self._chunks)
        self._chunks = []
        seconds = len(pcm) // 2 / self._rate
        try:
            text = await self._transcriber.transcribe(pcm, self._rate)
        except (AgentError, httpx.HTTPError) as exc:
            reason = str(exc) if isinstance(exc, AgentError) else f"transcription: {type(exc).__name__}"
            log.error("batch transcription failed: %s", reason)
            self._feed.close(SttClosed(at=self._clock(), clean=False, reason=reason))
            return
        self._feed.put(Transcript(text=text.strip(), is_final=True, speech_final=True, at=self._clock(),
                                  start=0.0, duration=seconds))
        self._feed.close(SttClosed(at=self._clock(), clean=True))

    def events(self) -> AsyncIterator[SttEvent]:
        return self._feed.events()

    def transcripts(self) -> AsyncIterator[Transcript]:
        return self._feed.transcripts()

