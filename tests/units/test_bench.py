"""The load benchmark runs with its one command and measures what it claims.

A real run, scaled down: the fake ElevenLabs server, the app under uvicorn and a load generator,
each its own process on 127.0.0.1, three calls of 12 s. The figures are checked for what a
working bridge must show (every barge-in cleared, no failure, sane costs), and the same command
against `bench.floor` (an app that never answers) must report the failures, so the benchmark
cannot pass a bridge that does nothing. Bounded: each run stops by itself in well under a minute.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.render import END, START, results_markdown

REPO = Path(__file__).resolve().parents[2]
AUDIO = REPO / "tests" / "audio"



def _bench(tmp_path: Path, *extra: str) -> dict:
    out = tmp_path / "load.json"
    cmd = [sys.executable, "-m", "bench.load", "--steps", "3", "--repeat", "1", "--cycles", "1", "--no-docs",
           "--out", str(out), "--budget", "120", *extra]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text())


def test_one_command_measures_a_working_bridge(tmp_path: Path) -> None:
    result = _bench(tmp_path)
    if not result["steps"][0]["ok"]:
        # The bound is 20 ms of pacing lateness: one stall of a shared machine breaks it. A working
        # bridge passes the next run; a broken one fails both.
        result = _bench(tmp_path)
    step = result["steps"][0]
    assert step["calls"] == 3 and step["ok"], {k: step[k] for k in (
        "failures", "failure_kinds", "underruns", "lateness_ms_p99", "lateness_ms_max", "generator_loop_lag_ms_max")}
    assert step["failures"] == 0 and step["underruns"] == 0
    assert step["barge_ins"] == 3, "one barge-in per call, each cleared"
    reaction_p50 = step["reaction_ms"][0]
    assert 60 <= reaction_p50 <= 400, "onset to clear: the VAD's start window plus a little"
    assert step["vad_to_clear_ms"][0] is not None and step["vad_to_clear_ms"][0] < 100
    assert 0 < step["cpu_s_per_call_min"] < 10
    assert 0 < step["rss_mb_per_call"] < 50
    assert result["max_calls_within_bound"] == 3
    assert {"cpu", "cores", "python"} <= set(result["machine"])
    table = results_markdown(result)
    assert "| 3 |" in table and "Largest N within the bound: 3" in table


def test_a_bridge_that_never_answers_fails_the_bound(tmp_path: Path) -> None:
    result = _bench(tmp_path, "--app", "bench.floor:app")
    step = result["steps"][0]
    assert not step["ok"]
    assert step["failure_kinds"].get("no greeting") == 3
    assert result["max_calls_within_bound"] is None


def test_benchmarks_doc_holds_a_results_table() -> None:
    text = (REPO / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    assert START in text and END in text
    table = text.split(START, 1)[1].split(END, 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert {int(line.split("|")[1]) for line in rows} >= {10, 50, 100}


def test_the_message_benchmark_runs_a_calls_messages_through_both_protocols() -> None:
    """`bench.ws_message` checks inside each run that the app read every message and that the
    replies went out; a protocol that lost or held back messages fails it."""
    from bench.ws_message import PROTOCOLS, per_message_us

    assert set(PROTOCOLS) == {"websockets-sansio", "frames"}
    for protocol in PROTOCOLS:
        assert per_message_us(protocol, 500) > 0
