"""Before/after of one change: the same load against two copies of the code, runs interleaved.

    python -m bench.ab BEFORE_TREE AFTER_TREE [--calls 50] [--rounds 3] [--cycles 2]
    python -m bench.ab . . --before-args "--loop asyncio" --after-args "--loop uvloop"

Each tree is a copy of the repository (at least ``bridge/`` and ``config/``) that the server is run
from. Runs alternate A, B, A, B... so a change in the machine's background load hits both sides
alike; the medians of the server's CPU seconds per call-minute are printed and stored in
``bench/results/ab-<label>.json``. This is how every row of the optimisation table in
docs/benchmarks.md was measured.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
from pathlib import Path
from typing import Any

from bench.load import RESULTS, _arguments, run_once

__all__ = ["main"]

KEYS = ("cpu_s_per_call_min", "server_cores_busy", "lateness_ms_p99", "underruns", "failures", "other_cores_busy")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ab")
    p.add_argument("before", type=Path)
    p.add_argument("after", type=Path)
    p.add_argument("--calls", type=int, default=50)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--cycles", type=int, default=2)
    p.add_argument("--label", default="change")
    p.add_argument("--before-args", default="", metavar="ARGS",
                   help='more bench.load arguments for the before side, e.g. "--loop asyncio" or '
                        '"--set BRIDGE_PLAYBACK_LEAD_MS=100" (compare settings on one tree)')
    p.add_argument("--after-args", default="", metavar="ARGS")
    a = p.parse_args(argv)
    runs: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
    for r in range(a.rounds):
        for side, tree, extra in (("before", a.before, a.before_args), ("after", a.after, a.after_args)):
            args = _arguments(["--cycles", str(a.cycles), "--server-tree", str(tree), "--no-docs", *shlex.split(extra)])
            fig = run_once(a.calls, args)
            runs[side].append(fig)
            print(f"round {r + 1} {side}: " + ", ".join(f"{k} {fig[k]}" for k in KEYS), file=sys.stderr, flush=True)
    summary = {side: {k: statistics.median(f[k] for f in figs if f[k] is not None) for k in KEYS[:2]}
               for side, figs in runs.items()}
    before, after = summary["before"]["cpu_s_per_call_min"], summary["after"]["cpu_s_per_call_min"]
    change = (after - before) / before
    print(f"{a.label}: CPU s/call-min {before:.3f} -> {after:.3f} ({change:+.1%}), median of {a.rounds} runs each")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"ab-{a.label}.json"
    out.write_text(json.dumps({"label": a.label, "calls": a.calls, "summary": summary, "runs": runs}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
