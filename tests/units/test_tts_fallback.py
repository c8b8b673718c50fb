"""Voice failover: `FallbackTts` moves to the next voice when the current one is gone for good."""

from __future__ import annotations

import contextlib

from bridge.core.actions import OpenContext
from bridge.core.events import Event, TtsClosed, TtsConnected
from bridge.tts.base import Emit, TtsConnectError
from bridge.tts.fallback import FallbackTts, Voice


class Scripted:
    """A voice whose connects succeed or fail as told; it records what it was sent."""

    def __init__(self, outcomes: list[str]) -> None:
        self.outcomes = outcomes  # "ok", "refused", "permanent"
        self.sent: list[object] = []
        self.emit: Emit | None = None
        self.closed = 0

    async def connect(self, emit: Emit) -> None:
        outcome = self.outcomes.pop(0) if self.outcomes else "ok"
        if outcome != "ok":
            raise TtsConnectError(f"{outcome} by the server", permanent=outcome == "permanent")
        self.emit = emit
        emit(TtsConnected(0.0))

    async def send(self, action: object) -> None:
        self.sent.append(action)

    async def aclose(self) -> None:
        self.closed += 1


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_a_refused_key_fails_over_at_once_and_the_next_voice_serves() -> None:
    cloud, offline, events = Scripted(["permanent"]), Scripted([]), list[Event]()
    switches: list[tuple[str, str, str]] = []
    tts = FallbackTts([Voice("elevenlabs", cloud), Voice("offline", offline)], clock=Clock(),
                      on_failover=lambda a, b, why: switches.append((a, b, why)))
    await tts.connect(events.append)
    await tts.send(OpenContext("ctx-1"))
    assert tts.current == "offline" and offline.sent == [OpenContext("ctx-1")] and not cloud.sent
    assert events == [TtsConnected(0.0)] and tts.served == ["offline"]
    assert switches[0][:2] == ("elevenlabs", "offline") and "permanent by the server" in switches[0][2]


async def test_passing_failures_are_retried_on_the_same_voice_up_to_the_budget() -> None:
    cloud, offline = Scripted(["refused", "refused", "ok"]), Scripted([])
    tts = FallbackTts([Voice("elevenlabs", cloud), Voice("offline", offline)], clock=Clock(), max_failures=3)
    for _ in range(2):
        with contextlib.suppress(TtsConnectError):
            await tts.connect(lambda e: None)
    await tts.connect(lambda e: None)
    assert tts.current == "elevenlabs", "two refusals in a row: still worth retrying"


async def test_sockets_lost_at_once_again_and_again_fail_over_mid_call() -> None:
    clock, cloud, offline, events = Clock(), Scripted([]), Scripted([]), list[Event]()
    tts = FallbackTts([Voice("elevenlabs", cloud), Voice("offline", offline)], clock=clock, max_failures=3)
    for _n in range(3):
        await tts.connect(events.append)
        assert tts.current == "elevenlabs"
        clock.now += 0.5
        assert cloud.emit is not None
        cloud.emit(TtsClosed(clock.now, 1011, "internal error"))
    await tts.connect(events.append)
    assert tts.current == "offline" and tts.served == ["elevenlabs", "offline"]
    assert sum(isinstance(e, TtsClosed) for e in events) == 3, "every close still reaches the call"


async def test_the_last_voice_keeps_its_errors() -> None:
    offline = Scripted(["permanent"])
    tts = FallbackTts([Voice("offline", offline)], clock=Clock())
    try:
        await tts.connect(lambda e: None)
    except TtsConnectError as exc:
        assert exc.permanent
    else:
        raise AssertionError("the error of the last voice goes to the supervisor")
