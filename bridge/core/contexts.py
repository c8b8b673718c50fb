"""The TTS contexts of one call: a table, because their lifecycle is the easiest thing to get wrong.

The real service holds a context's slot from its first message until it sends ``isFinal``,
which only ever follows our ``close_context`` (``flush`` never ends a context). A sixth slot
makes the server close the whole socket, so slots are counted as OPEN + CLOSING and a new
context is refused while five are in use. Ids come from a counter and are never reused, so
late audio or a late ``isFinal`` of an old context can never be taken for a new one.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from bridge.core.deadlines import EPS

__all__ = ["TRANSITIONS", "ContextRecord", "ContextState", "ContextTable"]


class ContextState(enum.Enum):
    OPEN = "open"
    CLOSING = "closing"
    FINAL = "final"


# The legal moves, as data: (state, what happened) -> new state. Anything else is our bug.
TRANSITIONS: dict[tuple[ContextState, str], ContextState] = {
    (ContextState.OPEN, "close"): ContextState.CLOSING,
    (ContextState.OPEN, "final"): ContextState.FINAL,  # server timed it out, or the socket died
    (ContextState.CLOSING, "final"): ContextState.FINAL,
    (ContextState.OPEN, "lost"): ContextState.FINAL,
    (ContextState.CLOSING, "lost"): ContextState.FINAL,
}


@dataclass(slots=True)
class ContextRecord:
    id: str
    state: ContextState
    opened_at: float
    last_sent_at: float
    closed_at: float | None = None


class ContextTable:
    """Which contexts exist on the TTS socket, and in what state."""

    def __init__(self, max_slots: int = 5, prefix: str = "ctx") -> None:
        self.max_slots = max_slots
        self._prefix = prefix
        self._next = 1
        self._records: dict[str, ContextRecord] = {}
        self.peak_slots = 0
        # The deadlines are asked after every event (50 a second per call) but change only when
        # a record does: remember them until then.
        self._deadlines: tuple[float | None, float | None] | None = None

    def __contains__(self, context_id: str) -> bool:
        return context_id in self._records

    def state(self, context_id: str) -> ContextState | None:
        record = self._records.get(context_id)
        return record.state if record else None

    @property
    def slots_in_use(self) -> int:
        return sum(1 for r in self._records.values() if r.state is not ContextState.FINAL)

    def can_open(self) -> bool:
        return self.slots_in_use < self.max_slots

    def open(self, at: float) -> str:
        if not self.can_open():
            raise RuntimeError("no free TTS context slot")  # the core checks can_open() first
        context_id = f"{self._prefix}-{self._next}"
        self._next += 1
        self._records[context_id] = ContextRecord(context_id, ContextState.OPEN, at, at)
        self._deadlines = None
        self.peak_slots = max(self.peak_slots, self.slots_in_use)
        return context_id

    def is_open(self, context_id: str | None) -> bool:
        return context_id is not None and self.state(context_id) is ContextState.OPEN

    def note_sent(self, context_id: str, at: float) -> None:
        self._records[context_id].last_sent_at = at
        self._deadlines = None

    def _move(self, context_id: str, what: str) -> bool:
        record = self._records.get(context_id)
        if record is None:
            return False
        new = TRANSITIONS.get((record.state, what))
        if new is None:
            return False
        record.state = new
        self._deadlines = None
        return True

    def close(self, context_id: str, at: float) -> bool:
        """Mark a close as sent; False if the context was not open (nothing to send)."""
        moved = self._move(context_id, "close")
        if moved:
            self._records[context_id].closed_at = at
            self._deadlines = None
        return moved

    def final(self, context_id: str) -> bool:
        """The server finished the context; False for an id it is not ours or already final."""
        return self._move(context_id, "final")

    def lose_all(self) -> list[str]:
        """The socket is gone, and every context with it."""
        return [cid for cid in list(self._records) if self._move(cid, "lost")]

    def open_ids(self) -> list[str]:
        return [r.id for r in self._records.values() if r.state is ContextState.OPEN]

    def keepalive_due(self, at: float, interval: float) -> list[str]:
        return [
            r.id
            for r in self._records.values()
            if r.state is ContextState.OPEN and at - r.last_sent_at >= interval - EPS
        ]

    def drain_expired(self, at: float, timeout: float) -> list[str]:
        """Closed contexts whose ``isFinal`` never came: after ``timeout`` the server has let go."""
        expired = [
            r.id
            for r in self._records.values()
            if r.state is ContextState.CLOSING and r.closed_at is not None and at - r.closed_at >= timeout - EPS
        ]
        for context_id in expired:
            self._move(context_id, "final")
        return expired

    def deadlines(self, keepalive: float, drain_timeout: float) -> tuple[float | None, float | None]:
        """When the next keep-alive is due, and when the next closed context's drain times out.

        The intervals are the call's settings, the same on every call of one table."""
        if self._deadlines is None:
            alive = [r.last_sent_at for r in self._records.values() if r.state is ContextState.OPEN]
            closing = [r.closed_at or 0.0 for r in self._records.values() if r.state is ContextState.CLOSING]
            self._deadlines = (
                min(alive) + keepalive if alive else None,
                min(closing) + drain_timeout if closing else None,
            )
        return self._deadlines

    def forget_final(self) -> None:
        """Drop finished records so a long call's table stays small (ids are still never reused)."""
        self._records = {k: r for k, r in self._records.items() if r.state is not ContextState.FINAL}
