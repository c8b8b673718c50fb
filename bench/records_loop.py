"""What writing call records costs the event loop the calls run on, in-process, tree by tree.

    python -m bench.records_loop BEFORE_TREE AFTER_TREE... [--rounds 5] [--calls 100]
    PYTHONPATH=. python bench/records_loop.py --measure [--pg-admin URL]   # this tree alone

A server's live calls are paced by timers on its one event loop: every 20 ms each call sends
the phone its next frame. Whatever else holds that loop (or the interpreter's lock) makes the
timers late, and a late timer is audio the phone runs out of. This runs 20 ms timers on a
uvloop loop, as the server does, and measures how late they fire (max, p99) while the records
writer writes the finished records of ``--calls`` calls that ended together: each the record
the recorder makes of a scripted 42 s call (6 rounds of greeting, barge-in and reply), all in
one batch, after a first batch has warmed the statement caches; ``--repeat`` batches, medians.
On SQLite (a file in a temporary folder) and on PostgreSQL (a server started once from the
system's packages, a fresh database per measurement), each with a quiet loop (one timer, nothing
else: what the writer itself takes from the loop) and a busy one (``--pacers`` timers doing
``--work-us`` of Python each a tick, as live calls do). Also reported: the CPU time of the loop's
thread and of the whole process over the same stretch, how long the batch took to be written,
and the timers' lateness just before, with nothing written (uvloop's timers are millisecond-
grained: 1 ms late is on time).

The trees are measured in turn (each first in turn), each in a fresh process
(``PYTHONPATH=TREE``), ``--rounds`` times, and the medians printed; so a tree older than this
file can be measured too (it needs ``bench.core_cost`` and ``tests.records``).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

TICK_S = 0.02


def finished_records(n: int, tag: str) -> list[Any]:
    """``n`` finished records as the recorder makes them of a scripted call with barge-ins."""
    from bench.core_cost import scripted_call
    from bridge.core.call import Call
    from bridge.server.records.recorder import CallRecorder

    events, _ = scripted_call(6)
    call, submitted = Call(), []
    recorder = CallRecorder(submitted.append, lambda: call.snapshot)
    for event in events:
        recorder.event(event)
        for action in call.handle(event):
            recorder.action(action)
    recorder.end(call.snapshot)
    final = submitted[-1]
    return [dataclasses.replace(final, call_id=f"CA{tag}{i:06d}", stream_id=f"MZ{tag}{i:06d}") for i in range(n)]


class Pacers:
    """``calls`` 20 ms timers on the running loop, as the calls' pacing is, spread over the 20 ms,
    each doing ``work_us`` of Python per tick (the server at 100 calls keeps its loop about 40 %
    busy: 80 us a call a tick); keeps how late each tick fired."""

    def __init__(self, calls: int, work_us: float) -> None:
        self.calls = calls
        self.lateness: list[float] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._spins = _spins_for(work_us / 1e6) if work_us > 0 else 0

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._run(TICK_S * i / self.calls)) for i in range(self.calls)]

    async def _run(self, offset: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + offset
        while True:
            deadline += TICK_S
            await asyncio.sleep(max(0.0, deadline - loop.time()))
            late = loop.time() - deadline
            self.lateness.append(late)
            _spin(self._spins)
            if late > TICK_S:  # a pacer that fell behind starts again from now, as the calls' pacing does
                deadline = loop.time()

    async def stop(self) -> dict[str, float]:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        ms = sorted(x * 1000 for x in self.lateness)
        return {"ticks": len(ms), "max_ms": round(ms[-1], 2),
                "p99_ms": round(ms[min(len(ms) - 1, int(0.99 * len(ms)))], 2)}


def _spin(n: int) -> int:
    total = 0
    for i in range(n):
        total += i
    return total


def _spins_for(seconds: float) -> int:
    """How many turns of `_spin` take ``seconds`` of CPU on this machine (least of several tries)."""
    n = 100_000
    best = min(_timed(n) for _ in range(5))
    return max(1, round(n * seconds / best))


def _timed(n: int) -> float:
    t0 = time.thread_time()
    _spin(n)
    return time.thread_time() - t0


async def _written(writer: Any, target: int, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while writer.written < target or writer.pending:
        if time.monotonic() > end:
            raise RuntimeError(f"the writer wrote {writer.written} of {target} records in {timeout} s")
        await asyncio.sleep(0.005)


async def batches(url: str, calls: int, folder: Path, pacers: int, work_us: float, repeat: int) -> dict[str, float]:
    """The pacers' lateness while a batch of ``calls`` finished records is written, and while
    nothing is (just before); medians over ``repeat`` batches, after one that warms up."""
    from bridge.server.records.store import Store
    from bridge.server.records.writer import RecordWriter

    records = [finished_records(calls, f"{b}") for b in range(repeat + 1)]
    writer = RecordWriter(Store(url), retention_days=30, recordings_dir=folder, linger_s=0.05)
    await writer.start()
    figures: list[dict[str, float]] = []
    try:
        if not writer.ready:
            raise RuntimeError(f"the database at {url} did not come up")
        for record in records[0]:
            writer.submit(record)
        await _written(writer, calls)
        for n, batch in enumerate(records[1:], start=2):
            idle = Pacers(pacers, work_us)
            idle.start()
            await asyncio.sleep(0.5)
            quiet = await idle.stop()
            busy = Pacers(pacers, work_us)
            busy.start()
            await asyncio.sleep(0.1)
            cpu0, all0, t0 = time.thread_time(), time.process_time(), time.perf_counter()
            for record in batch:
                writer.submit(record)
            await _written(writer, n * calls)
            wall = time.perf_counter() - t0
            await asyncio.sleep(0.1)  # a tail the writer may still hold the loop for
            cpu, cpu_all = time.thread_time() - cpu0, time.process_time() - all0
            late = await busy.stop()
            figures.append({"late_max_ms": late["max_ms"], "late_p99_ms": late["p99_ms"],
                            "idle_late_max_ms": quiet["max_ms"], "idle_late_p99_ms": quiet["p99_ms"],
                            "main_cpu_ms": round(cpu * 1000, 1), "process_cpu_ms": round(cpu_all * 1000, 1),
                            "write_ms": round(wall * 1000, 1)})
    finally:
        await writer.stop()
    return {k: statistics.median(f[k] for f in figures) for k in figures[0]}


async def _create_database(admin_url: str) -> str:
    import asyncpg

    name = "loop_" + uuid.uuid4().hex[:12]
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return admin_url.rsplit("/", 1)[0] + "/" + name


def measure(a: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Both databases, each with a quiet loop (one ticker and nothing else: what the writer itself
    costs the loop) and a busy one (``--pacers`` doing ``--work-us`` each a tick)."""
    import uvloop

    loops = {"quiet loop": (1, 0.0), "busy loop": (a.pacers, a.work_us)}

    async def run() -> dict[str, dict[str, float]]:
        out = {}
        with tempfile.TemporaryDirectory(prefix="bench-records-loop-") as tmp:
            for label, (pacers, work_us) in loops.items():
                url = f"sqlite:///{tmp}/{pacers}.db"
                out[f"SQLite, {label}"] = await batches(url, a.calls, Path(tmp), pacers, work_us, a.repeat)
                if a.pg_admin:
                    url = await _create_database(a.pg_admin)
                    out[f"PostgreSQL, {label}"] = await batches(url, a.calls, Path(tmp), pacers, work_us, a.repeat)
        return out

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(run())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.records_loop", description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("trees", type=Path, nargs="*")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--calls", type=int, default=100)
    p.add_argument("--repeat", type=int, default=5, help="batches measured in each process")
    p.add_argument("--pacers", type=int, default=100, help="20 ms timers on the busy loop, one a live call")
    p.add_argument("--work-us", type=float, default=80.0, help="Python work per pacer per 20 ms tick")
    p.add_argument("--measure", action="store_true", help="measure this process's tree, print one JSON line")
    p.add_argument("--pg-admin", help="a PostgreSQL server's URL to create the databases on (--measure)")
    a = p.parse_args(argv)
    if a.measure or not a.trees:
        print(json.dumps(measure(a)))
        return 0
    options = [f"--{k.replace('_', '-')}={getattr(a, k)}" for k in ("calls", "repeat", "pacers", "work_us")]
    from bench.records import _postgres

    pg_root = Path(tempfile.mkdtemp(prefix="bench-records-loop-pg-"))
    pg = _postgres(pg_root)
    runs: dict[Path, list[dict[str, dict[str, float]]]] = {tree: [] for tree in a.trees}
    try:
        for r in range(a.rounds):
            for tree in a.trees if r % 2 == 0 else a.trees[::-1]:  # each tree goes first in turn
                env = {**os.environ, "PYTHONPATH": str(tree.resolve())}
                cmd = [sys.executable, str(Path(__file__).resolve()), "--measure", *options]
                if pg is not None:
                    cmd += ["--pg-admin", pg.admin_url]
                out = subprocess.run(cmd, env=env, cwd=tree, capture_output=True, text=True, check=True)
                runs[tree].append(json.loads(out.stdout.strip().splitlines()[-1]))
                print(f"round {r + 1} {tree}: {runs[tree][-1]}", file=sys.stderr, flush=True)
    finally:
        if pg is not None:
            pg.stop()
        shutil.rmtree(pg_root, ignore_errors=True)
    for tree, figs in runs.items():
        for kind in figs[0]:
            print(tree, kind, {k: statistics.median(f[kind][k] for f in figs) for k in figs[0][kind]})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
