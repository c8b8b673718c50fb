"""What the core asks the shell to do, as data.

Actions carry no time: the shell executes them at once, in order. They split by who executes
them: the phone side (``PhoneAction``), the TTS socket (``TtsAction``), the agent
(``AgentAction``) and the shell itself (``ShellAction``: connections and their lifetimes), so
each adapter only ever sees its own vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "AbandonTurn",
    "Action",
    "AgentAction",
    "CancelTurn",
    "ClearPlayback",
    "CloseContext",
    "ConfirmTurn",
    "ConnectTts",
    "EndCall",
    "JudgeTurn",
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
    """Play one 20 ms frame to the caller: PCM16 at the call's rate (`CallSettings.audio`).

    The carrier's codec puts it in its wire encoding: µ-law for the 8 kHz carriers (Twilio's
    bytes are the ones the core used to encode itself), the frame as it is for linear PCM lines."""

    pcm: bytes


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

    The core decides when: as soon as the carrier's socket is open (`PhoneConnected`), so the
    TTS is up by the time ``start`` asks for the greeting. A socket that never starts a call
    holds it only until ``start_timeout_s`` ends the call."""


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
    """Ask the agent for reply ``turn``; ``utterance`` is the caller's speech (PCM16 at the call's rate).

    ``tentative``: the caller has only paused; the reply is voiced but held. `ConfirmTurn` or
    `AbandonTurn` follows: an abandoned turn's ``utterance`` comes again, whole, in a later turn."""

    turn: int
    utterance: bytes = b""
    digits: str = ""
    tentative: bool = False
    idle: bool = False  # no words: the caller has been silent, and the agent may prompt them


@dataclass(frozen=True, slots=True)
class ConfirmTurn:
    """Tentative turn ``turn`` is the caller's real turn: its reply plays. ``waited``: the seconds
    of silence, from the end of the caller's speech, it took to be sure (for the metrics)."""

    turn: int
    waited: float = 0.0


@dataclass(frozen=True, slots=True)
class AbandonTurn:
    """Tentative turn ``turn`` was not the end of the caller's turn: its reply was never heard.

    The agent forgets the turn: the caller's words and the reply. The words come again, with
    what the caller said next, in a later turn."""

    turn: int


@dataclass(frozen=True, slots=True)
class JudgeTurn:
    """Ask the end-of-turn judge about candidate ``candidate``: is ``utterance`` (PCM16 at the call's rate, the
    caller's turn so far, up to the pause) a finished turn? The answer is a `TurnVerdict` event
    naming the candidate; ``turn`` is the tentative turn started for it (-1: none). A verdict
    from audio alone (no transcript) changes nothing below ``sure_audio``: a judge that never
    says as much without words need not be asked then, and no verdict is the same answer."""

    candidate: int
    utterance: bytes
    turn: int = -1
    sure_audio: float = 0.0


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
AgentAction = StartTurn | CancelTurn | ReplyHeard | ConfirmTurn | AbandonTurn
ShellAction = ConnectTts | JudgeTurn
Action = PhoneAction | TtsAction | AgentAction | ShellAction
