"""What the core asks the shell to do, as data.

Actions carry no time: the shell executes them at once, in order. They split by who executes
them: the phone side (``PhoneAction``), the TTS socket (``TtsAction``) and the agent
(``AgentAction``), so each adapter only ever sees its own vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "Action",
    "AgentAction",
    "CancelTurn",
    "ClearPlayback",
    "CloseContext",
    "EndCall",
    "KeepAlive",
    "OpenContext",
    "PhoneAction",
    "ReplyHeard",
    "SendMark",
    "SendMedia",
    "SendText",
    "StartTurn",
    "TtsAction",
]


@dataclass(frozen=True, slots=True)
class SendMedia:
    """Play one 20 ms frame of 8 kHz mu-law to the caller."""

    ulaw: bytes


@dataclass(frozen=True, slots=True)
class SendMark:
    """Ask the carrier to echo ``name`` once the audio sent before it has played."""

    name: str


@dataclass(frozen=True, slots=True)
class ClearPlayback:
    """Drop whatever the carrier still holds to play (barge-in)."""


@dataclass(frozen=True, slots=True)
class EndCall:
    """Hang up the phone side (the shell closes the media socket)."""

    reason: str


@dataclass(frozen=True, slots=True)
class OpenContext:
    """First message of a fresh context (carries the voice settings)."""

    context_id: str


@dataclass(frozen=True, slots=True)
class SendText:
    """Text for an open context; ``flush`` forces generation of everything buffered."""

    context_id: str
    text: str
    flush: bool = False


@dataclass(frozen=True, slots=True)
class KeepAlive:
    """Reset an open context's inactivity clock without generating anything."""

    context_id: str


@dataclass(frozen=True, slots=True)
class CloseContext:
    """Graceful close: the server finishes what it holds, then sends ``isFinal``."""

    context_id: str


@dataclass(frozen=True, slots=True)
class StartTurn:
    """Ask the agent for reply ``turn``; ``utterance`` is the caller's speech (8 kHz PCM16)."""

    turn: int
    utterance: bytes = b""
    digits: str = ""


@dataclass(frozen=True, slots=True)
class CancelTurn:
    """Stop producing reply ``turn`` (barge-in or call end)."""

    turn: int


@dataclass(frozen=True, slots=True)
class ReplyHeard:
    """What the caller actually heard of reply ``turn``, once it is over."""

    turn: int
    text: str
    interrupted: bool


PhoneAction = SendMedia | SendMark | ClearPlayback | EndCall
TtsAction = OpenContext | SendText | KeepAlive | CloseContext
AgentAction = StartTurn | CancelTurn | ReplyHeard
Action = PhoneAction | TtsAction | AgentAction
