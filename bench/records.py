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
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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
           "server_cpu_s": f["server_cpu_s"], "recorded": recorded}
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
    import shutil
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
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-records-") as tmp:
        work = Path(tmp)
        (work / "pg").mkdir()
        pg = _postgres(work / "pg")
        try:
            for r in range(args.repeat):
                rows.append(_run(args, "records off", {"BRIDGE_RECORD_CALLS": "false"}, None))
                sqlite = f"sqlite:///{work / f'sqlite{r}.db'}"
                rows.append(_run(args, "SQLite", {"BRIDGE_DATABASE_URL": sqlite}, sqlite))
                if pg is not None:
                    url = _new_database(pg, f"run{r}")
                    rows.append(_run(args, "PostgreSQL", {"BRIDGE_DATABASE_URL": url}, url))
            if pg is not None:
                rows.append(_outage(args, pg))
        finally:
            if pg is not None:
                pg.stop()
    result = {"when": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine_description(),
              "command": " ".join(["python -m bench.records", *(sys.argv[1:] if argv is None else argv)]),
              "rows": rows}
    (RESULTS / "records.json").write_text(json.dumps(result, indent=1) + "\n")
    if args.docs:
        _update_docs(result, args)
    return 0


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


def _update_docs(result: dict[str, Any], args: argparse.Namespace) -> None:
    lines = [SECTION, "", "Generated by `python -m bench.records` (`bench/records.py`): "
             f"{args.calls} concurrent calls with barge-ins per run (plus `bench.load`'s warm-up call), "
             "one uvicorn worker, records off vs. written to SQLite vs. PostgreSQL, then a run with "
             "PostgreSQL stopped in the middle of the load. `recorded` counts calls with a finished "
             "record in the database after the server stopped.", "",
             f"{result['when']}, {result['machine']}", "",
             "| run | calls | recorded | underruns | lateness p99 (ms) | failures | server CPU (s) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in result["rows"]:
        recorded = "—" if row["recorded"] is None else row["recorded"]
        lines.append(f"| {row['label']} | {row['calls']} | {recorded} | {row['underruns']} | "
                     f"{row['lateness_ms_p99']} | {row['failures']} | {row['server_cpu_s']} |")
    text = DOCS.read_text(encoding="utf-8")
    before, _, after = text.partition(SECTION)
    rest = after[after.find("\n## "):] if "\n## " in after else ""
    DOCS.write_text(before.rstrip("\n") + "\n\n" + "\n".join(lines) + "\n" + rest, encoding="utf-8")


if __name__ == "__main__":
    raise SystemExit(main())
