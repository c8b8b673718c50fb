"""What one simulated call recorded, its report, and the human-readable timeline.

All times are seconds from the moment `start` was sent. The report is computed after the fact from
the log and the playback schedule (definitions in `bridge.tools.simulator.metrics`), so the live CLI, the
e2e tests and the benchmark read the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bridge.tools.simulator.audio import Timeline
from bridge.tools.simulator.metrics import (
    BargeIn,
    Reply,
    Underrun,
    barge_ins,
    leaked_frames,
    replies,
    underruns,
    unprompted_clears,
)
from bridge.tools.simulator.playback import PlaybackBuffer, Run, runs

__all__ = ["CallLog", "CallReport", "build_report"]

LAG_WARNING = 0.010  # beyond this the simulator itself was late and its timings lose precision


@dataclass
class CallLog:
    """Everything the simulator saw, as (time, ...) entries; times from `start` sent."""

    caller: Timeline
    playback: PlaybackBuffer
    media_received: list[tuple[float, int]] = field(default_factory=list)  # (time, µ-law bytes)
    marks_received: list[tuple[float, str]] = field(default_factory=list)
    marks_sent: list[tuple[float, str, bool]] = field(default_factory=list)  # (time, name, by a clear)
    marks_unechoed: list[str] = field(default_factory=list)
    malformed: list[tuple[float, str]] = field(default_factory=list)
    warnings: list[tuple[float, str]] = field(default_factory=list)
    server_closed: float | None = None
    close_code: int | None = None
    close_reason: str = ""
    stop_sent: float | None = None
    ended_at: float | None = None
    max_send_lag: float = 0.0  # worst lateness of a caller frame or mark echo; large = numbers suspect

    @property
    def clears(self) -> list[float]:
        """When each `clear` arrived."""
        return [c.at for c in self.playback.clears]

    @property
    def runs(self) -> list[Run]:
        return runs(self.playback.played)

    @property
    def playback_started(self) -> list[float]:
        """When agent audio started being played, once per gapless run."""
        return [r.start for r in self.runs]

    @property
    def playback_stopped(self) -> list[float]:
        """When each run stopped: its audio ran out, a clear cut it, or the call ended."""
        return [r.end for r in self.runs]


@dataclass(frozen=True)
class CallReport:
    """The measurements of one call. Latencies in seconds; None when the event did not happen."""

    duration: float
    greeting_latency: float | None  # first agent audio played, from `start` sent
    barge_ins: tuple[BargeIn, ...]
    replies: tuple[Reply, ...]
    leaked_frames: tuple[int, ...]  # per clear; must all be 0
    underruns: tuple[Underrun, ...]
    unprompted_clears: tuple[float, ...]
    agent_seconds: float  # agent audio actually played
    media_messages: int
    marks_received: int
    marks_echoed: int
    marks_cleared: int  # echoed because of a clear, not because their audio played
    marks_unechoed: int  # still pending when the call ended
    malformed: tuple[tuple[float, str], ...]
    server_closed: float | None
    max_send_lag: float
    events: tuple[tuple[float, str], ...] = field(repr=False)

    @property
    def missed_barge_ins(self) -> int:
        return sum(1 for b in self.barge_ins if b.missed)

    def timeline_text(self, marks: bool = True) -> str:
        """One line per event, e.g. `  1.612 clear (barge-in reaction 112 ms)`."""
        return "\n".join(
            f"{t:7.3f} {text}" for t, text in self.events if marks or not text.startswith("mark ")
        )


def build_report(log: CallLog) -> CallReport:
    """Compute every metric from the log and render the timeline."""
    played = log.playback.played
    all_runs = runs(played)
    segments = log.caller.segments
    barge, answers = barge_ins(segments, all_runs, log.playback.clears), replies(segments, all_runs)
    starved, leaks = underruns(all_runs, log.clears), leaked_frames(played, log.playback.clears)
    unprompted = unprompted_clears(segments, log.clears)
    events = _events(log, all_runs, barge, answers, starved, leaks, unprompted)
    return CallReport(
        duration=log.ended_at if log.ended_at is not None else max((r.end for r in all_runs), default=0.0),
        greeting_latency=all_runs[0].start if all_runs else None,
        barge_ins=tuple(barge),
        replies=tuple(answers),
        leaked_frames=tuple(leaks),
        underruns=tuple(starved),
        unprompted_clears=tuple(unprompted),
        agent_seconds=sum(len(p.ulaw) for p in played) / 8000,
        media_messages=len(log.media_received),
        marks_received=len(log.marks_received),
        marks_echoed=len(log.marks_sent),
        marks_cleared=sum(1 for _, _, by_clear in log.marks_sent if by_clear),
        marks_unechoed=len(log.marks_unechoed),
        malformed=tuple(log.malformed),
        server_closed=log.server_closed,
        max_send_lag=log.max_send_lag,
        events=tuple(sorted(events, key=lambda e: e[0])),
    )


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def _events(
    log: CallLog,
    all_runs: list[Run],
    barge: list[BargeIn],
    answers: list[Reply],
    starved: list[Underrun],
    leaks: list[int],
    unprompted: list[float],
) -> list[tuple[float, str]]:
    events: list[tuple[float, str]] = [(0.0, "start")]
    events += _run_events(log, all_runs, answers, starved)
    events += _caller_events(log, barge)
    events += _clear_events(log, barge, leaks, unprompted)
    events += [(t, f"mark {name} received") for t, name in log.marks_received]
    events += [(t, f"mark {n} echoed" + (" by clear, not played" if c else "")) for t, n, c in log.marks_sent]
    events += [(t, f"malformed message ignored: {reason}") for t, reason in log.malformed]
    events += [(t, f"warning: {text}") for t, text in log.warnings]
    events += _end_events(log)
    return events


def _run_events(
    log: CallLog, all_runs: list[Run], answers: list[Reply], starved: list[Underrun]
) -> list[tuple[float, str]]:
    reply_at = {a.reply_at: a for a in answers if a.reply_at is not None}
    resumed = {u.at + u.gap: u for u in starved}
    cuts = [c.cut for c in log.playback.clears]
    events: list[tuple[float, str]] = []
    for i, run in enumerate(all_runs):
        text = "agent audio starts"
        if i == 0:
            text += f" (greeting latency {_ms(run.start)})"
        elif run.start in reply_at:
            answer = reply_at[run.start]
            text += f" (reply latency {_ms(answer.latency or 0.0)} after {answer.label})"
        elif run.start in resumed:
            text = f"agent audio resumes (UNDERRUN: {resumed[run.start].gap * 1000:.1f} ms gap)"
        events.append((run.start, text))
        cleared = any(abs(run.end - cut) < 1e-6 for cut in cuts)
        stop = "agent audio stops" + (" (cleared)" if cleared else "")
        events.append((run.end, stop))
    return events


def _caller_events(log: CallLog, barge: list[BargeIn]) -> list[tuple[float, str]]:
    by_onset = {b.onset: b for b in barge}
    events: list[tuple[float, str]] = []
    for seg in log.caller.segments:
        if seg.onset is None or seg.end is None:
            continue
        text = f"caller speaks ({seg.label})"
        b = by_onset.get(seg.onset)
        if b is not None:
            text += " over the agent" + (" - barge-in MISSED (no clear within 2 s)" if b.missed else "")
        events += [(seg.onset, text), (seg.end, f"caller stops ({seg.label})")]
    return events


def _clear_events(
    log: CallLog, barge: list[BargeIn], leaks: list[int], unprompted: list[float]
) -> list[tuple[float, str]]:
    reaction = {b.clear_at: b for b in barge if b.clear_at is not None}
    events: list[tuple[float, str]] = []
    for i, at in enumerate(log.clears):
        notes = []
        if at in reaction:
            b = reaction[at]
            notes.append(f"barge-in reaction {_ms(b.reaction or 0.0)}")
            if b.talk_over >= 0.0005:
                notes.append(f"agent still played {_ms(b.talk_over)} over the caller after it")
        elif at in unprompted:
            notes.append("no caller speech before it")
        if i < len(leaks) and leaks[i]:
            notes.append(f"LEAK: {leaks[i]} packets of earlier audio played after it")
        events.append((at, "clear" + (f" ({'; '.join(notes)})" if notes else "")))
    return events


def _end_events(log: CallLog) -> list[tuple[float, str]]:
    events: list[tuple[float, str]] = []
    if log.server_closed is not None:
        reason = f" {log.close_reason}" if log.close_reason else ""
        events.append((log.server_closed, f"server closed the socket (code {log.close_code}{reason})"))
    if log.stop_sent is not None:
        events.append((log.stop_sent, "stop (call ends)"))
    end = log.ended_at if log.ended_at is not None else 0.0
    if log.marks_unechoed:
        events.append((end, f"{len(log.marks_unechoed)} marks never echoed (call ended first)"))
    if log.max_send_lag > LAG_WARNING:
        events.append((end, f"note: simulator sent caller audio up to {_ms(log.max_send_lag)} late"))
    return events
