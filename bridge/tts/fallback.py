"""Voices tried in order: when the cloud voice is gone for good, the call goes on in the next one.

`FallbackTts` is itself a `TtsClient`, so neither the core nor the supervisor knows it is there.
It watches what its current voice reports and fails over to the next voice when that one is
unusable for the rest of the call:

* a refusal that retrying cannot heal (`TtsConnectError` with ``permanent``: a bad or revoked key,
  no quota), at call start or on the reconnect after such an error mid-call (the voice's own client
  knows which of its errors are fatal: ElevenLabs' ``quota_exceeded`` or an auth close makes its
  next ``connect`` refuse for good);
* ``max_failures`` failures in a row: refused connects, or sockets lost within ``stable_after_s``
  of opening (the supervisor's reconnect budget would otherwise run out in silence).

Failing over is a reconnect as far as the call can tell: the old voice's close has already been
reported, the next voice's ``TtsConnected`` follows, and the core re-voices in a fresh context
whatever the caller had not heard. The log and ``bridge_tts_failovers_total`` say which voice took
over and why; `current` names the voice serving now, for per-turn logs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bridge.core.actions import TtsAction
from bridge.core.events import Event, TtsClosed
from bridge.tts.base import Emit, TtsClient, TtsConnectError

__all__ = ["FallbackTts", "Voice"]

log = logging.getLogger("bridge.tts")

@dataclass(frozen=True, slots=True)
class Voice:
    name: str
    client: TtsClient


class FallbackTts:
    """A `TtsClient` over ``voices``, in order of preference."""

    def __init__(self, voices: Sequence[Voice], *, clock: Callable[[], float], max_failures: int = 3,
                 stable_after_s: float = 2.0, on_failover: Callable[[str, str, str], None] | None = None) -> None:
        if not voices:
            raise ValueError("at least one voice")
        self._voices = list(voices)
        self._index = 0
        self._clock = clock
        self._max_failures = max_failures
        self._stable_after_s = stable_after_s
        self._on_failover = on_failover
        self._failures = 0
        self._connected_at: float | None = None
        self._doomed: str | None = None  # the current voice reported an error it cannot heal from
        self._emit: Emit | None = None
        self.served: list[str] = []  # every voice that connected, in order

    @property
    def current(self) -> str:
        return self._voices[self._index].name

    async def connect(self, emit: Emit) -> None:
        self._emit = emit
        while True:
            if self._doomed is not None:
                self._fail_over(self._doomed)
            try:
                await self._voices[self._index].client.connect(self._watch)
            except TtsConnectError as exc:
                self._failures += 1
                if self._index + 1 < len(self._voices) and (exc.permanent or self._failures >= self._max_failures):
                    self._fail_over(str(exc))
                    continue
                raise
            self._connected_at = self._clock()
            if not self.served or self.served[-1] != self.current:
                self.served.append(self.current)
            return

    async def send(self, action: TtsAction) -> None:
        await self._voices[self._index].client.send(action)

    async def aclose(self) -> None:
        await self._voices[self._index].client.aclose()

    def _watch(self, event: Event) -> None:
        """Every event of the current voice passes through, on its way to the call."""
        if isinstance(event, TtsClosed) and not event.expected:
            lived = self._clock() - self._connected_at if self._connected_at is not None else 0.0
            self._failures = self._failures + 1 if lived < self._stable_after_s else 1
            if self._doomed is None and self._failures >= self._max_failures:
                self._doomed = f"{self._failures} sockets in a row lost at once"
        if self._emit is not None:
            self._emit(event)

    def _fail_over(self, why: str) -> None:
        if self._index + 1 >= len(self._voices):
            self._doomed = None
            return
        old = self.current
        self._index += 1
        self._failures = 0
        self._doomed = None
        log.warning("TTS voice %s is unusable for this call (%s); going on with %s", old, why, self.current)
        if self._on_failover is not None:
            self._on_failover(old, self.current, why)
