"""How many echo cancellers one worker runs at once; past that, a call with echo keeps the level guard alone.

A call's canceller (``bridge.core.aec``: AEC3 and the linear canceller beside it) costs about
3.5 % of a core while its agent talks. One worker carries about 20 of them; past that its event
loop falls behind its calls, what played and what the core believes played drift apart, and the
cancellers, fed the wrong moments, let the echo through: at 30 and 100 speakerphone calls every
call stopped its agent for its own echo, where the level guard alone (``bridge.core.echo``,
``aec.mode = "off"``) made no false barge-in at 30. More calls must never make the agent
interrupt itself, so a worker hands out at most ``aec.max_engaged`` canceller slots, and a call
judged echoic while none is free runs the level guard alone for the rest of the call (its
metrics say so: `EchoCanceller.refused`).

Sans-I/O: the shell makes one `AecBudget` per worker process and hands it to every call
(``CallSettings.aec_budget``); a canceller takes a slot when it is made and gives it back when its
call ends. Slots are held by weak reference, so a call that is dropped without ending frees its
slot as well.
"""

from __future__ import annotations

import weakref

__all__ = ["AecBudget"]


class AecBudget:
    """One worker's canceller slots: at most ``limit`` taken at once."""

    __slots__ = ("_holders", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._holders: weakref.WeakSet[object] = weakref.WeakSet()

    @property
    def engaged(self) -> int:
        """Cancellers running now (made and their call not over)."""
        return len(self._holders)

    def take(self, holder: object) -> bool:
        """A slot for ``holder`` (it may make its canceller), or False: the worker runs as many as it may."""
        if holder not in self._holders:
            if len(self._holders) >= self.limit:
                return False
            self._holders.add(holder)
        return True

    def give_back(self, holder: object) -> None:
        """``holder``'s call is over (or it never made its canceller)."""
        self._holders.discard(holder)
