"""The benchmark's numbers for one call, and how many calls' numbers are combined.

Definitions (all times in seconds of call time, from the moment the phone sent ``start``; the
playback schedule is the simulator's model of Twilio's queue, `bridge.tools.simulator.playback`):

* **Reply**: the agent audio that follows one turn: the greeting (from 0) or the answer to the
  caller's n-th utterance (from the VAD's end-of-speech decision, see `bench.scenario`). It lasts
  until the VAD's next start-of-speech decision (a barge-in or the caller's next question) or the
  call's end. Audio runs that start in that span, or within ``CUT_GRACE_S`` after it (playback
  the ``clear`` had not reached yet), belong to it.
* **Frame lateness**: for each 20 ms frame of a reply, when it started playing minus when it would
  have started had the reply played without a gap since its first frame. That is the sum of the
  playback gaps before it in the same reply: 0 while the bridge keeps the caller's queue fed.
* **Underruns**: the simulator's count (`CallReport.underruns`): gaps of at most 300 ms inside
  agent playback with no ``clear`` around them.
* **Barge-in reaction**: `CallReport.barge_ins`: ``clear`` received minus the caller's audible
  onset (first 20 ms frame above -40 dBFS). **VAD→clear** is the part the bridge adds: ``clear``
  received minus the moment the frame that completes the VAD's start window was sent.
* **Greeting overhead**: greeting latency (first agent audio played, from ``start`` sent) minus the
  TTS's time to first byte. **Reply overhead**: the reply's first audio minus the moment the frame
  that completes the VAD's end-of-speech window was sent, minus the TTS's time to first byte.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.scenario import Scenario, VadDecision
from bridge.tools.simulator import CallReport, PhoneCall, Run

__all__ = ["CUT_GRACE_S", "DECISION_SLACK_S", "CallResult", "analyse_call", "percentiles", "weighted_percentiles"]

CUT_GRACE_S = 0.2
DECISION_SLACK_S = 0.04
"""How far the bridge's end of a turn may come before this analysis's own: two frames. The load
predicts the bridge's decisions with a listener of its own on the same line (`bench.scenario`),
but the bridge's has lived through the call (the agent's playback in its echo guard, its noise
floor), and the two may disagree by a frame on when 600 ms of silence has passed: a reply that
starts 590 ms after the caller's voice stopped is neither "over the caller" nor missing."""
MIN_REPLY_ROOM_S = 1.0  # a reply is expected only if the caller leaves at least this much time
FRAME_S = 0.02


@dataclass
class CallResult:
    """What one call measured, in milliseconds; ``failures`` names what went wrong, if anything."""

    seconds: float = 0.0
    lateness_ms: Counter[int] = field(default_factory=Counter)  # whole ms -> frames
    underruns: int = 0
    reaction_ms: list[float] = field(default_factory=list)
    vad_to_clear_ms: list[float] = field(default_factory=list)
    greeting_ms: list[float] = field(default_factory=list)
    greeting_overhead_ms: list[float] = field(default_factory=list)
    reply_ms: list[float] = field(default_factory=list)
    reply_overhead_ms: list[float] = field(default_factory=list)
    send_lag_ms: float = 0.0
    failures: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["lateness_ms"] = {str(k): v for k, v in self.lateness_ms.items()}
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CallResult:
        data = dict(data)
        data["lateness_ms"] = Counter({int(k): v for k, v in data["lateness_ms"].items()})
        return cls(**data)


