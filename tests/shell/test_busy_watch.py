"""The worker tells its echo canceller budget how busy its process is (`bridge.server.app._watch_busy`)."""

from __future__ import annotations

import asyncio
import time

from bridge.core.budget import AecBudget
from bridge.server.app import _watch_busy


class Seen(AecBudget):
    def __init__(self) -> None:
        super().__init__(1)
        self.shares: list[float] = []

    def busy(self, at: float, share: float) -> None:
        self.shares.append(share)
        super().busy(at, share)


async def test_a_process_spinning_on_the_cpu_is_reported_busy_and_takes_no_canceller() -> None:
    budget = Seen()
    watch = asyncio.create_task(_watch_busy(budget, every_s=0.1))
    await asyncio.sleep(0.15)  # one quiet report
    deadline = time.monotonic() + 0.35
    while time.monotonic() < deadline:  # the loop's own thread busy: the watch's sleep runs late
        await asyncio.sleep(0)
        sum(range(2000))
    await asyncio.sleep(0.05)
    watch.cancel()
    assert budget.shares[0] < 0.5, "an idle process is not busy"
    assert max(budget.shares) >= 0.6, "a process spinning on a core is"
    assert budget.take(object(), asyncio.get_running_loop().time()) == "lag"
