"""Every deadline a call keeps, in one place: what the shell's one timer is set to.

The core has no clock (see ``bridge.core.call``): it names the moments at which time alone
would change something, and the shell sends a `Tick` at the earliest of them (websockets'
``close_expected()`` plays the same role for its shell). Each kind of deadline is a `Timer`.
``Call.deadlines`` computes every running timer from the state that owns it, in one place, and
both ``Call.next_deadline`` (what the shell waits for) and a `Tick` (what has run out) read
that one computation, so the shell's timer and the core's own checks can never disagree.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

__all__ = ["EPS", "Timer", "is_due", "soonest"]

EPS = 1e-6
"""Deadlines are compared with this slack, so float rounding (or a timer firing a hair early)
cannot stall a deadline that is really due."""


class Timer(enum.Enum):
    """The deadlines of one call, in the order a `Tick` handles them when several are due."""

    START = "start"  # the carrier has not sent ``start`` since the socket opened
    DRAIN = "drain"  # a closed TTS context owes its ``isFinal``
    FIRST_AUDIO = "first audio"  # a finished reply's context owes its first audio (before a keep-alive:
    # a context given up on is closed, not kept alive)
    AGENT = "agent"  # the agent owes its next piece of text, or its end
    PAUSE = "pause"  # a paused reply resumes if no caller audio settles the pause
    TURN_END = "end of turn"  # the caller's pause has lasted long enough: their turn is over
    KEEPALIVE = "keep-alive"  # an open TTS context nears the server's inactivity timeout
    PLAYOUT = "playout"  # the carrier's buffer needs topping up, or a reply has played out
    IDLE = "idle"  # the caller has been silent since the agent's last audio: prompt them, or say goodbye
    ENDING = "ending"  # the bridge ends the call: the goodbye's last mark is overdue, or the drain's end came


def soonest(times: Iterable[float | None]) -> float | None:
    """The earliest of ``times`` that is set (None: none is). Asked after every event, so a plain
    loop: building a list for ``min`` costs three times as much."""
    best = None
    for at in times:
        if at is not None and (best is None or at < best):
            best = at
    return best


def is_due(now: float, deadline: float | None) -> bool:
    """Whether a timer running until ``deadline`` (None: not running) has run out by ``now``."""
    return deadline is not None and now >= deadline - EPS
