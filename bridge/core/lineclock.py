"""When each chunk of the caller's line was spoken, on the playout clock, whenever it arrived.

Caller frames reach us late by a varying amount: network jitter, and a worker whose event loop
falls behind its calls reads a second of them at once. Their arrival times then say little about
when they were spoken, and whatever lines them up against what we played (the echo canceller's
reference, the echo guard's window) reads the wrong stretch of playback: a loop that stalled for
0.8-1.5 s had the echo guard take the echo in the frames read afterwards for the caller, and
pause the agent. But the line's samples are evenly spaced: sample *n* was spoken ``n / rate``
after the line began, and the earliest time that can have been is the truest (a frame is only
ever delayed, never early).
"""

from __future__ import annotations

from collections import deque
from typing import Final

__all__ = ["SLACK_S", "LineClock"]

_WINDOW_S: Final = 2.0  # the line's clock follows the earliest arrival of the last this many seconds
SLACK_S: Final = 0.005  # and moves later only when that is this much later (a gap, or clock drift)


class LineClock:
    """The line's samples evenly spaced after an anchor: the earliest time its first sample can
    have arrived, by the arrivals of the last `_WINDOW_S`. The anchor moves earlier at once, and
    later only by more than `SLACK_S` (frames the carrier never sent, or its clock running slow),
    so a jittery line stays contiguous."""

    __slots__ = ("_anchor", "_arrivals", "_pos", "_rate")

    def __init__(self, rate: int) -> None:
        self._rate = rate
        self._anchor = float("inf")  # when the line's first sample arrived, by the earliest arrival
        self._arrivals: deque[tuple[float, float]] = deque()  # (arrival, anchor it implies), rising anchors
        self._pos = 0  # samples of the line seen

    def start(self, count: int, at: float) -> float:
        """When the chunk of ``count`` samples whose last one arrived at ``at`` began."""
        offset = at - (self._pos + count) / self._rate
        while self._arrivals and self._arrivals[-1][1] >= offset:
            self._arrivals.pop()
        self._arrivals.append((at, offset))
        while self._arrivals[0][0] < at - _WINDOW_S:
            self._arrivals.popleft()
        earliest = self._arrivals[0][1]
        if earliest < self._anchor or earliest - self._anchor > SLACK_S:
            self._anchor = earliest
        start = self._anchor + self._pos / self._rate
        self._pos += count
        return start

    def restart(self) -> None:
        """The line was not followed for a while: anchor afresh, as at its start."""
        self._anchor = float("inf")
        self._arrivals.clear()
