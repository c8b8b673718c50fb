"""The layer every configured agent sits behind: transcription, memory, greeting, timing.

The session hands a bare turn (number, utterance, digits). This wrapper transcribes the
utterance (when a transcriber is configured), records what the caller said and what the caller
heard in a `History`, and passes the inner agent a full `Turn`, so an agent of any kind (built-in,
webhook, or a third party's by dotted path) gets the conversation without keeping it itself.

A turn the caller cut off before its words were transcribed (they paused, the turn began, then
they went on talking) is not lost: its audio and digits are carried into the next turn, which is
transcribed as one utterance.

A *tentative* turn (``Turn.tentative``) already holds every word since the utterance began, and
may be abandoned: then the caller message it added is taken back out of the history (the next
turn brings the words again, whole), nothing is carried, and the inner agent hears ``abandon``.
When the session streams the caller's audio to a live transcriber, the turn arrives with its
``transcript`` and is not transcribed again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator

from bridge.agents.base import Agent, CallControl, Message, Transcriber, Turn
from bridge.agents.memory import History, caller_text

__all__ = ["ConversationAgent"]

log = logging.getLogger("bridge.agents")

MAX_CARRY_S = 60  # a minute of the caller's audio: the most one transcription gets

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
        self._before: dict[int, tuple[Message, ...]] = {}  # tentative turn -> the history before it

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
        audio = (self._carry_audio + turn.utterance)[-MAX_CARRY_S * turn.rate * 2:]
        digits = self._carry_digits + turn.digits
        self._carry_audio, self._carry_digits = audio, digits  # kept if this turn is cancelled now
        transcript = turn.transcript.strip() if turn.transcript is not None else None
        if transcript is None and self.transcriber is not None and audio:
            try:
                transcript = (await self.transcriber.transcribe(audio, turn.rate)).strip()
            except Exception:
                self._carry_audio, self._carry_digits = b"", ""  # the caller hears an apology and says it again
                raise
            log.debug("turn %d: the caller said %r", turn.number, transcript)
        self._carry_audio, self._carry_digits = b"", ""
        said = caller_text(transcript, digits)
        if (self.transcriber is not None or turn.transcript is not None) and not said and turn.number > 0:
            return None  # a cough or line noise that the VAD took for speech
        if turn.tentative:
            self._before[turn.number] = self.history.messages
        self.history.caller(said)
        return Turn(turn.number, audio, digits, transcript, self.history.messages, turn.tentative, rate=turn.rate)

    def confirm(self, turn: int) -> None:
        """The tentative turn is the caller's turn: what it recorded stays."""
        self._before.pop(turn, None)
        _call(self.inner, "confirm", turn)

    def abandon(self, turn: int) -> None:
        """The caller went on: forget the turn's words (they come again, whole) and carry nothing."""
        self._carry_audio, self._carry_digits = b"", ""
        before = self._before.pop(turn, None)
        if before is not None:
            self.history.restore(before)
        _call(self.inner, "abandon", turn)

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


def _call(agent: object, name: str, turn: int) -> None:
    """Call an optional agent method (``confirm``, ``abandon``) if the agent has it."""
    method = getattr(agent, name, None)
    if callable(method):
        method(turn)
