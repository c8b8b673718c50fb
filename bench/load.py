"""The load benchmark: how many calls one bridge worker carries, and what each call costs.

    python -m bench.load            # the full search (about 15 minutes); results into docs/benchmarks.md
    python -m bench.load --quick    # 10 and 50 calls, once each (about a minute); docs untouched
    python -m bench.load --load short --steps 100   # short calls, TTS in pcm_16000 (resampled)
    python -m bench.load --quick --steps 50 --server granian     # the transport under test
    python -m bench.load --quick --steps 50 --ws wsproto --http h11

Two loads: ``long`` (the default: calls of 2 barge-in cycles, 22 s, the TTS speaking µ-law as the
phone does) and ``short`` (one cycle, 12 s: greeting, a barge-in, a reply, "yes", a reply; the TTS
asked for ``pcm_16000``, so every chunk is resampled). Short calls weigh the per-call set-up
(the handshake, the TTS socket, the call's objects) against less audio; long ones the per-frame path.

For each step N (10, 50, 100, 150, 200, ...) and each repeat, in fresh processes on 127.0.0.1:
the fake ElevenLabs server (``python -m bridge.testing.fake_elevenlabs``), the real app served as
``python -m bridge.app`` serves it (``bench.serve``: one uvicorn worker, uvloop, the bridge's
WebSocket protocol), and load generators (``bench.generator``, one
per ``--calls-per-generator`` calls) that dial N simulated Twilio calls. CPU and memory of every
process are read from /proc, so the server's figures are its own. The search stops at the first N
whose medians break the bound (p99 frame lateness ≤ 20 ms, no underruns, no failures), then
bisects between it and the last N within the bound, until the time budget would be exceeded.
Definitions: `bench.analysis` and docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.analysis import CallResult, percentiles
from bench.figures import LATENESS_BOUND_MS, Costs, run_figures, step_figures
from bench.procs import (
    Prober,
    Proc,
    RssSampler,
    free_port,
    machine_busy_seconds,
    machine_description,
    wait_http,
    wait_port,
)
from bench.render import update_docs
from bench.scenario import SCRIPT, call_duration, call_settings
from bridge.tools.simulator import PhoneCall, Timeline

__all__ = ["main"]

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
API_KEY = "bench-key-not-a-secret"
DEFAULT_STEPS = (10, 50, 100, 150, 200, 250, 300, 400, 500)
LOADS = {  # name: (barge-in cycles per call, the TTS's output_format)
    "long": (2, "ulaw_8000"),
    "short": (1, "pcm_16000"),
}
WS_MAX_SIZE = 1 << 20  # as the Procfile and gunicorn.conf.py give the server
OVERHEAD_S = 12.0  # per run, besides the calls: processes, warm-up call, generators starting
GENERATOR_START_S = 3.0  # generators import and render their callers before the first call


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.load", description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="10 and 50 calls, one run each, one cycle per call")
    p.add_argument("--steps", type=lambda s: [int(x) for x in s.split(",")], help="call counts, e.g. 10,50,100")
    p.add_argument("--repeat", type=int, default=3, help="runs per step; the medians are reported")
    p.add_argument("--load", choices=(*LOADS, "both"),
                   help="long: 22 s calls, µ-law TTS; short: 12 s calls, pcm_16000 TTS (resampled); both, one"
                        " after the other (the default, unless --quick or --out: then long)")
    p.add_argument("--cycles", type=int, help="barge-in cycles per call (10 s each, +2 s; default: the load's)")
    p.add_argument("--budget", type=float, default=900.0, help="seconds; no step starts that would exceed it")
    p.add_argument("--ttfb", type=float, default=0.05, help="the fake TTS's time to first audio, seconds")
    p.add_argument("--calls-per-generator", type=int, default=50)
    p.add_argument("--ramp", type=float, default=4.0, help="calls start spread over up to this many seconds")
    p.add_argument("--out", type=Path, help="JSON results file (default bench/results/load.json)")
    p.add_argument("--docs", action=argparse.BooleanOptionalAction, default=None,
                   help="write the results table into docs/benchmarks.md (default: yes, unless --quick)")
    p.add_argument("--profile", type=Path, help="record the server with py-spy (collapsed stacks) into this folder")
    p.add_argument("--timelines", type=Path, help="write every call's timeline into this folder")
    p.add_argument("--server-tree", type=Path, default=REPO,
                   help="run the server from this copy of the repository (A/B tests of a change)")
    p.add_argument("--label", default="", help="a note stored with the results, e.g. the change under test")
    p.add_argument("--app", default="bridge.app:app", help="the ASGI app to serve (bench.floor:app: the I/O floor)")
    p.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop", help="the server's event loop")
    p.add_argument("--server", choices=("uvicorn", "granian"), default="uvicorn", help="the ASGI server")
    p.add_argument("--ws", default="frames", choices=("frames", "auto", "websockets-sansio", "websockets", "wsproto"),
                   help="the WebSocket protocol: frames (bridge.server.wsframes, what `bridge serve`, the Procfile"
                        " and gunicorn.conf.py run; the default) or one of uvicorn's own")
    p.add_argument("--http", default="httptools", choices=("auto", "httptools", "h11"),
                   help="uvicorn's HTTP parser (default: httptools, which uvicorn[standard] installs)")
    p.add_argument("--echo", type=lambda s: tuple(float(x) for x in s.split(",")), metavar="LOSS_DB,DELAY_MS",
                   help="every caller is on a speakerphone: the agent as played returns on the line LOSS_DB down,"
                        " DELAY_MS later (e.g. 10,120); default: no echo")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="NAME=VALUE",
                   help="an environment setting for the server, e.g. BRIDGE_PLAYBACK_LEAD_MS=200 (repeatable)")
    args = p.parse_args(argv)
    if args.load is None:
        args.load = "long" if args.quick or args.out else "both"
    if args.load == "both" and args.out:
        p.error("--out takes one load: choose --load long or --load short")
    cycles, out = args.cycles, args.out
    if args.quick:
        args.steps = args.steps or [10, 50]
        args.repeat, cycles = 1, cycles or 1
    args.loads = [load for load in LOADS if args.load in (load, "both")]
    args.steps = args.steps or list(DEFAULT_STEPS)
    if args.docs is None:
        args.docs = not args.quick
    args.cycles_given = cycles
    for_load(args, args.loads[0], cycles, out)
    args.server_tree = args.server_tree.resolve()
    return args


class Run:
    """One run of N calls in fresh processes: fake TTS, server, generators; all stopped at the end."""

    def __init__(self, n: int, args: argparse.Namespace, work: Path) -> None:
        self.n, self.args, self.work = n, args, work
        self.tts_port, self.app_port = free_port(), free_port()
        script = work / "agent.txt"
        script.write_text("\n".join(SCRIPT) + "\n")
        base = {k: v for k, v in os.environ.items() if not k.startswith(("BRIDGE_", "ELEVENLABS_", "PROMETHEUS_"))}
        self.env = base | {
            "ELEVENLABS_API_KEY": API_KEY,
            "ELEVENLABS_BASE_URL": f"ws://127.0.0.1:{self.tts_port}",
            "BRIDGE_TTS": "elevenlabs",
            "BRIDGE_AGENT_SCRIPT": str(script),
            "BRIDGE_MAX_CALLS": "100000",
            "BRIDGE_LOG_LEVEL": "info",
            "ELEVENLABS_OUTPUT_FORMAT": args.output_format,
        } | dict(item.split("=", 1) for item in args.overrides)
        self.url = f"ws://127.0.0.1:{self.app_port}/twilio/media"
        self.procs: list[Proc] = []

    def _spawn(self, name: str, argv: list[str], cwd: Path) -> Proc:
        proc = Proc(name, argv, self.env, self.work / f"{name}.log", cwd)
        self.procs.append(proc)
        return proc

    def start(self) -> None:
        py = sys.executable
        self.tts = self._spawn("tts", [py, "-m", "bridge.testing.fake_elevenlabs", "--port", str(self.tts_port),
                                       "--api-key", API_KEY, "--ttfb", str(self.args.ttfb)], REPO)
        self.server = self._spawn("server", server_argv(self.args, self.app_port), self.args.server_tree)
        wait_port(self.tts_port, self.tts)
        wait_http(f"http://127.0.0.1:{self.app_port}/healthz", self.server)
        # One short call first, so lazy imports and first-use costs are not charged to the load.
        asyncio.run(PhoneCall(self.url, caller=Timeline([]), duration=1.5).run())
        time.sleep(0.3)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        lines = self.server.log_tail(100_000).splitlines()
        errors = [line for line in lines if "Traceback" in line or " ERROR " in line]
        if errors:
            print(f"  the server logged {len(errors)} errors; the first: {errors[0]}", file=sys.stderr)

    def _plans(self, start_at: float) -> list[dict[str, Any]]:
        n, args = self.n, self.args
        rng = random.Random(n)
        ramp = min(args.ramp, n * 0.04)
        calls = [{"variant": i, "offset": i * ramp / n + rng.uniform(0, 0.02)} for i in range(n)]
        k = max(1, -(-n // args.calls_per_generator))
        timelines = str(args.timelines / f"n{n}") if args.timelines else None
        config = str(args.server_tree / "config" / "bridge.toml")
        echo = [args.echo[0], args.echo[1] / 1000] if args.echo else None
        return [{"url": self.url, "start_at": start_at, "cycles": args.cycles, "ttfb": args.ttfb, "echo": echo,
                 "config": config, "timelines": timelines, "calls": calls[g::k]} for g in range(k)]

    def load(self) -> dict[str, Any]:
        """Dial the N calls, wait for every generator, and measure what each process spent."""
        idle_kb = self.server.status_kb("VmRSS")
        cpu0 = {p.name: p.cpu_seconds() for p in (self.server, self.tts)}
        busy0, t0 = machine_busy_seconds(), time.monotonic()
        gens = []
        for g, plan in enumerate(self._plans(time.monotonic() + GENERATOR_START_S)):
            (self.work / f"plan{g}.json").write_text(json.dumps(plan))
            argv = [sys.executable, "-m", "bench.generator", str(self.work / f"plan{g}.json"),
                    str(self.work / f"out{g}.json")]
            gens.append(self._spawn(f"gen{g}", argv, REPO))
        spy = self._profiler()
        probes = {"server": f"http://127.0.0.1:{self.app_port}/healthz", "tts": f"http://127.0.0.1:{self.tts_port}/"}
        limit = GENERATOR_START_S + self.args.ramp + call_duration(self.args.cycles) + 60.0
        with RssSampler([self.server]) as rss, Prober(probes) as prober:
            codes = [g.wait(max(1.0, t0 + limit - time.monotonic())) for g in gens]
        wall = time.monotonic() - t0
        cpu = {p.name: p.cpu_seconds() - cpu0[p.name] for p in (self.server, self.tts)}
        busy = machine_busy_seconds() - busy0
        if spy is not None:
            spy.popen.send_signal(signal.SIGINT)
            spy.wait(30)
        for g, code in zip(gens, codes, strict=True):
            if code != 0:
                raise RuntimeError(f"{g.name} failed ({code}):\n{g.log_tail()}")
        outs = [json.loads((self.work / f"out{g}.json").read_text()) for g in range(len(gens))]
        calls = [CallResult.from_json(c) for out in outs for c in out["calls"]]
        gen_cpu = sum(o["cpu_s"] for o in outs)
        costs = Costs(
            wall_s=wall, server_cpu_s=cpu["server"], tts_cpu_s=cpu["tts"], generator_cpu_s=gen_cpu,
            other_cpu_s=max(0.0, busy - cpu["server"] - cpu["tts"] - gen_cpu), server_idle_kb=idle_kb,
            server_peak_kb=max(rss.peaks["server"], idle_kb), generator_peak_kb=max(o["peak_rss_kb"] for o in outs),
            generator_lag_ms=(max(o["loop_lag_ms_p99"] for o in outs), max(o["loop_lag_ms_max"] for o in outs)),
            probes_ms={k: percentiles([t * 1000 for t in v], (50, 99, 100)) for k, v in prober.times.items()},
        )
        return run_figures(self.n, calls, costs)

    def _profiler(self) -> Proc | None:
        """py-spy on the server for the whole load (``pip install py-spy``); SIGINT makes it write."""
        if self.args.profile is None:
            return None
        self.args.profile.mkdir(parents=True, exist_ok=True)
        out = self.args.profile / f"server-{self.n}-{int(time.time())}.txt"
        spy = Path(sys.executable).with_name("py-spy")
        return self._spawn("py-spy", [str(spy), "record", "--pid", str(self.server.pid), "--format", "raw",
                                      "--rate", "250", "--nonblocking", "--output", str(out)], REPO)


def for_load(args: argparse.Namespace, load: str, cycles: int | None = None, out: Path | None = None) -> None:
    """Point ``args`` at one load: its call length, the TTS's format, its results file."""
    args.load = load
    args.cycles = cycles or LOADS[load][0]
    args.output_format = LOADS[load][1]
    name = ("quick" if args.quick else "load") + ("" if load == "long" else f"-{load}")
    args.out = out or RESULTS / f"{name}.json"


