"""What happens to a call, as data: everything the core (`bridge.core.call.Call`) is fed.

Every event carries ``at``, the shell's monotonic clock in seconds when the input arrived.
The core reads no clock of its own, so a test can replay any interleaving in simulated time.
Events about a turn or a TTS context name it, so the core can recognise a late one after a
barge-in and drop it instead of guessing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "AgentControl",
    "AgentDone",
    "AgentFailed",
    "AgentText",
    "Alignment",
    "CallEnded",
    "CallStarted",
    "CallerAudio",
    "DtmfReceived",
    "Event",
    "MarkPlayed",
    "PhoneConnected",
    "TelephonyMalformed",
    "Tick",
    "TtsAudio",
    "TtsClosed",
    "TtsConnected",
    "TtsError",
    "TtsFinal",
    "TurnVerdict",
    "VoicemailDetected",
    "WindDown",
]


@dataclass(frozen=True, slots=True)
class PhoneConnected:
    """The carrier's media socket is open; nothing has come over it yet.

    From here the carrier has ``CallSettings.start_timeout_s`` to start the stream, or the core
    ends the call: a socket that never starts a call must not hold a place (or a TTS session)."""

    at: float


@dataclass(frozen=True, slots=True)
class CallStarted:
    """The telephony stream is up (Twilio ``start``)."""

    at: float
    stream_id: str
    call_id: str = ""
    parameters: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CallerAudio:
    """Caller audio as 16-bit mono PCM at the call's rate (`CallSettings.audio`), any length (the core re-slices it)."""

    at: float
    pcm: bytes


@dataclass(frozen=True, slots=True)
class MarkPlayed:
    """The carrier echoed a mark: the audio before it has played, or was cleared."""

    at: float
    name: str


@dataclass(frozen=True, slots=True)
class DtmfReceived:
    """The caller pressed a key."""

    at: float
    digit: str


@dataclass(frozen=True, slots=True)
class TelephonyMalformed:
    """A message from the phone side that could not be used; the shell has logged it."""

    at: float
    reason: str


@dataclass(frozen=True, slots=True)
class AgentText:
    """A piece of the agent's reply for ``turn``, as the agent yielded it (an empty piece still
    shows the agent is alive: its timeout starts again)."""

    at: float
    turn: int
    text: str


@dataclass(frozen=True, slots=True)
class AgentDone:
    """The agent finished the reply for ``turn``."""

    at: float
    turn: int


@dataclass(frozen=True, slots=True)
class AgentControl:
    """The agent asked, in reply ``turn``, to end the call (``kind`` "hangup") or to hand the caller to
    ``to`` ("transfer"); the shell has already refused any number off the allow-list. It takes
    effect once what the agent said before it has played (see ``bridge.core.control``)."""

    at: float
    turn: int
    kind: str
    to: str = ""
    reason: str = ""


@dataclass(frozen=True, slots=True)
class VoicemailDetected:
    """The carrier's answering-machine detection says a machine took the call (Twilio's async AMD
    callback, ``AnsweredBy=machine_end_beep``): the bridge leaves its voicemail message, then hangs up."""

    at: float


@dataclass(frozen=True, slots=True)
class WindDown:
    """The server is shutting down: finish what is being said, say ``text``, and end the call by
    ``end_by`` at the latest."""

    at: float
    text: str
    end_by: float


@dataclass(frozen=True, slots=True)
class AgentFailed:
    """The agent raised while producing ``turn`` (its silence is timed by the core itself)."""

    at: float
    turn: int
    reason: str


@dataclass(frozen=True, slots=True)
class Alignment:
    """Characters the TTS says a chunk of audio voices, with start times in ms from the chunk start."""

    chars: str
    start_ms: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class TtsAudio:
    """Audio for one context, already 16-bit mono PCM at the call's rate (see ``bridge.core.audio``)."""

    at: float
    context_id: str
    pcm: bytes
    alignment: Alignment | None = None


@dataclass(frozen=True, slots=True)
class TtsFinal:
    """The TTS finished a context (``isFinal``): its server slot is free again."""

    at: float
    context_id: str


@dataclass(frozen=True, slots=True)
class TtsError:
    """The TTS reported an error, for one context or (``context_id`` None) the socket."""

    at: float
    code: str
    message: str
    context_id: str | None = None


@dataclass(frozen=True, slots=True)
class TtsConnected:
    """The TTS socket is (again) open; every context the server held before is gone."""

    at: float


@dataclass(frozen=True, slots=True)
class TtsClosed:
    """The TTS socket closed; every context on it is gone. ``expected`` after our own close."""

    at: float
    code: int | None = None
    reason: str = ""
    expected: bool = False


@dataclass(frozen=True, slots=True)
class TurnVerdict:
    """The end-of-turn judge's answer for candidate ``candidate`` (see `JudgeTurn`): how likely
    the caller is done, and how much more silence to wait (from the candidate) if not.
    ``text``: the judge read a transcript (an audio-only verdict is trusted less)."""

    at: float
    candidate: int
    complete_prob: float
    wait_ms: int
    complete: bool
    text: bool = False


@dataclass(frozen=True, slots=True)
class Tick:
    """A deadline the core asked for (``Call.next_deadline``) has come."""

    at: float


@dataclass(frozen=True, slots=True)
class CallEnded:
    """The phone side is gone (``stop``, a close or a drop)."""

    at: float
    reason: str = "stop"


Event = (
    PhoneConnected
    | CallStarted
    | CallerAudio
    | MarkPlayed
    | DtmfReceived
    | TelephonyMalformed
    | AgentText
    | AgentDone
    | AgentFailed
    | AgentControl
    | VoicemailDetected
    | WindDown
    | TtsAudio
    | TtsFinal
    | TtsError
    | TtsConnected
    | TtsClosed
    | TurnVerdict
    | Tick
    | CallEnded
)
