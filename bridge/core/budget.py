"""How many echo cancellers one worker runs at once; past that, a call with echo keeps the level guard alone.

A call's canceller (``bridge.core.aec``: AEC3 and the linear canceller beside it) costs about
3.5 % of a core while its agent talks. One worker carries about 20 of them; past that its event
loop falls behind its calls, what played and what the core believes played drift apart, and the
cancellers, fed the wrong moments, let the echo through: at 30 and 100 speakerphone calls every
call stopped its agent for its own echo, where the level guard alone (``bridge.core.echo``,
``aec.mode = "off"``) made no false barge-in at 30. More calls must never make the agent
interrupt itself, so a worker hands out at most ``aec.max_engaged`` canceller slots, and a call
judged echoic while none is free runs the level guard alone until one is (it asks again every
``bridge.core.aec.RETRY_S`` while its agent talks; its metrics say it was refused:
`EchoCanceller.refused`). Nor does a worker whose loop lags take on cancellers: while its calls'
pacing timers fire `LATE_S` late or more, and for `CALM_S` after, a call judged echoic keeps
the level guard alone (asking again as above), and a canceller already running skips
its work (its CPU goes back to the worker, whose calls the level guard alone carried with no
false barge-in where the cancellers' load paused them) until the worker has caught up. A worker
whose process is busy `BUSY_MAX` of the time or more counts as lagging too, before its timers
say so: 100 speakerphone calls kept one worker 0.71 busy with no canceller and 4 of them paused
their agent for its echo; cancellers on top (8 or 20 of them) tipped it over, and 35-44 of the
100 calls did, the ones on the level guard alone too.

Sans-I/O: the shell makes one `AecBudget` per worker process and hands it to every call
(``CallSettings.aec_budget``), and tells it how late each pacing timer fired (`late`, on the
calls' clock); a canceller takes a slot when it is made and gives it back when its call ends.
Slots are held by weak reference, so a call that is dropped without ending frees its slot too.
"""

from __future__ import annotations

import weakref
from typing import Final

__all__ = ["BUSY_MAX", "CALM_S", "LATE_S", "AecBudget"]

LATE_S: Final = 0.1  # a pacing timer this late: a worker this far behind its calls feeds cancellers the wrong moments
CALM_S: Final = 10.0  # no new canceller until the worker's timers have been on time this long
BUSY_MAX: Final = 0.6  # a worker's process busy this share of a core (or more) counts as lagging


class AecBudget:
    """One worker's canceller slots: at most ``limit`` taken at once."""

    __slots__ = ("_holders", "_lag_at", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._holders: weakref.WeakSet[object] = weakref.WeakSet()
        self._lag_at: float | None = None  # when the worker last lagged: a timer `LATE_S` late, or `BUSY_MAX` busy

    @property
    def engaged(self) -> int:
        """Cancellers running now (made and their call not over)."""
        return len(self._holders)

    def late(self, at: float, lateness_s: float) -> None:
        """A call's pacing timer fired ``lateness_s`` late at ``at``."""
        if lateness_s >= LATE_S:
            self._lag_at = at

    def busy(self, at: float, share: float) -> None:
        """The worker's process used ``share`` of a core over the last while, by ``at``."""
        if share >= BUSY_MAX:
            self._lag_at = at

    def lagging(self, at: float) -> bool:
        """Whether a pacing timer fired `LATE_S` late, or the process was `BUSY_MAX` busy, within
        `CALM_S` before ``at``."""
        return self._lag_at is not None and self._lag_at <= at < self._lag_at + CALM_S

    def take(self, holder: object, at: float) -> str:
        """A slot for ``holder`` at ``at`` (""), or why not: "budget" (the worker runs as many
        cancellers as it may) or "lag" (its loop lags behind its calls, or its process is busy)."""
        if holder not in self._holders:
            if len(self._holders) >= self.limit:
                return "budget"
            if self.lagging(at):
                return "lag"
            self._holders.add(holder)
        return ""

    def give_back(self, holder: object) -> None:
        """``holder``'s call is over (or it never made its canceller)."""
        self._holders.discard(holder)