def server_argv(args: argparse.Namespace, port: int) -> list[str]:
    """The server's command line: one worker of the chosen ASGI server and transport.

    Granian has no option for the largest WebSocket message it accepts (its own limits are
    megabytes, not the 1 MiB uvicorn is given), so it is measured here, not shipped.
    """
    py = sys.executable
    if args.server == "granian":
        return [py, "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1", "--port", str(port),
                "--loop", args.loop, "--workers", "1", "--log-level", "warning", "--no-access-log", args.app]
    if args.ws == "frames":  # uvicorn's command line names only its own protocols
        return [py, "-m", "bench.serve", args.app, "--port", str(port), "--loop", args.loop, "--http", args.http]
    return [py, "-m", "uvicorn", args.app, "--host", "127.0.0.1", "--port", str(port), "--loop", args.loop,
            "--ws", args.ws, "--http", args.http, "--ws-max-size", str(WS_MAX_SIZE),
            "--log-level", "warning", "--no-access-log"]


def run_once(n: int, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        run = Run(n, args, Path(tmp))
        try:
            run.start()
            return run.load()
        finally:
            run.stop()


def _search(args: argparse.Namespace) -> tuple[list[dict[str, Any]], str]:
    """Step through ``args.steps`` until one breaks the bound; then, budget allowing, bisect
    between the last good step and the bad one (to a tenth of the gap) for the largest N."""
    started = time.monotonic()
    per_run = call_duration(args.cycles) + args.ramp + OVERHEAD_S
    steps: list[dict[str, Any]] = []

    def budget_left() -> bool:
        return time.monotonic() - started + per_run * args.repeat <= args.budget

    def run_step(n: int) -> dict[str, Any]:
        runs = []
        for r in range(args.repeat):
            print(f"N = {n}, run {r + 1}/{args.repeat}", file=sys.stderr, flush=True)
            runs.append(run_once(n, args))
            _print_run(runs[-1])
        step = step_figures(runs) | {"repeats": runs}
        steps.append(step)
        return step

    good, bad = 0, None
    for n in args.steps:
        if not budget_left():
            return steps, f"time budget ({args.budget:.0f} s) reached before N = {n}"
        if not run_step(n)["ok"]:
            bad = n
            break
        good = n
    if bad is None:
        return steps, "all steps passed"
    reason = f"N = {bad} broke the bound"
    while good and bad - good > max(5, bad // 10) and budget_left():
        n = (good + bad) // 2 // 5 * 5
        if run_step(n)["ok"]:
            good = n
        else:
            bad = n
            reason = f"N = {bad} broke the bound"
    steps.sort(key=lambda step: step["calls"])
    return steps, reason


def _print_run(f: dict[str, Any]) -> None:
    print(
        f"  server {f['cpu_s_per_call_min']} CPU s/call-min ({f['server_cores_busy']} cores),"
        f" {f['rss_mb_per_call']} MB/call; lateness p50/p99 {f['lateness_ms_p50']}/{f['lateness_ms_p99']} ms,"
        f" underruns {f['underruns']}, failures {f['failures']} {f['failure_kinds'] or ''}\n"
        f"  reaction {f['reaction_ms']} ms, VAD->clear {f['vad_to_clear_ms']}, greeting overhead"
        f" {f['greeting_overhead_ms']}, reply overhead {f['reply_overhead_ms']}\n"
        f"  generators {f['generator_cpu_s']} CPU s (loop lag p99 {f['generator_loop_lag_ms_p99']} ms),"
        f" TTS {f['tts_cpu_s']} CPU s, others {f['other_cores_busy']} cores;"
        f" probe ms p50/p99/max server {f.get('server_probe_ms')} TTS {f.get('tts_probe_ms')}",
        file=sys.stderr, flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    out = args.out if len(args.loads) == 1 else None
    for load in args.loads:
        for_load(args, load, args.cycles_given, out)
        _measure(args, argv)
    return 0


def _measure(args: argparse.Namespace, argv: list[str] | None) -> None:
    """The search for one load, its results file and (unless --no-docs) its table in the docs."""
    machine = machine_description()
    settings = call_settings({"ELEVENLABS_API_KEY": API_KEY, "BRIDGE_TTS": "elevenlabs"},
                             args.server_tree / "config" / "bridge.toml")
    steps, stop_reason = _search(args)
    passing = [s["calls"] for s in steps if s["ok"]]
    result = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "label": args.label,
        "command": " ".join(["python -m bench.load", *(sys.argv[1:] if argv is None else argv)]),
        "machine": machine,
        "settings": {"load": args.load, "output_format": args.output_format, "server": args.server,
                     "ws": args.ws, "http": args.http, "repeat": args.repeat, "cycles": args.cycles,
                     "call_s": call_duration(args.cycles), "ttfb_s": args.ttfb, "echo": args.echo,
                     "vad": {k: getattr(settings.vad, k) for k in ("start_ms", "end_ms")},
                     "calls_per_generator": args.calls_per_generator, "lateness_bound_ms": LATENESS_BOUND_MS},
        "max_calls_within_bound": max(passing, default=None),
        "stop_reason": stop_reason,
        "steps": steps,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"results: {args.out}; largest N within the bound: {result['max_calls_within_bound']} ({stop_reason})")
    if args.docs:
        update_docs(REPO / "docs" / "benchmarks.md", result, section=args.load)

if __name__ == "__main__":
    raise SystemExit(main())
