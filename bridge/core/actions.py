"""What the core asks the shell to do, as data.

Actions carry no time: the shell executes them at once, in order. They split by who executes
them: the phone side (``PhoneAction``), the TTS socket (``TtsAction``), the agent
(``AgentAction``) and the shell itself (``ShellAction``: connections and their lifetimes), so
each adapter only ever sees its own vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "Action",
    "AgentAction",
    "CancelTurn",
    "ClearPlayback",
    "CloseContext",
    "ConnectTts",
    "EndCall",
    "KeepAlive",
    "OpenContext",
    "PhoneAction",
    "ReplyHeard",
    "SendMark",
    "SendMedia",
    "SendText",
    "ShellAction",
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
    """Hang up the phone side (the shell closes the media socket); ``reason`` is for the log.

    ``outcome`` is set when the bridge ends the call on purpose: "hangup", or "transfer" to ``to``;
    the shell records it for the carrier's after-stream request (``bridge.server.call_control``)."""

    reason: str
    outcome: str = ""
    to: str = ""


@dataclass(frozen=True, slots=True)
class ConnectTts:
    """Open the call's TTS connection now (the shell's supervisor keeps it up from then on).

    The core decides when: today at the call's ``start``, so a socket that never starts a call
    costs no TTS session."""


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
    idle: bool = False  # no words: the caller has been silent, and the agent may prompt them


@dataclass(frozen=True, slots=True)
class CancelTurn:
    """Stop producing reply ``turn``.

    ``reason`` is empty when the turn is simply over (the caller cut in, the call ended, its voice
    failed); otherwise it says how the agent failed (it fell silent), for the shell to log."""

    turn: int
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ReplyHeard:
    """What the caller actually heard of reply ``turn``, once it is over.

    ``text`` comes only from audio that played: all the text when the reply played out whole,
    else the words the played frames voiced (by the TTS's alignment, or a speaking rate).
    ``interrupted`` is True whenever the caller heard less than the whole reply: a barge-in, the
    turn-end key, or a voice that failed (a TTS error, no audio in time). A reply nobody heard
    is ``ReplyHeard(turn, "", interrupted=True)``."""

    turn: int
    text: str
    interrupted: bool


PhoneAction = SendMedia | SendMark | ClearPlayback | EndCall
TtsAction = OpenContext | SendText | KeepAlive | CloseContext
AgentAction = StartTurn | CancelTurn | ReplyHeard
ShellAction = ConnectTts
Action = PhoneAction | TtsAction | AgentAction | ShellAction
