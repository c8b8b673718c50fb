"""Twilio's outbound playback as a pure model with explicit times (no clock, no socket).

Twilio queues every `media` payload it gets and plays the queue out at line rate: 8000 µ-law bytes
a second, in 20 ms packets. Because the rate is fixed, the moment each byte will play is known the
instant it arrives: right after the audio already queued, or at arrival (plus an optional jitter-buffer
delay) when the line was idle. So this model schedules on arrival and never needs to tick:

- a `mark` is due when the audio queued before it has played, or at once if nothing is queued;
- `clear` drops everything not yet sent to the handset: the 20 ms packet in flight finishes, the rest
  goes, and every pending mark is echoed immediately;
- the stream ending drops the rest without echoes.

The asyncio client feeds it with its clock and sends the echoes it reports; tests drive it with
made-up times.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import groupby

import numpy as np

from bridge.core.audio import ulaw_to_pcm
from bridge.tools.simulator.audio import FRAME_SECONDS, SAMPLE_RATE

__all__ = ["ClearRecord", "MarkEcho", "PlaybackBuffer", "Played", "Run", "frames", "render", "runs"]

_EPS = 1e-9


@dataclass(frozen=True, slots=True)
class Played:
    """A piece of agent audio scheduled to play from `start`; pieces sharing `run_start` are gapless."""

    start: float
    ulaw: bytes
    seq: int  # order of the server message it came from (clears are numbered in the same sequence)
    run_start: float  # the run's 20 ms packet grid starts here

    @property
    def end(self) -> float:
        return self.start + len(self.ulaw) / SAMPLE_RATE


@dataclass(frozen=True, slots=True)
class MarkEcho:
    """A mark to send back at `at`; `cleared` when a clear released it before its audio played."""

    at: float
    name: str
    cleared: bool


@dataclass(frozen=True, slots=True)
class ClearRecord:
    """A clear received at `at`; audio from messages with a lower `seq` must not play after `cut`."""

    at: float
    seq: int
    cut: float


@dataclass(frozen=True, slots=True)
class Run:
    """A stretch of uninterrupted agent playback."""

    start: float
    end: float


class PlaybackBuffer:
    """Twilio's per-stream playback queue. Call its methods in time order."""

    def __init__(self, start_delay: float = 0.0) -> None:
        self.start_delay = start_delay
        self.played: list[Played] = []  # as scheduled; trimmed by clear and close
        self.clears: list[ClearRecord] = []
        self._pending: deque[tuple[float, str]] = deque()  # (due, name), due times non-decreasing
        self._seq = 0
        self._closed = False

    @property
    def tail(self) -> float | None:
        """When the queued audio will have finished playing (None before any audio)."""
        return self.played[-1].end if self.played else None

    def push_audio(self, at: float, ulaw: bytes) -> None:
        """Queue a media payload received at `at`."""
        seq = self._next_seq()
        if self._closed or not ulaw:
            return
        tail = self.tail
        if tail is not None and at <= tail:
            start, run_start = tail, self.played[-1].run_start
        else:
            start = run_start = at + self.start_delay
        self.played.append(Played(start, bytes(ulaw), seq, run_start))

    def heard_between(self, t0: float, t1: float) -> bytes:
        """The agent's µ-law as it plays over ``[t0, t1)`` (µ-law silence where nothing plays):
        what a speakerphone returns as echo. Reads from the newest piece back, so it costs the
        few pieces near ``t1``, not the whole call."""
        n = round((t1 - t0) * SAMPLE_RATE)
        out = bytearray(b"\xff" * n)  # µ-law 0xFF is silence
        for piece in reversed(self.played):
            if piece.end <= t0:
                break
            lo = max(0, round((piece.start - t0) * SAMPLE_RATE))
            hi = min(n, round((piece.end - t0) * SAMPLE_RATE))
            if hi > lo:
                skip = round((t0 - piece.start) * SAMPLE_RATE) + lo
                out[lo:hi] = piece.ulaw[skip : skip + hi - lo]
        return bytes(out)

    def push_mark(self, at: float, name: str) -> None:
        """Queue a mark received at `at` behind the audio sent before it."""
        self._next_seq()
        if self._closed:
            return
        tail = self.tail
        self._pending.append((at if tail is None or tail <= at else tail, name))

    def clear(self, at: float) -> list[MarkEcho]:
        """Drop unplayed audio and return every pending mark, echoed at `at`."""
        seq = self._next_seq()
        echoes = [MarkEcho(min(due, at), name, due > at) for due, name in self._pending]
        self._pending.clear()
        cut = self._cut_time(at)
        self._truncate(cut)
        self.clears.append(ClearRecord(at, seq, cut))
        return echoes

    def close(self, at: float) -> list[str]:
        """The stream ended at `at`: nothing plays after it; returns the marks that will never echo."""
        dropped = [name for _, name in self._pending]
        self._pending.clear()
        self._truncate(at)
        self._closed = True
        return dropped

    def due_marks(self, now: float) -> list[MarkEcho]:
        """Pop the marks whose audio has played by `now`."""
        out: list[MarkEcho] = []
        while self._pending and self._pending[0][0] <= now:
            due, name = self._pending.popleft()
            out.append(MarkEcho(due, name, False))
        return out

    def next_mark_due(self) -> float | None:
        """When the next pending mark becomes due, so the shell knows when to wake."""
        return self._pending[0][0] if self._pending else None

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _cut_time(self, at: float) -> float:
        """The end of the 20 ms packet in flight at `at` (that packet is already on its way)."""
        tail = self.tail
        if tail is None or tail <= at:
            return at
        run_start = self.played[-1].run_start
        if run_start > at:  # still in the jitter-buffer delay: nothing has gone out yet
            return at
        k = math.ceil((at - run_start) / FRAME_SECONDS - _EPS)
        return min(run_start + k * FRAME_SECONDS, tail)

    def _truncate(self, cut: float) -> None:
        while self.played and self.played[-1].start >= cut - _EPS:
            self.played.pop()
        if self.played and self.played[-1].end > cut + _EPS:
            last = self.played.pop()
            keep = round((cut - last.start) * SAMPLE_RATE)
            self.played.append(Played(last.start, last.ulaw[:keep], last.seq, last.run_start))


