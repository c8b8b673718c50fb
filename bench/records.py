"""What call records cost the calls, and whether a database outage loses any.

    python -m bench.records                 # 100 calls x (off, SQLite, PostgreSQL) x 2, then an outage run
    python -m bench.records --calls 20 --repeat 1 --no-docs   # a quick look

Each run is `bench.load`'s: fresh processes on 127.0.0.1 (fake ElevenLabs, the real app under
uvicorn, load generators dialling N simulated Twilio calls with barge-ins), with records off,
on SQLite (a file in the run's folder) or on PostgreSQL (a server this command starts from the
system's packages: initdb and pg_ctl in a temporary folder, as the ``postgres`` user when run as
root). Reported per run: caller-side underruns, p99 pacing lateness and failures (the calls'
quality), server CPU, and how many of the calls have a finished record in the database.

The outage run stops PostgreSQL (``pg_ctl stop -m fast``) a few seconds into the load and starts
it again some seconds later, while calls go on; every call must still have its record at the end.
Results go into docs/benchmarks.md ("Call records") unless ``--no-docs``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.core_cost import _best, _replay, scripted_call
from bench.load import RESULTS, _arguments, run_once
from bench.procs import machine_description

__all__ = ["main"]

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs" / "benchmarks.md"
SECTION = "## Call records"


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.records", description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--calls", type=int, default=100)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--cycles", type=int, default=1, help="barge-in cycles per call (bench.load)")
    p.add_argument("--outage-at", type=float, default=6.0, help="seconds into the load the database stops")
    p.add_argument("--outage-s", type=float, default=8.0, help="how long it stays down")
    p.add_argument("--docs", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--rows-from", type=Path, help="take the load runs from this results file (as written by an "
                   "earlier run) and only measure the recorder's own cost again")
    return p.parse_args(argv)


def _load_args(args: argparse.Namespace, env: dict[str, str]) -> argparse.Namespace:
    sets = [x for k, v in env.items() for x in ("--set", f"{k}={v}")]
    return _arguments(["--repeat", "1", "--cycles", str(args.cycles), "--no-docs", *sets])


async def _finished_calls(url: str) -> int:
    from sqlalchemy import func, select

    from bridge.server.records import schema
    from bridge.server.records.store import Store

    store = Store(url)
    try:
        async with store.engine.connect() as conn:
            query = select(func.count()).select_from(schema.calls).where(schema.calls.c.ended_how.is_not(None))
            return int((await conn.execute(query)).scalar_one())
    finally:
        await store.aclose()


def _run(args: argparse.Namespace, label: str, env: dict[str, str], url: str | None,
         during: threading.Timer | None = None) -> dict[str, Any]:
    print(f"{label}: {args.calls} calls", file=sys.stderr, flush=True)
    load = float(Path("/proc/loadavg").read_text().split()[0]) if Path("/proc/loadavg").exists() else None
    if during is not None:
        during.start()
    try:
        f = run_once(args.calls, _load_args(args, env))
    finally:
        if during is not None:
            during.join()
    recorded = asyncio.run(_finished_calls(url)) if url else None
    row = {"label": label, "calls": args.calls + 1,  # bench.load dials one warm-up call first
           "underruns": f["underruns"], "lateness_ms_p99": f["lateness_ms_p99"], "failures": f["failures"],
           "server_cpu_s": f["server_cpu_s"], "recorded": recorded, "load_before": load}
    print(f"  {row}", file=sys.stderr, flush=True)
    return row


def _postgres(root: Path) -> Any:
    """A PostgreSQL server from the system's packages, or None (then its rows are skipped)."""
    from tests.records.conftest import Postgres, _has_user, _pg_bin, free_port

    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        print("PostgreSQL is not installed: its runs are skipped", file=sys.stderr)
        return None
    import os
    import subprocess

    user = "postgres" if os.geteuid() == 0 and _has_user("postgres") else None
    if user:
        shutil.chown(root, user)
    subprocess.run((["runuser", "-u", user, "--"] if user else []) + [
        initdb, "-D", str(root / "data"), "-U", "bridge", "--auth=trust", "--no-sync"],
        check=True, capture_output=True, timeout=120)
    server = Postgres(pg_ctl, root / "data", free_port(), user)
    server.start()
    return server


