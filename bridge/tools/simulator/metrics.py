"""The call metrics, each defined on the function that computes it.

Pure functions over the playback schedule and the caller's timeline, all times in seconds from the
moment `start` was sent, so the live CLI, the e2e tests and the benchmark share one definition.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

from bridge.tools.simulator.audio import FRAME_SECONDS, Segment
from bridge.tools.simulator.playback import ClearRecord, Played, Run, frames

__all__ = [
    "BARGE_IN_LEAD",
    "BARGE_IN_WINDOW",
    "UNDERRUN_GAP",
    "BargeIn",
    "Reply",
    "Underrun",
    "barge_ins",
    "leaked_frames",
    "overlap",
    "replies",
    "underruns",
    "unprompted_clears",
]

BARGE_IN_LEAD = 0.05  # caller speech this long before agent audio starts still counts as a barge-in
BARGE_IN_WINDOW = 2.0  # a clear later than this after the onset does not count: the barge-in was missed
UNDERRUN_GAP = 0.3  # a playback gap at most this long, with no clear, is starvation, not a new reply
_EPS = 1e-9


@dataclass(frozen=True, slots=True)
class BargeIn:
    """Caller speech that began while the agent was playing (or at most 50 ms before it started)."""

    label: str
    onset: float
    clear_at: float | None  # first clear within 2 s of the onset; None = missed
    talk_over: float  # agent audio heard over the caller after the clear took effect (or the onset if missed)

    @property
    def missed(self) -> bool:
        return self.clear_at is None

    @property
    def reaction(self) -> float | None:
        return None if self.clear_at is None else self.clear_at - self.onset


@dataclass(frozen=True, slots=True)
class Reply:
    """The agent's answer to one caller segment."""

    label: str
    end: float  # caller's end: end of the segment's last frame above -40 dBFS
    reply_at: float | None  # first agent audio starting after `end` (before the caller speaks again)

    @property
    def latency(self) -> float | None:
        return None if self.reply_at is None else self.reply_at - self.end


@dataclass(frozen=True, slots=True)
class Underrun:
    """Playback starved at `at` for `gap` seconds while more audio of the same reply was coming."""

    at: float
    gap: float


def _playing_at(all_runs: Sequence[Run], t: float) -> bool:
    return any(r.start - BARGE_IN_LEAD <= t < r.end for r in all_runs)


def overlap(all_runs: Sequence[Run], a: float, b: float) -> float:
    """Seconds of agent audio played between `a` and `b`."""
    total = sum(max(0.0, min(r.end, b) - max(r.start, a)) for r in all_runs)
    return total if total > 1e-6 else 0.0  # float dust from run ends that equal `a` is not audio


def barge_ins(
    segments: Sequence[Segment], all_runs: Sequence[Run], clears: Sequence[ClearRecord]
) -> list[BargeIn]:
    """A barge-in is a caller segment whose onset (segment start + first frame above -40 dBFS) falls
    while agent audio plays, or within 50 ms before it starts. Its reaction is the first clear
    received in [onset, onset + 2 s] minus the onset; no such clear means it was missed. Talk-over
    counts agent audio the caller still heard until their end, from the end of the packet in flight
    at the clear (from the onset if missed): audio the bridge sent after clearing, or never cleared."""
    out: list[BargeIn] = []
    for seg in segments:
        onset, end = seg.onset, seg.end
        if onset is None or end is None or not _playing_at(all_runs, onset):
            continue
        clear = next((c for c in clears if onset <= c.at <= onset + BARGE_IN_WINDOW), None)
        talk_over = overlap(all_runs, onset if clear is None else clear.cut, end)
        out.append(BargeIn(seg.label, onset, None if clear is None else clear.at, talk_over))
    return out


def replies(segments: Sequence[Segment], all_runs: Sequence[Run]) -> list[Reply]:
    """Reply latency: the first agent audio that starts at or after the caller's end (end of the last
    frame above -40 dBFS) and before the caller's next onset, minus that end."""
    spoken = [(s.label, s.bounds[0] + s.start, s.bounds[1] + s.start) for s in segments if s.bounds]
    out: list[Reply] = []
    for label, _, end in spoken:
        limit = min((onset for _, onset, _ in spoken if onset > end), default=float("inf"))
        reply_at = next((r.start for r in all_runs if end <= r.start < limit), None)
        out.append(Reply(label, end, reply_at))
    return out


def leaked_frames(played: Sequence[Played], clear_records: Sequence[ClearRecord]) -> list[int]:
    """Per clear: 20 ms packets that started playing at or after the clear arrived yet carry audio
    from a message received before it. Twilio never does this, so anything but 0 is a simulator bug;
    the check guards the model the other metrics stand on."""
    packets = list(frames(played))
    return [sum(1 for start, seq in packets if start >= c.at - _EPS and seq < c.seq) for c in clear_records]


def underruns(
    all_runs: Sequence[Run], clears: Sequence[float], max_gap: float = UNDERRUN_GAP
) -> list[Underrun]:
    """A gap of at most 300 ms between two runs, with no clear from the last packet of the first run
    to the start of the second: the server had more of the same reply but sent it too late."""
    out: list[Underrun] = []
    for a, b in pairwise(all_runs):
        gap = b.start - a.end
        cleared = any(a.end - FRAME_SECONDS - _EPS <= c <= b.start for c in clears)
        if 0 < gap <= max_gap and not cleared:
            out.append(Underrun(a.end, gap))
    return out


def unprompted_clears(segments: Sequence[Segment], clears: Sequence[float]) -> list[float]:
    """Clears with no caller onset in the 2 s before them: the bridge reacted to something else
    (noise, its own echo, a bug)."""
    onsets = [s.onset for s in segments if s.onset is not None]
    return [c for c in clears if not any(o <= c <= o + BARGE_IN_WINDOW for o in onsets)]
