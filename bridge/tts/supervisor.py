"""Keeps a call's one TTS connection up, and says in one log line what went wrong when it could not.

The session owns the socket's *events* (the core sees every ``TtsConnected`` and ``TtsClosed``
and re-voices what the caller has not heard); this supervisor owns the socket's *life*:

- it connects only once the call has started (a socket that never sends ``start`` costs no TTS
  session), and again after every unexpected close: at once the first time, so a one-off drop
  costs the caller only the reconnect and the first audio of the new context;
- failures in a row (a refused connect, or a new socket lost within ``stable_after_s``) back off
  along ``delays`` and stop once the delays are used up, so a server that accepts and then drops
  every socket is not hammered for the whole call;
- a permanent refusal (the client raises ``TtsConnectError(permanent=True)``: a bad key, no quota)
  stops at once;
- giving up never ends the call: the caller hears silence, while barge-in, turns and hang-up go on.

A *fault* runs from a loss (or a failed connect at call start) until a new socket has stayed up for
``stable_after_s`` (healed), or until the supervisor gives up. Each fault is one log line, written
when its outcome is known: WARNING when healed, with how long the call was without a voice; ERROR
when given up, with the reason. Every error frame thus shows up once, in its fault's line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from bridge.core.backoff import RECONNECT_DELAYS_S, STABLE_AFTER_S, Backoff, GiveUp, Retry
from bridge.core.events import Event, TtsClosed, TtsError
from bridge.tts.base import Emit, TtsClient, TtsConnectError

__all__ = ["RECONNECT_DELAYS_S", "STABLE_AFTER_S", "TtsSupervisor"]

log = logging.getLogger("bridge.tts")


@dataclass
class _Fault:
    """One fault, from the first loss (or failed connect) until healed or given up."""

    began: float
    cause: str
    tries: int = 0
    failures: list[str] = field(default_factory=list)  # why each try failed, in order


class TtsSupervisor:
    """Connects ``tts`` for one call and reconnects it; ``observe`` must see every event of the call.

    When to try again is :class:`~bridge.core.backoff.Backoff`'s to say; this shell connects,
    waits, sleeps until the time it is given, and writes the log line.
    """

    def __init__(
        self,
        tts: TtsClient,
        emit: Emit,
        *,
        clock: Callable[[], float],
        name: Callable[[], str],
        delays: tuple[float, ...] = RECONNECT_DELAYS_S,
        stable_after_s: float = STABLE_AFTER_S,
    ) -> None:
        self._tts = tts
        self._emit = emit
        self._clock = clock
        self._name = name
        self._backoff = Backoff(delays, stable_after_s)
        self._started = asyncio.Event()
        self._lost = asyncio.Event()
        self._error: TtsError | None = None
        self._closed: TtsClosed | None = None
        self._connected_at = 0.0
        self.connects = 0
        self.gave_up: str | None = None
        """Why the supervisor stopped trying, once it has (the call goes on without a voice)."""

    def start(self) -> None:
        """The call has begun: connect now."""
        self._started.set()

    def observe(self, event: Event) -> None:
        """Watch the call's events for the socket-level error and the close that end a socket."""
        if isinstance(event, TtsError) and event.context_id is None:
            self._error = event
        elif isinstance(event, TtsClosed) and not event.expected:
            self._closed = event
            self._lost.set()

    async def run(self) -> None:
        """Until the call ends (the session cancels this task) or retrying is pointless."""
        await self._started.wait()
        began = self._clock()
        fault: _Fault | None = None  # the fault being retried, if any
        while True:
            if fault is not None:
                fault.tries += 1
            try:
                await self._tts.connect(self._emit)
            except TtsConnectError as exc:
                decision = self._backoff.connect_failed(self._clock(), permanent=exc.permanent)
                if fault is None:  # only at call start: after a loss there is always a fault
                    fault = _Fault(began, "could not connect at call start", tries=1)
                fault.failures.append(str(exc))
            else:
                decision, fault = await self._until_lost(fault)
            if isinstance(decision, GiveUp):
                self._give_up(fault, fault.failures[-1], decision)
                return
            await self._sleep_until(decision)

    async def _until_lost(self, fault: _Fault | None) -> tuple[Retry | GiveUp, _Fault]:
        """Keep the socket just opened until it is lost; the fault its loss belongs to."""
        self.connects += 1
        self._connected_at = self._clock()
        self._backoff.connected(self._connected_at)
        if not await self._lost_before_healthy():
            if fault is not None and self._backoff.still_up(self._clock()):
                self._healed(fault)
            fault = None
            await self._lost.wait()
        await self._tts.aclose()
        decision = self._backoff.socket_lost(self._clock())
        if fault is None or decision.new_fault:
            fault = _Fault(self._clock(), self._describe_loss())
        else:  # the socket that was to heal the fault was lost at once
            fault.failures.append(self._describe_loss())
        return decision, fault

    async def _lost_before_healthy(self) -> bool:
        """Whether the socket just opened is lost before the policy counts it healthy."""
        self._lost.clear()
        healthy_at = self._backoff.healthy_at
        assert healthy_at is not None, "asked right after a connect"
        while (left := healthy_at - self._clock()) > 0:  # a timer may fire a hair early: wait it out
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await self._lost.wait()
                    return True
        return False

    async def _sleep_until(self, retry: Retry) -> None:
        wait = retry.at - self._clock()
        if wait > 0:
            await asyncio.sleep(wait)

    def _describe_loss(self) -> str:
        closed, error = self._closed, self._error
        self._closed = self._error = None
        code = closed.code if closed is not None else None
        how = f"close {code}" if code is not None else "no close frame: connection reset"
        if closed is not None and closed.reason:
            how += f" {closed.reason[:120]!r}"
        if error is not None:
            return f"socket lost after error {error.code} ({error.message[:200]}; {how})"
        return f"socket lost ({how})"

    def _healed(self, fault: _Fault) -> None:
        silent_ms = (self._connected_at - fault.began) * 1000
        tries = f"{fault.tries} {'try' if fault.tries == 1 else 'tries'}"
        if fault.failures:
            tries += f" ({len(fault.failures)} failed, the last: {fault.failures[-1]})"
        log.warning("call %s: TTS %s; connected again after %s, %.0f ms without a voice",
                    self._name(), fault.cause, tries, silent_ms)

    def _give_up(self, fault: _Fault, why: str, decision: GiveUp) -> None:
        if decision.permanent:
            verdict = f"not retrying, it cannot heal: {why}"
        else:
            verdict = (f"giving up after {decision.failures} failures in a row over "
                       f"{self._clock() - fault.began:.1f} s, the last: {why}")
        self.gave_up = verdict
        log.error("call %s: TTS %s; %s. The call goes on without a voice.", self._name(), fault.cause, verdict)
