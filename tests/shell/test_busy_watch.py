"""The worker measures how busy its process is (`bridge.server.app._watch_busy`) and tells its echo
canceller budget."""

from __future__ import annotations

import asyncio

import pytest

from bridge.core.budget import AecBudget
from bridge.server import app


class Seen(AecBudget):
    def __init__(self) -> None:
        super().__init__(1)
        self.shares: list[float] = []

    def busy(self, at: float, share: float) -> None:
        self.shares.append(share)
        super().busy(at, share)


class Holder:
    """A call's canceller, as far as the budget sees it."""


class ProcessClock:
    """The process's CPU time as `time.process_time` gives it, running at ``share`` of the wall
    clock (the loop's), so the test does not depend on what else the machine runs."""

    def __init__(self) -> None:
        self.share, self._cpu, self._at = 0.0, 0.0, asyncio.get_running_loop().time()

    def __call__(self) -> float:
        now = asyncio.get_running_loop().time()
        self._cpu += (now - self._at) * self.share
        self._at = now
        return self._cpu


async def test_a_process_busy_on_most_of_a_core_is_reported_busy_and_takes_no_canceller(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock, budget = ProcessClock(), Seen()
    monkeypatch.setattr(app.time, "process_time", clock)
    watch = asyncio.create_task(app._watch_busy(budget.busy, every_s=0.05))
    await asyncio.sleep(0.12)
    assert budget.shares and max(budget.shares) < 0.1, "an idle process is not busy"
    assert budget.take(Holder(), asyncio.get_running_loop().time()) == "", "and takes a canceller"
    budget = Seen()
    watch.cancel()
    watch = asyncio.create_task(app._watch_busy(budget.busy, every_s=0.05))
    clock.share = 0.8
    await asyncio.sleep(0.12)
    watch.cancel()
    assert budget.shares and min(budget.shares) > 0.6, "a process on 80 % of a core is busy"
    assert budget.take(Holder(), asyncio.get_running_loop().time()) == "lag"
