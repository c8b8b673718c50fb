"""The embedded offline voice: espeak-ng behind the same `TtsClient` seam as ElevenLabs.

A call without an ElevenLabs API key still gets a voice, and the core cannot tell the
difference: this client takes the same actions and reports the same events, with the context
lifecycle of ElevenLabs' multi-context socket (``shared/protocols.md`` §1.6):

- text accumulates per context; ``flush`` voices what is buffered, and never ends the context;
- text for a context never opened opens it (the real server would create it too);
- ``CloseContext`` is graceful: text already held is still voiced and its audio still sent, and
  only then comes `TtsFinal`, so the core's "drop audio of cancelled contexts" path is exercised
  offline exactly as online;
- `aclose` abandons everything at once, and nothing is reported after it returns.

Flushed text is voiced sentence by sentence, so the first sentence of a reply plays while later
ones are still being synthesised. Sentences of open contexts go before those of closing ones, so
a reply after a barge-in never waits behind the remains of the interrupted one.

espeak-ng is GPL-3.0: it stays the optional extra ``bridge[voice]`` (see `bridge.tts.espeak`),
imported only when a call actually uses this voice.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from bridge.core.actions import CloseContext, KeepAlive, OpenContext, SendText, TtsAction
from bridge.core.audio import SAMPLE_RATE, Resampler
from bridge.core.events import TtsAudio, TtsClosed, TtsConnected, TtsError, TtsFinal
from bridge.core.text import split_ready_text
from bridge.tts import espeak
from bridge.tts.base import Emit, TtsConnectError

__all__ = ["CHUNK_BYTES", "CHUNK_MS", "LocalTts"]

CHUNK_MS = 200
"""Longest `TtsAudio` sent, about what one ElevenLabs frame carries."""
CHUNK_BYTES = CHUNK_MS * SAMPLE_RATE * 2 // 1000
"""3200: `CHUNK_MS` of 8 kHz PCM16."""


@dataclass(eq=False)
class _Context:
    """One context's unflushed text, and its sentences waiting for the engine."""

    context_id: str
    buffer: str = ""
    sentences: deque[str] = field(default_factory=deque)
    closing: bool = False


class LocalTts:
    """Voices a call's contexts with espeak-ng; reports through ``emit`` like `ElevenLabsTts`.

    Audio comes out at the call's ``rate``: espeak-ng speaks at 22 050 Hz, resampled once (filtered)
    to 8 or 16 kHz."""

    def __init__(self, *, clock: Callable[[], float], voice: str = "en-us", rate_wpm: int = 175,
                 rate: int = SAMPLE_RATE) -> None:
        self._clock = clock
        self._rate = rate
        self._chunk = CHUNK_MS * rate * 2 // 1000
        self._voice = voice
        self._rate_wpm = rate_wpm
        self._emit: Emit | None = None
        self._worker: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._abort = threading.Event()
        self._open: dict[str, _Context] = {}
        self._closing: deque[_Context] = deque()

    def __repr__(self) -> str:
        return f"LocalTts(voice={self._voice!r}, rate_wpm={self._rate_wpm}, rate={self._rate})"

    async def connect(self, emit: Emit) -> None:
        """Load the engine (once per process) and check the voice; no engine is a permanent error."""
        await self.aclose()  # a reconnect starts afresh, as a new socket would
        try:
            sample_rate = await espeak.prepare(self._voice, self._rate_wpm)
        except (espeak.EspeakUnavailable, espeak.EspeakError) as exc:
            raise TtsConnectError(str(exc), permanent=True) from None
        self._emit = emit
        self._wake = asyncio.Event()
        self._abort = threading.Event()
        self._worker = asyncio.create_task(self._work(emit, Resampler(sample_rate, self._rate)), name="local-tts")
        emit(TtsConnected(self._clock()))

    async def send(self, action: TtsAction) -> None:
        """Apply one action at once; voicing happens on the worker, in order per context."""
        if self._worker is None:
            return  # not connected: the core re-sends once it hears TtsConnected
        match action:
            case OpenContext(context_id=cid):
                self._context(cid)
            case SendText(context_id=cid, text=text, flush=flush):
                context = self._context(cid)
                context.buffer += text
                if flush:
                    self._flush(context)
            case KeepAlive():
                pass  # nothing here times out
            case CloseContext(context_id=cid):
                self._close(cid)

    async def aclose(self) -> None:
        """Abandon every pending sentence, stop the worker, report the (expected) close."""
        worker, emit = self._worker, self._emit
        self._worker = self._emit = None
        if worker is None:
            return
        self._abort.set()  # a sentence being synthesised stops at the engine's next block
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker
        self._open.clear()
        self._closing.clear()
        if emit is not None:
            emit(TtsClosed(self._clock(), 1000, "", expected=True))

    # ----------------------------------------------------------------- contexts

    def _context(self, cid: str) -> _Context:
        context = self._open.get(cid)
        if context is None:
            context = self._open[cid] = _Context(cid)
        return context

    def _flush(self, context: _Context) -> None:
        """Move the buffered text to the engine's queue, cut into sentences."""
        pieces, _ = split_ready_text(context.buffer, final=True)
        context.buffer = ""
        context.sentences.extend(text.strip() for text, _ in pieces if text.strip())
        self._wake.set()

    def _close(self, cid: str) -> None:
        context = self._open.pop(cid, None)
        if context is None:
            if any(c.context_id == cid for c in self._closing):
                return  # closed twice: one TtsFinal is enough
            context = _Context(cid)  # unknown id: just a final
        self._flush(context)
        context.closing = True
        self._closing.append(context)

    def _next(self) -> _Context | None:
        """Whose turn it is: open contexts first, then the oldest closing one."""
        for context in self._open.values():
            if context.sentences:
                return context
        return self._closing[0] if self._closing else None

    # ----------------------------------------------------------------- worker

    async def _work(self, emit: Emit, resampler: Resampler) -> None:
        """The client's one consumer: a sentence at a time, then the finals of drained contexts."""
        while True:
            context = self._next()
            if context is None:
                self._wake.clear()
                await self._wake.wait()
            elif context.sentences:
                await self._speak(context.context_id, context.sentences.popleft(), emit, resampler)
            else:
                self._closing.remove(context)
                emit(TtsFinal(self._clock(), context.context_id))

    async def _speak(self, cid: str, sentence: str, emit: Emit, resampler: Resampler) -> None:
        try:
            pcm = await espeak.run(sentence, voice=self._voice, rate_wpm=self._rate_wpm, abort=self._abort)
        except espeak.EspeakError as exc:
            emit(TtsError(self._clock(), "synthesis_failed", str(exc), cid))
            return
        # Each sentence is a whole utterance, silence at both ends: resample it as its own stream,
        # so none of its audio waits in the filter for a next sentence that may be long in coming.
        await self._stream(cid, resampler.process(pcm) + resampler.flush(), emit)

    async def _stream(self, cid: str, pcm: bytes, emit: Emit) -> None:
        """Hand audio over in ≤ 200 ms pieces, yielding between them so the core keeps up."""
        for start in range(0, len(pcm), self._chunk):
            emit(TtsAudio(self._clock(), cid, pcm[start : start + self._chunk]))
            await asyncio.sleep(0)