def runs(played: Sequence[Played]) -> list[Run]:
    """Merge gapless pieces into runs: when agent audio started and stopped being played."""
    out: list[Run] = []
    for run_start, group in groupby(played, key=lambda p: p.run_start):
        *_, last = group
        out.append(Run(run_start, last.end))
    return out


def frames(played: Sequence[Played]) -> Iterator[tuple[float, int]]:
    """Each 20 ms packet played, as (start time, lowest message seq of the audio in it)."""
    for run_start, group in groupby(played, key=lambda p: p.run_start):
        oldest: dict[int, int] = {}
        for piece in group:
            first = math.floor((piece.start - run_start) / FRAME_SECONDS + _EPS)
            last = math.ceil((piece.end - run_start) / FRAME_SECONDS - _EPS)
            for k in range(first, last):
                oldest[k] = min(oldest.get(k, piece.seq), piece.seq)
        for k in sorted(oldest):
            yield run_start + k * FRAME_SECONDS, oldest[k]


def render(played: Sequence[Played], until: float) -> bytes:
    """The agent audio as heard, PCM16 on the call timeline from 0 to `until` (silence elsewhere)."""
    out = np.zeros(max(0, round(until * SAMPLE_RATE)), dtype="<i2")
    for run_start, group in groupby(played, key=lambda p: p.run_start):
        pcm = np.frombuffer(ulaw_to_pcm(b"".join(p.ulaw for p in group)), dtype="<i2")
        offset = round(run_start * SAMPLE_RATE)
        room = max(0, len(out) - offset)
        out[offset : offset + min(room, len(pcm))] = pcm[:room]
    return out.tobytes()