def _new_database(server: Any, name: str) -> str:
    import asyncpg

    async def create() -> None:
        conn = await asyncpg.connect(server.admin_url)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(create())
    return str(server.url(name))


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    if args.rows_from is not None:
        earlier = json.loads(args.rows_from.read_text())
        rows, when, machine, command = earlier["rows"], earlier["when"], earlier["machine"], earlier["command"]
    else:
        rows = _load_runs(args)
        when, machine = datetime.now(UTC).isoformat(timespec="seconds"), machine_description()
        command = " ".join(["python -m bench.records", *(sys.argv[1:] if argv is None else argv)])
    cost, write = recorder_cost(), write_cost()
    print(f"recorder cost: {cost}; writing: {write}", file=sys.stderr, flush=True)
    result = {"when": when, "machine": machine, "command": command, "recorder_cost": cost, "write_cost": write,
              "rows": rows}
    (RESULTS / "records.json").write_text(json.dumps(result, indent=1) + "\n")
    if args.docs:
        _update_docs(result, args)
    return 0


def _load_runs(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-records-") as tmp:
        work = Path(tmp)
        pg_root = Path(tempfile.mkdtemp(prefix="bench-records-pg-"))  # the postgres user must reach it
        pg = _postgres(pg_root)
        try:
            for r in range(args.repeat):
                sqlite = f"sqlite:///{work / f'sqlite{r}.db'}"
                kinds: list[tuple[str, dict[str, str], str | None]] = [
                    ("records off", {"BRIDGE_RECORD_CALLS": "false"}, None),
                    ("SQLite", {"BRIDGE_DATABASE_URL": sqlite}, sqlite)]
                if pg is not None:
                    url = _new_database(pg, f"run{r}")
                    kinds.append(("PostgreSQL", {"BRIDGE_DATABASE_URL": url}, url))
                shift = r % len(kinds)  # each kind goes first in turn: a machine getting busier favours none
                for label, env, db in kinds[shift:] + kinds[:shift]:
                    rows.append(_run(args, label, env, db))
            if pg is not None:
                rows.append(_outage(args, pg))
        finally:
            if pg is not None:
                pg.stop()
            shutil.rmtree(pg_root, ignore_errors=True)
    return rows


def _outage(args: argparse.Namespace, pg: Any) -> dict[str, Any]:
    url = _new_database(pg, "outage")

    def outage() -> None:
        time.sleep(3.0 + args.outage_at)  # bench.load's generators start ~3 s after the server is up
        pg.stop()
        print(f"  PostgreSQL stopped for {args.outage_s:g} s", file=sys.stderr, flush=True)
        time.sleep(args.outage_s)
        pg.start()
        print("  PostgreSQL started again", file=sys.stderr, flush=True)

    label = f"PostgreSQL, stopped {args.outage_at:g}-{args.outage_at + args.outage_s:g} s into the load"
    return _run(args, label, {"BRIDGE_DATABASE_URL": url}, url, threading.Timer(0.0, outage))


def recorder_cost(cycles: int = 6, repeat: int = 5) -> dict[str, float]:
    """CPU the recorder adds to the core, per call, in-process and in simulated time (so a busy
    machine slows both sides alike): a call of ``cycles`` greeting/barge-in/reply rounds is
    scripted once; then the core handles its events alone, and a recorder is handed each event and
    each action exactly as the session hands them (with and without audio recording)."""
    from bridge.core.call import Call
    from bridge.server.records.recorder import CallRecorder

    events, call_s = scripted_call(cycles)

    call = Call()
    steps = [(event, call.handle(event)) for event in events]  # what the session hands the recorder
    core = _best(repeat, lambda: _replay(events))  # one call, every event in turn

    def watch(audio: bool) -> None:
        recorder = CallRecorder(lambda r: None, lambda: call.snapshot, audio=audio)
        for event, actions in steps:
            recorder.event(event)
            for action in actions:
                recorder.action(action)
        recorder.end(call.snapshot)

    watched, with_audio = _best(repeat, lambda: watch(False)), _best(repeat, lambda: watch(True))
    per_min = 60 / call_s
    return {"call_s": round(call_s, 1), "events": len(events),
            "core_ms_per_call_min": round(core * 1000 * per_min, 2),
            "recorder_ms_per_call_min": round(watched * 1000 * per_min, 2),
            "recorder_with_audio_ms_per_call_min": round(with_audio * 1000 * per_min, 2),
            "recorder_share_of_core_pct": round(100 * watched / core, 1)}


def write_cost(repeat: int = 10) -> dict[str, float]:
    """CPU the server spends writing one transaction of 1 and of 50 finished calls to SQLite (the
    writer's batch; driver thread included), and so per call at each batch size."""
    from bridge.server.records.store import Store
    from tests.records.factory import record

    async def measure(folder: str) -> dict[str, float]:
        store = Store(f"sqlite:///{folder}/cost.db")
        await store.migrate()
        out = {}
        try:
            for n in (1, 50):
                records = [record(i) for i in range(n)]
                await store.save(records, {})
                t0 = time.process_time()
                for _ in range(repeat):
                    await store.save(records, {})
                out[f"batch_{n}_ms"] = round((time.process_time() - t0) * 1000 / repeat, 2)
                out[f"batch_{n}_ms_per_call"] = round(out[f"batch_{n}_ms"] / n, 2)
        finally:
            await store.aclose()
        return out

    with tempfile.TemporaryDirectory() as folder:
        return asyncio.run(measure(folder))



def _update_docs(result: dict[str, Any], args: argparse.Namespace) -> None:
    cost, write, rows = result["recorder_cost"], result["write_cost"], result["rows"]
    m = result["machine"]
    where = f"{m['cpu']}, {m['cores']} cores, Python {m['python']}, load average {m['load_average_at_start'][0]}"
    lines = [SECTION, "", f"`{result['command']}` (`bench/records.py`), {result['when']}, {where}.", "",
             "**What the recorder costs a call.** Measured in-process on a scripted "
             f"{cost['call_s']:g} s call ({cost['events']} events, barge-ins every round): the core handles "
             "the events alone, then a recorder is handed each event and action as the session hands "
             "them. Least CPU time of several runs, per minute of call:", "",
             "| | CPU ms per call-minute |", "| --- | ---: |",
             f"| the call's core (`Call.handle`) | {cost['core_ms_per_call_min']} |",
             f"| the recorder | {cost['recorder_ms_per_call_min']} "
             f"({cost['recorder_share_of_core_pct']} % of the core) |",
             f"| the recorder, with audio recording | {cost['recorder_with_audio_ms_per_call_min']} |", "",
             "Writing happens in a thread of its own per process (docs/call-records.md). A transaction costs "
             "about the same for one call as for many, so the writer waits 0.5 s after a record arrives for "
             "others to join it (SQLite, CPU ms, driver thread included):", "",
             "| transaction of | CPU ms | per call |", "| --- | ---: | ---: |",
             f"| 1 call | {write['batch_1_ms']} | {write['batch_1_ms_per_call']} |",
             f"| 50 calls | {write['batch_50_ms']} | {write['batch_50_ms_per_call']} |", "",
             "**Under load, and with the database stopped.** Each run is `bench.load`'s (fresh processes on "
             f"127.0.0.1, one uvicorn worker, {rows[0]['calls'] - 1} concurrent calls with barge-ins plus a "
             "warm-up call): records off, on SQLite, on PostgreSQL, interleaved (each first in turn); then "
             "PostgreSQL stopped (`pg_ctl stop -m fast`) in the middle of a load and started again while calls go on. "
             "`recorded` counts calls with a finished record in the database after the server stopped; "
             "`load before` is the machine's 1-minute load average as the run began (2 cores).", "",
             "| run | calls | recorded | underruns | lateness p99 (ms) | failures | server CPU (s) | load before |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in rows:
        recorded = "—" if row["recorded"] is None else row["recorded"]
        lines.append(f"| {row['label']} | {row['calls']} | {recorded} | {row['underruns']} | "
                     f"{row['lateness_ms_p99']} | {row['failures']} | {row['server_cpu_s']} | {row['load_before']} |")
    lines += ["", "Medians per kind of run:", "", "| run | underruns | lateness p99 (ms) | server CPU (s) |",
              "| --- | ---: | ---: | ---: |"]
    for label in dict.fromkeys(r["label"] for r in rows):
        same = [r for r in rows if r["label"] == label]
        lines.append(f"| {label} | {_median([r['underruns'] for r in same])} | "
                     f"{_median([r['lateness_ms_p99'] for r in same])} | "
                     f"{_median([r['server_cpu_s'] for r in same])} |")
    text = DOCS.read_text(encoding="utf-8")
    before, _, after = text.partition(SECTION)
    rest = after[after.find("\n## "):] if "\n## " in after else ""
    ours = after[: len(after) - len(rest)]
    kept = ours[ours.find("\n### "):].rstrip("\n") + "\n" if "\n### " in ours else ""  # other benchmarks' parts
    DOCS.write_text(before.rstrip("\n") + "\n\n" + "\n".join(lines) + "\n" + kept + rest, encoding="utf-8")


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else round((ordered[mid - 1] + ordered[mid]) / 2, 2)


if __name__ == "__main__":
    raise SystemExit(main())
