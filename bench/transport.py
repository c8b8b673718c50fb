"""The WebSocket transport side by side: the same load against each ASGI server set-up, runs interleaved.

    python -m bench.transport --calls 100 --load long --rounds 1
    python -m bench.transport --calls 100 --load short --variants sansio,granian
    python -m bench.transport --calls 100 --app bench.floor:app   # the transport alone, receive side

Each variant is one way of serving the same app: uvicorn with the bridge's own protocol
(``frames``: `bridge.server.wsframes`, what ships), with each of uvicorn's WebSocket
implementations (``websockets-sansio``, the legacy ``websockets``, ``wsproto``), uvicorn with the
``h11`` HTTP parser instead of ``httptools``, and Granian (Rust HTTP and WebSocket, ASGI). Rounds run
every variant once, in turn, so a change in the machine's background load hits all of them alike.
The medians per variant are printed and stored in ``bench/results/transport-<load>.json``; the
table in docs/benchmarks.md quotes that file.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

from bench.load import RESULTS, _arguments, run_once

__all__ = ["VARIANTS", "main"]

VARIANTS: dict[str, list[str]] = {
    "frames": ["--ws", "frames", "--http", "httptools"],
    "sansio": ["--ws", "websockets-sansio", "--http", "httptools"],
    "websockets": ["--ws", "websockets", "--http", "httptools"],
    "wsproto": ["--ws", "wsproto", "--http", "httptools"],
    "sansio-h11": ["--ws", "websockets-sansio", "--http", "h11"],
    "granian": ["--server", "granian"],
}
KEYS = ("cpu_s_per_call_min", "server_cores_busy", "lateness_ms_p99", "underruns", "failures", "other_cores_busy")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.transport", description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--calls", type=int, default=100)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--load", choices=("long", "short"), default="long")
    p.add_argument("--app", default="bridge.app:app",
                   help="bench.floor:app: the receive-only floor, whose work is the same however the calls fare")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    p.add_argument("--out", type=Path, help="JSON results file (default bench/results/transport-<load>[-floor].json)")
    a = p.parse_args(argv)
    chosen = a.variants.split(",")
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in chosen}
    load_avg = [round(x, 2) for x in os.getloadavg()]
    for r in range(a.rounds):
        for variant in chosen:
            args = _arguments(["--load", a.load, "--no-docs", "--out", os.devnull, "--app", a.app, *VARIANTS[variant]])
            fig = run_once(a.calls, args)
            runs[variant].append(fig)
            print(f"round {r + 1} {variant}: " + ", ".join(f"{k} {fig[k]}" for k in KEYS), file=sys.stderr,
                  flush=True)
    summary = {v: {k: statistics.median(f[k] for f in figs) if all(f[k] is not None for f in figs) else None
                   for k in KEYS} for v, figs in runs.items()}
    for variant, figures in summary.items():
        print(f"{variant:>12}: " + ", ".join(f"{k} {figures[k]}" for k in KEYS))
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = a.out or RESULTS / f"transport-{a.load}{'-floor' if a.app.startswith('bench.floor') else ''}.json"
    out.write_text(json.dumps({"calls": a.calls, "load": a.load, "app": a.app, "rounds": a.rounds,
                               "load_average_at_start": load_avg, "summary": summary, "runs": runs}, indent=1) + "\n")
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
