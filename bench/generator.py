"""A load generator process: dials its share of the calls, then reports what each call measured.

Run by `bench.load`, never by hand: ``python -m bench.generator SPEC.json OUT.json``. It runs
its calls on uvloop (the cheapest loop for the simulator too), starts each at its appointed
monotonic time (CLOCK_MONOTONIC is system-wide, so every process shares the schedule), and
reports its own CPU time while the calls ran, so the benchmark can tell whether the generator,
rather than the bridge, was the bottleneck.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.analysis import CallResult, analyse_call
from bench.scenario import Scenario, call_settings
from bridge.tools.simulator import PhoneCall

__all__ = ["main"]

GRACE_S = 20.0
LAG_PROBE_S = 0.01  # a call that has not finished this long after its duration is a failure


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _one_call(url: str, scenario: Scenario, at: float, echo: tuple[float, float] | None) -> PhoneCall | str:
    """The finished call, or why it failed; analysed only once every call is over, so the
    analysis never delays the calls still running in this process."""
    await asyncio.sleep(max(0.0, at - time.monotonic()))
    phone = PhoneCall(url, caller=scenario.timeline, duration=scenario.duration, open_timeout=10.0, echo=echo)
    try:
        async with asyncio.timeout(scenario.duration + GRACE_S):
            await phone.run()
    except Exception as exc:  # any failure of one call is a data point, not the end of the run
        with contextlib.suppress(Exception):
            await phone.hangup()
        return f"call error: {type(exc).__name__}"
    return phone


async def _watch_lag(lags: list[float]) -> None:
    """How late this process's event loop wakes up: if it is late, so are the calls' clocks."""
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + LAG_PROBE_S
        await asyncio.sleep(LAG_PROBE_S)
        lags.append(loop.time() - due)


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    settings = call_settings(os.environ, Path(spec["config"]))
    scenarios = {v: Scenario.build(v, spec["cycles"], settings) for v in {c["variant"] for c in spec["calls"]}}
    plan = [(scenarios[c["variant"]], spec["start_at"] + c["offset"]) for c in spec["calls"]]
    lags: list[float] = []
    watcher = asyncio.create_task(_watch_lag(lags))
    cpu0 = _cpu_seconds()
    echo = (float(spec["echo"][0]), float(spec["echo"][1])) if spec.get("echo") else None
    outcomes = await asyncio.gather(*(_one_call(spec["url"], sc, at, echo) for sc, at in plan))
    cpu = _cpu_seconds() - cpu0
    watcher.cancel()
    results = [
        CallResult(failures=[outcome]) if isinstance(outcome, str) else analyse_call(outcome, sc, spec["ttfb"])
        for outcome, (sc, _) in zip(outcomes, plan, strict=True)
    ]
    if spec.get("timelines"):
        _write_timelines(Path(spec["timelines"]), spec["calls"], outcomes, results)
    busy = [lag for lag in lags if lag >= 0] or [0.0]
    return {
        "cpu_s": cpu,
        "loop_lag_ms_p99": round(float(np.percentile(busy, 99)) * 1000, 1),
        "loop_lag_ms_max": round(max(busy) * 1000, 1),
        "calls": [r.to_json() for r in results],
    }


def _write_timelines(
    folder: Path, calls: list[dict[str, Any]], outcomes: list[PhoneCall | str], results: list[CallResult]
) -> None:
    """Each call's timeline as text, for reading what happened to one bad call."""
    folder.mkdir(parents=True, exist_ok=True)
    for call, outcome, result in zip(calls, outcomes, results, strict=True):
        text = outcome if isinstance(outcome, str) else outcome.timeline_text(marks=False)
        (folder / f"call-{call['variant']:04d}.txt").write_text(f"{text}\n\n{result}\n")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    spec = json.loads(Path(args[0]).read_text())
    import uvloop

    out = uvloop.run(run(spec))
    status = Path("/proc/self/status").read_text()
    out["peak_rss_kb"] = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM")), 0)
    Path(args[1]).write_text(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
