"""bench.profile: the shares it prints are of CPU the server used, not of threads asleep in C."""

from __future__ import annotations

import inspect
import selectors
from pathlib import Path

import aiosqlite.core

from bench.profile import summarise


def _line_of(module: object, text: str) -> int:
    lines, _ = inspect.getsourcelines(module)  # type: ignore[arg-type]
    return 1 + next(i for i, line in enumerate(lines) if text in line)


def test_threads_waiting_in_c_are_not_counted_as_busy(tmp_path: Path) -> None:
    poll = _line_of(selectors, "self._selector.poll(")
    wait = _line_of(aiosqlite.core, "tx.get()")
    run = _line_of(aiosqlite.core, "result = function()")
    profile = tmp_path / "server.txt"
    profile.write_text("\n".join([
        "Thread.run (threading.py:982);BaseEventLoop.run_forever (asyncio/base_events.py:608);"
        f"EpollSelector.select (selectors.py:{poll}) 40",
        f"Thread.run (threading.py:982);_connection_worker_thread (aiosqlite/core.py:{wait}) 30",
        f"Thread.run (threading.py:982);_connection_worker_thread (aiosqlite/core.py:{run}) 20",
        "Runner.run (asyncio/runners.py:118);CallSession._step (bridge/server/session.py:241) 10",
    ]) + "\n")
    total, own, _ = summarise(profile)
    assert total == 30, "the selector's poll and the driver's wait for work are idle; its queries are not"
    assert own["_connection_worker_thread (aiosqlite/core.py)"] == 20
    assert summarise(profile, idle=True)[0] == 100
