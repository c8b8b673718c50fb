"""The TTS supervisor's shell: it connects when the policy says, and writes one log line per fault.

The policy itself is tested in simulated time (tests/core/test_backoff.py); here a scripted client
stands in for the socket, with delays of milliseconds, to check what an operator reads in the log.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from bridge.core.actions import TtsAction
from bridge.core.events import Event, TtsClosed, TtsError
from bridge.tts.base import Emit, TtsConnectError
from bridge.tts.supervisor import TtsSupervisor


class ScriptedTts:
    """Refuses the connects listed in ``refusals`` (by number, from 1), accepts the others."""

    def __init__(self, refusals: dict[int, TtsConnectError] | None = None) -> None:
        self.refusals = refusals or {}
        self.connects = 0
        self.closes = 0
        self.connected = asyncio.Event()

    async def connect(self, emit: Emit) -> None:
        self.connects += 1
        if self.connects in self.refusals:
            raise self.refusals[self.connects]
        self.connected.set()

    async def send(self, action: TtsAction) -> None:
        pass

    async def aclose(self) -> None:
        self.closes += 1


def supervise(tts: ScriptedTts, delays: tuple[float, ...] = (0.01, 0.02)) -> tuple[TtsSupervisor, asyncio.Task[None]]:
    loop = asyncio.get_running_loop()
    events: list[Event] = []
    supervisor = TtsSupervisor(tts, events.append, clock=loop.time, name=lambda: "CA1", delays=delays,
                               stable_after_s=0.05)
    supervisor.start()
    return supervisor, asyncio.create_task(supervisor.run())


async def lose(supervisor: TtsSupervisor, tts: ScriptedTts, code: int = 1011) -> None:
    """Wait for a socket, then drop it as a server would."""
    await asyncio.wait_for(tts.connected.wait(), 1)
    tts.connected.clear()
    loop = asyncio.get_running_loop()
    supervisor.observe(TtsError(loop.time(), "server_error", "something broke"))
    supervisor.observe(TtsClosed(loop.time(), code=code, reason="bye"))


async def test_a_drop_is_repaired_and_logged_once_as_healed(caplog: pytest.LogCaptureFixture) -> None:
    tts = ScriptedTts()
    supervisor, task = supervise(tts)
    with caplog.at_level(logging.WARNING, "bridge.tts"):
        await lose(supervisor, tts)
        await asyncio.wait_for(tts.connected.wait(), 1)
        await asyncio.sleep(0.1)  # past stable_after_s: healed
        task.cancel()
    assert tts.connects == 2 and tts.closes == 1
    [line] = [r.getMessage() for r in caplog.records]
    assert "socket lost after error server_error (something broke; close 1011 'bye')" in line
    assert "connected again after 1 try" in line


async def test_refusals_at_call_start_are_retried(caplog: pytest.LogCaptureFixture) -> None:
    tts = ScriptedTts({1: TtsConnectError("HTTP 503"), 2: TtsConnectError("HTTP 503")})
    supervisor, task = supervise(tts)
    with caplog.at_level(logging.WARNING, "bridge.tts"):
        await asyncio.wait_for(tts.connected.wait(), 1)
        await asyncio.sleep(0.1)
        task.cancel()
    [line] = [r.getMessage() for r in caplog.records]
    assert "could not connect at call start; connected again after 3 tries (2 failed, the last: HTTP 503)" in line
    assert supervisor.gave_up is None


async def test_a_server_that_drops_every_new_socket_is_given_up(caplog: pytest.LogCaptureFixture) -> None:
    tts = ScriptedTts()
    supervisor, task = supervise(tts)
    with caplog.at_level(logging.WARNING, "bridge.tts"):
        for _ in range(4):  # the first loss is free, then two delays, then no more
            await lose(supervisor, tts)
        await asyncio.wait_for(task, 1)
    assert tts.connects == 4
    [line] = [r.getMessage() for r in caplog.records]
    assert caplog.records[0].levelno == logging.ERROR
    assert "giving up after 3 failures in a row" in line and "The call goes on without a voice" in line
    assert supervisor.gave_up is not None


async def test_a_permanent_refusal_is_not_retried(caplog: pytest.LogCaptureFixture) -> None:
    tts = ScriptedTts({1: TtsConnectError("invalid_api_key", permanent=True)})
    supervisor, task = supervise(tts)
    with caplog.at_level(logging.WARNING, "bridge.tts"):
        await asyncio.wait_for(task, 1)
    assert tts.connects == 1
    assert supervisor.gave_up == "not retrying, it cannot heal: invalid_api_key"
