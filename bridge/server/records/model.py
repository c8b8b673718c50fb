"""A call record as data: what the recorder hands the writer, and what the API returns.

Times inside a call are seconds from the call's start (the carrier's ``start``), so a record
reads the same whatever clock the server ran on; only ``started_at`` / ``ended_at`` are wall
clock (UTC). Every value a part of the bridge does not measure yet is ``None``, never a guess.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

__all__ = ["ENDINGS", "BargeIn", "CallRecord", "Reconnect", "Segment", "StereoAudio", "Turn", "mask_number", "median"]

ENDINGS = ("caller hung up", "agent ended", "transfer", "drain", "error")
"""How a call can end, as the records name it."""


@dataclass(frozen=True, slots=True)
class Turn:
    """One agent reply and the caller speech that asked for it (turn 0 is the greeting)."""

    turn: int
    at_s: float
    caller_transcript: str | None = None  # when speech-to-text reports it
    agent_text: str = ""  # as the agent streamed it
    heard_text: str | None = None  # what the caller actually heard (ReplyHeard)
    interrupted: bool | None = None
    context_ids: str = ""  # the TTS contexts that voiced it, comma-separated
    end_of_turn_ms: float | None = None  # silence the caller's turn waited for before it ended
    stt_ms: float | None = None
    llm_first_token_ms: float | None = None  # turn start to the agent's first text
    tts_first_audio_ms: float | None = None  # first text sent to the TTS to its first audio back
    first_audio_sent_ms: float | None = None  # turn start to the first frame sent to the caller
    first_audio_played_ms: float | None = None  # when the carrier reports it


@dataclass(frozen=True, slots=True)
class BargeIn:
    """The caller spoke over the agent: speech onset, when playback was cleared, and the gap."""

    seq: int
    turn: int
    onset_s: float
    clear_s: float | None
    reaction_ms: float


@dataclass(frozen=True, slots=True)
class Reconnect:
    """The TTS socket came back after a loss."""

    seq: int
    lost_s: float | None
    connected_s: float
    reason: str = ""

    @property
    def downtime_ms(self) -> float | None:
        return None if self.lost_s is None else (self.connected_s - self.lost_s) * 1000


@dataclass(frozen=True, slots=True)
class Segment:
    """A span on the timeline: ``caller`` speech, ``agent`` audio as played (per context), or a ``clear``."""

    seq: int
    kind: str
    start_s: float
    end_s: float
    context_id: str | None = None
    turn: int | None = None


@dataclass(slots=True)
class StereoAudio:
    """The call's sound, kept only with ``record_audio``: caller PCM in arrival order, and each agent
    frame (PCM, 20 ms) at the time the caller heard it, both at the call's ``rate``. Written as a
    WAV by the writer."""

    caller: list[bytes] = field(default_factory=list)
    agent: list[tuple[float, bytes]] = field(default_factory=list)  # (play start in s, PCM16 frame)
    rate: int = 8000


@dataclass(frozen=True, slots=True)
class CallRecord:
    """Everything kept about one call; submitted again as the call goes on (the latest wins)."""

    call_id: str
    stream_id: str
    carrier: str
    from_number: str | None
    to_number: str | None
    started_at: datetime
    ended_at: datetime | None = None
    ended_how: str | None = None
    end_detail: str = ""
    turns: tuple[Turn, ...] = ()
    barge_ins: tuple[BargeIn, ...] = ()
    reconnects: tuple[Reconnect, ...] = ()
    segments: tuple[Segment, ...] = ()
    audio: StereoAudio | None = None
    # why the echo canceller the call's echo called for was first refused ("budget": the worker ran as many as
    # it may; "lag": it lagged behind its calls or was busy), even if one ran later; "": never refused
    aec_refused: str = ""

    @property
    def duration_s(self) -> float | None:
        return None if self.ended_at is None else (self.ended_at - self.started_at).total_seconds()

    @property
    def median_reply_ms(self) -> float | None:
        """Median time from a caller turn's start to its first audio (the greeting is not a reply)."""
        return median([t.first_audio_sent_ms for t in self.turns if t.turn > 0 and t.first_audio_sent_ms is not None])


def median(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def mask_number(number: str | None) -> str | None:
    """A phone number as lists show it: enough to tell calls apart, not enough to dial."""
    if not number:
        return number
    if len(number) <= 4:
        return "•" * len(number)
    keep_head = 2 if number.startswith("+") else 0
    return number[:keep_head] + "•" * (len(number) - keep_head - 4) + number[-4:]
