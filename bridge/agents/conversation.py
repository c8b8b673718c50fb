"""The layer every configured agent sits behind: transcription, memory, greeting, timing.

The session hands a bare turn (number, utterance, digits). This wrapper transcribes the
utterance (when a transcriber is configured), records what the caller said and what the caller
heard in a `History`, and passes the inner agent a full `Turn`, so an agent of any kind (built-in,
webhook, or a third party's by dotted path) gets the conversation without keeping it itself.

A turn the caller cut off before its words were transcribed (they paused, the turn began, then
they went on talking) is not lost: its audio and digits are carried into the next turn, which is
transcribed as one utterance.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator

from bridge.agents.base import Agent, CallControl, Transcriber, Turn
from bridge.agents.memory import History, caller_text

__all__ = ["ConversationAgent"]

log = logging.getLogger("bridge.agents")

MAX_CARRY_BYTES = 60 * 16000  # a minute of 8 kHz PCM16: the most audio one transcription gets

IDLE_NOTE = "[the caller has said nothing for a while]"
"""What the conversation records for an idle turn, so a model knows why it speaks unasked."""


class ConversationAgent:
    """An `Agent` that gives ``inner`` the transcript and the heard-text history of each turn."""

    def __init__(self, inner: Agent, *, transcriber: Transcriber | None = None, greeting: str = "",
                 history: History | None = None) -> None:
        self.inner = inner
        self.transcriber = transcriber
        self.greeting = greeting.strip()
        self.history = history or History()
        self._carry_audio = b""
        self._carry_digits = ""

    async def reply(self, turn: Turn) -> AsyncIterator[str | CallControl]:
        if turn.number == 0 and self.greeting:
            yield self.greeting
            return
        started = time.monotonic()
        full = self._idle(turn) if turn.idle else await self._listen(turn)
        if full is None:
            log.debug("turn %d: nothing was said; no reply", turn.number)
            return
        stt_ms = (time.monotonic() - started) * 1000
        first, stream = True, aiter(self.inner.reply(full))
        try:
            async for text in stream:
                if first and isinstance(text, str) and text:
                    first = False
                    log.info("turn %d: first text %.0f ms after the turn began (transcription %.0f ms)",
                             turn.number, (time.monotonic() - started) * 1000, stt_ms)
                yield text
        finally:  # closed early (barge-in): close the inner stream now, not when it is garbage
            close = getattr(stream, "aclose", None)
            if close is not None:
                await close()

    async def _listen(self, turn: Turn) -> Turn | None:
        """The full turn, with the caller's words recorded; None when there is nothing to answer."""
        audio = (self._carry_audio + turn.utterance)[-MAX_CARRY_BYTES:]
        digits = self._carry_digits + turn.digits
        self._carry_audio, self._carry_digits = audio, digits  # kept if this turn is cancelled now
        transcript: str | None = None
        if self.transcriber is not None and audio:
            try:
                transcript = (await self.transcriber.transcribe(audio)).strip()
            except Exception:
                self._carry_audio, self._carry_digits = b"", ""  # the caller hears an apology and says it again
                raise
            log.debug("turn %d: the caller said %r", turn.number, transcript)
        self._carry_audio, self._carry_digits = b"", ""
        said = caller_text(transcript, digits)
        if self.transcriber is not None and not said and turn.number > 0:
            return None  # a cough or line noise that the VAD took for speech
        self.history.caller(said)
        return Turn(turn.number, audio, digits, transcript, self.history.messages)

    def _idle(self, turn: Turn) -> Turn:
        """The caller was silent: no words to transcribe, a note in the conversation instead."""
        self.history.caller(IDLE_NOTE)
        return Turn(turn.number, b"", turn.digits, None, self.history.messages, idle=True)

    def heard(self, turn: int, text: str, interrupted: bool) -> None:
        if text.strip():  # the caller got an answer (the apology, after a timeout): start afresh
            self._carry_audio, self._carry_digits = b"", ""
        self.history.agent(text, interrupted)
        self.inner.heard(turn, text, interrupted)

    async def aclose(self) -> None:
        for part in (self.inner, self.transcriber):
            close = getattr(part, "aclose", None)
            if close is not None:
                await close()