def analyse_call(phone: PhoneCall, scenario: Scenario, ttfb_s: float) -> CallResult:
    report = phone.report()
    result = CallResult(seconds=report.duration, underruns=len(report.underruns))
    result.send_lag_ms = report.max_send_lag * 1000
    runs = phone.log.runs
    end = report.duration
    for start, stop in _reply_spans(scenario.decisions, end):
        earliest = start - DECISION_SLACK_S if start else start  # a reply may beat our decision by a frame
        mine = [r for r in runs if earliest <= r.start < stop + CUT_GRACE_S]
        _lateness(mine, result.lateness_ms)
        if start == 0.0:
            if mine:
                latency = mine[0].start
                result.greeting_ms.append(latency * 1000)
                result.greeting_overhead_ms.append((latency - ttfb_s) * 1000)
            else:
                result.failures.append("no greeting")
        elif mine:
            latency = mine[0].start - start
            result.reply_ms.append(latency * 1000)
            result.reply_overhead_ms.append((latency - ttfb_s) * 1000)
        elif stop - start >= MIN_REPLY_ROOM_S:
            result.failures.append("no reply")
    _barge_ins(report, scenario.decisions, result)
    _faults(phone, report, runs, scenario.decisions, result)
    return result


def _reply_spans(decisions: Sequence[VadDecision], end: float) -> list[tuple[float, float]]:
    """(reply start, reply end) for the greeting and each end-of-speech decision."""
    starts = [0.0] + [d.at for d in decisions if not d.started and d.at < end]
    spans = []
    for s in starts:
        stop = next((d.at for d in decisions if d.started and d.at > s), end)
        spans.append((s, min(stop, end)))
    return spans


def _lateness(runs: Sequence[Run], into: Counter[int]) -> None:
    if not runs:
        return
    played = 0.0
    first = runs[0].start
    for run in runs:
        late_ms = round(max(0.0, run.start - first - played) * 1000)
        into[late_ms] += max(1, round((run.end - run.start) / FRAME_S))
        played += run.end - run.start


def _barge_ins(report: CallReport, decisions: Sequence[VadDecision], result: CallResult) -> None:
    starts = [d.at for d in decisions if d.started]
    for barge in report.barge_ins:
        if barge.clear_at is None:
            result.failures.append("missed barge-in")
            continue
        result.reaction_ms.append((barge.clear_at - barge.onset) * 1000)
        decided = next((t for t in starts if barge.onset - 1e-6 <= t <= barge.clear_at + 1e-6), None)
        if decided is not None:
            result.vad_to_clear_ms.append((barge.clear_at - decided) * 1000)


def _faults(
    phone: PhoneCall, report: CallReport, runs: Sequence[Run], decisions: Sequence[VadDecision], result: CallResult
) -> None:
    log = phone.log
    if log.server_closed is not None and (log.stop_sent is None or log.server_closed < log.stop_sent):
        result.failures.append(f"server closed the call ({log.close_code})")
    if report.malformed:
        result.failures.append("malformed message from the bridge")
    if any(report.leaked_frames):
        result.failures.append("audio played after a clear")
    if report.unprompted_clears:
        result.failures.append("clear without caller speech")
    # Agent audio that starts while the caller is talking (after the barge-in decision) was never cut.
    talking = _caller_turns(decisions, report.duration)
    if any(a + CUT_GRACE_S <= r.start < b - DECISION_SLACK_S for r in runs for a, b in talking):
        result.failures.append("agent audio over the caller")


def _caller_turns(decisions: Sequence[VadDecision], end: float) -> list[tuple[float, float]]:
    turns, began = [], None
    for d in decisions:
        if d.started:
            began = d.at
        elif began is not None:
            turns.append((began, d.at))
            began = None
    if began is not None:
        turns.append((began, end))
    return turns


def percentiles(values: Iterable[float], qs: Sequence[float] = (50, 95, 99)) -> list[float | None]:
    data = np.asarray(list(values), dtype=float)
    if not len(data):
        return [None for _ in qs]
    return [round(float(np.percentile(data, q)), 2) for q in qs]


def weighted_percentiles(counts: Counter[int], qs: Sequence[float] = (50, 99)) -> list[float | None]:
    """Percentiles of a value -> count table (nearest rank: the value below which q % of weight lies)."""
    total = sum(counts.values())
    if not total:
        return [None for _ in qs]
    out: list[float | None] = []
    ordered = sorted(counts.items())
    for q in qs:
        rank, seen = q / 100 * total, 0
        for value, n in ordered:
            seen += n
            if seen >= rank:
                out.append(float(value))
                break
    return out
