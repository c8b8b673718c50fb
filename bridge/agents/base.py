"""Where reply text comes from: an agent is an async stream of text per turn.

A turn hands the agent what the caller said: the utterance as PCM16 at the call's rate (8 kHz, or
16 kHz on a wideband line: ``Turn.rate``), its transcript when a
transcriber is configured, any DTMF digits, and the conversation so far (``history``, ending with
what the caller just said). The agent yields text as it produces it, and the core streams that
into a fresh TTS context, flushing at sentence ends. A barge-in cancels the consuming task, so an
agent's ``reply`` must let `CancelledError` through (an ``async for`` over an HTTP stream does, and
leaving the ``async with`` of the request closes it). ``heard`` tells the agent what the caller
actually heard of its last reply, so its memory matches the call, not its intentions.

An agent may also define ``async def aclose(self)``; the session awaits it when the call ends
(to close its HTTP client, for instance).

A turn may be *tentative* (``Turn.tentative``): the caller has only paused, and the bridge asks
for the reply early, holding its audio until the end of the turn is sure. Then exactly one of
two optional methods is called: ``confirm(turn)`` (the reply plays; ``heard`` follows as usual)
or ``abandon(turn)`` (the caller went on: the reply was never heard, and the caller's words of
that turn come again, whole, with what they said next, in a later turn: forget them).

Besides text, a reply may yield one *call control*: `HangUp` (say goodbye, then end the call) or
`Transfer` (hand the caller to a person). The bridge acts on it only once everything the agent said
before it has been heard, so a goodbye is never cut short; text after a control is not spoken.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal, Protocol

__all__ = ["Agent", "AgentError", "CallControl", "HangUp", "Message", "Role", "Transcriber", "Transfer", "Turn"]

Role = Literal["user", "assistant"]


@dataclass(frozen=True, slots=True)
class Message:
    """One entry of the conversation: what the caller said, or what the caller heard the agent say."""

    role: Role
    content: str


@dataclass(frozen=True, slots=True)
class Turn:
    number: int  # 0 is the greeting
    utterance: bytes = b""  # mono PCM16 at ``rate``
    digits: str = ""  # DTMF keys pressed since the last turn, e.g. "12#"
    transcript: str | None = None  # None: no transcriber configured
    history: tuple[Message, ...] = ()  # the conversation so far, ending with this turn's caller message
    tentative: bool = False  # the caller only paused: ``confirm`` or ``abandon`` follows
    idle: bool = False  # the caller has said nothing since the agent's last words: a chance to prompt them
    rate: int = 8000  # the utterance's sample rate: the call's, 16000 on a wideband line (Vonage)


@dataclass(frozen=True, slots=True)
class HangUp:
    """End the call once the reply so far has played to its end."""

    reason: str = ""


@dataclass(frozen=True, slots=True)
class Transfer:
    """Hand the caller to ``to`` (E.164) once the reply so far has played; only numbers the operator
    allowed are ever dialled (`bridge.agents.tools.TransferPolicy`)."""

    to: str


CallControl = HangUp | Transfer


class Agent(Protocol):
    def reply(self, turn: Turn) -> AsyncIterator[str | CallControl]:
        """Yield the reply's text in pieces, as soon as each is known, and at most one call control."""

    def heard(self, turn: int, text: str, interrupted: bool) -> None:
        """What the caller heard of reply ``turn`` (all of it unless ``interrupted``)."""


class Transcriber(Protocol):
    async def transcribe(self, pcm: bytes, rate: int = 8000) -> str:
        """The words in ``pcm`` (mono PCM16 at ``rate``, the call's: 8 or 16 kHz); "" when there are none."""


class AgentError(Exception):
    """An agent's upstream failed (HTTP error, bad response). The message is one line, no secret in it."""
