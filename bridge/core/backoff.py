"""When to connect the call's TTS again after a failure, and when to stop trying: a policy without a clock.

The shell reports what happened and when (a connect was refused, a socket was lost, a connect
succeeded); the policy answers with the time the next connect may start, or that trying again is
pointless. Keeping the arithmetic here, away from the awaits, lets tests walk a whole run of
failures in simulated time, and the shell only sleeps until the time it is given.

The rules, all read off the times passed in:

- A *fault* runs from a failure until a socket has stayed up for ``stable_after_s`` (the socket
  *healed* it). Failures inside one fault are counted in a row.
- The loss of a socket while no fault runs begins a fault and costs no wait: a one-off drop costs
  the caller only the reconnect. A refused connect while no fault runs (only possible at call
  start, before any socket) is already the first failure in a row.
- The n-th failure in a row waits ``delays[n - 1]``; one more failure than there are delays gives
  up, and so does a refusal marked permanent (a bad key, no quota), at once.
- Having given up is final: the policy answers every later report the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RECONNECT_DELAYS_S", "STABLE_AFTER_S", "Backoff", "GiveUp", "Retry"]

RECONNECT_DELAYS_S: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0)
"""Wait after the n-th failure in a row; as many retries as there are delays (≈ 7.9 s in all)."""
STABLE_AFTER_S = 2.0
"""A socket that lived this long was healthy: its loss starts a new fault, not a further failure."""


@dataclass(frozen=True, slots=True)
class Retry:
    """Connect again at ``at`` (the failure's own time when there is nothing to wait for)."""

    at: float
    failures: int
    """Failures in a row within this fault; 0 for the loss of a healthy socket."""
    new_fault: bool
    """This failure began a fault (the first loss, or a refusal at call start)."""


@dataclass(frozen=True, slots=True)
class GiveUp:
    """Stop connecting: the call goes on without a voice."""

    failures: int
    """Failures in a row, the last one included."""
    permanent: bool
    """The last failure said it cannot heal; otherwise the delays were used up."""
    new_fault: bool
    """The failure that ended it also began the fault (a permanent refusal at once)."""


class Backoff:
    """The reconnect policy of one call's TTS connection; every report carries its own time."""

    __slots__ = ("_connected_at", "_delays", "_failures", "_given_up", "_in_fault", "_stable_after_s")

    def __init__(self, delays: tuple[float, ...] = RECONNECT_DELAYS_S, stable_after_s: float = STABLE_AFTER_S) -> None:
        if any(d < 0 for d in delays) or stable_after_s < 0:
            raise ValueError("delays and stable_after_s must not be negative")
        self._delays = delays
        self._stable_after_s = stable_after_s
        self._failures = 0
        self._in_fault = False
        self._connected_at: float | None = None
        self._given_up: GiveUp | None = None

    @property
    def failures(self) -> int:
        """Failures in a row within the fault being retried (0 when none runs)."""
        return self._failures

    @property
    def given_up(self) -> GiveUp | None:
        """How trying ended, once it has."""
        return self._given_up

    @property
    def healthy_at(self) -> float | None:
        """When the socket of the last successful connect counts as healthy, if one is up.

        Lost before then, it was a failure of the fault it was to heal; the shell may wait for a
        loss until this time and, with none, report the fault healed.
        """
        if self._connected_at is None:
            return None
        return self._connected_at + self._stable_after_s

    def connected(self, at: float) -> None:
        """A connect succeeded at ``at``."""
        self._connected_at = at

    def still_up(self, at: float) -> bool:
        """The socket of the last connect is still up at ``at``: whether that healed a fault just now."""
        healthy_at = self.healthy_at
        if not self._in_fault or healthy_at is None or at < healthy_at:
            return False
        self._in_fault, self._failures = False, 0
        return True

    def connect_failed(self, at: float, *, permanent: bool = False) -> Retry | GiveUp:
        """A connect was refused (or timed out) at ``at``: when may the next one start?"""
        if self._given_up is not None:
            return self._given_up
        self._connected_at = None
        new_fault = not self._in_fault
        self._in_fault = True
        self._failures += 1
        return self._decide(at, new_fault, permanent)

    def socket_lost(self, at: float) -> Retry | GiveUp:
        """The socket of the last successful connect ended unexpectedly at ``at``."""
        if self._given_up is not None:
            return self._given_up
        self.still_up(at)  # lived long enough: the fault it was to heal is over
        self._connected_at = None
        new_fault = not self._in_fault
        if new_fault:
            self._in_fault = True  # a drop from health: reconnect at once
        else:
            self._failures += 1  # the socket that was to heal the fault was lost at once
        return self._decide(at, new_fault, False)

    def _decide(self, at: float, new_fault: bool, permanent: bool) -> Retry | GiveUp:
        if permanent or self._failures > len(self._delays):
            self._given_up = GiveUp(self._failures, permanent, new_fault)
            return self._given_up
        wait = self._delays[self._failures - 1] if self._failures else 0.0
        return Retry(at + wait, self._failures, new_fault)
