"""``GET /metrics``: what an operator's Prometheus (and an autoscaler) sees of the calls.

The end-to-end tests run the real app under uvicorn on 127.0.0.1 with the protocol-faithful
local ElevenLabs server (``bridge.testing.fake_elevenlabs``, standing in for the cloud API) and
the Twilio-protocol phone simulator. The metrics are process-wide, so each test reads the
difference a call made. The multi-process tests run worker processes as subprocesses.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bridge.testing.fake_elevenlabs import FakeElevenLabs
from bridge.tools.simulator import PhoneCall, Timeline
from tests.e2e.conftest import API_KEY, bridge_settings, serve, write_script
from tests.support import SPEECH

REPO = Path(__file__).resolve().parents[2]


def samples(text: str) -> dict[str, float]:
    """Every sample of an exposition, keyed ``name{label="value",...}``."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


async def scrape(base: str) -> dict[str, float]:
    async with httpx.AsyncClient() as client:
        response = await client.get(base + "/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return samples(response.text)


def delta(after: dict[str, float], before: dict[str, float], key: str) -> float:
    return after.get(key, 0.0) - before.get(key, 0.0)


async def test_a_call_with_a_barge_in_shows_up_in_the_metrics(tmp_path):
    script = write_script(tmp_path / "agent.txt")
    async with FakeElevenLabs(api_key=API_KEY, seed=5) as fake, serve(bridge_settings(fake, script)) as bridge:
        before = await scrape(bridge.http)
        caller = Timeline.from_files([(1.5, SPEECH / "caller_03.wav")])
        phone = PhoneCall(bridge.media_url, caller=caller, duration=6.0)
        await phone.start()
        during = await scrape(bridge.http)
        report = await phone.wait()
        # the server notices the hang-up a moment after the phone
        await fake.wait_until(lambda: bridge.live_calls == 0, timeout=5.0)
        after = await scrape(bridge.http)

    assert len(report.barge_ins) == 1 and report.replies[0].reply_at is not None
    assert delta(during, before, "bridge_live_calls") == 1
    assert delta(after, before, "bridge_live_calls") == 0
    assert delta(after, before, "bridge_calls_total") == 1
    assert delta(after, before, "bridge_barge_ins_total") == 1
    assert delta(after, before, "bridge_tts_reconnects_total") == 0
    assert delta(after, before, 'bridge_reply_latency_seconds_count{kind="greeting"}') == 1
    assert delta(after, before, 'bridge_reply_latency_seconds_count{kind="reply"}') == 1
    greeting_s = delta(after, before, 'bridge_reply_latency_seconds_sum{kind="greeting"}')
    assert 0 < greeting_s < report.greeting_latency + 0.05, "the server's figure is what the caller waited, or less"
    assert delta(after, before, "bridge_frame_lateness_seconds_count") > 10, "the pacing clock is watched"
    on_time = delta(after, before, 'bridge_frame_lateness_seconds_bucket{le="0.02"}')
    assert on_time / delta(after, before, "bridge_frame_lateness_seconds_count") > 0.9, "an idle server is on time"


async def test_calls_turned_away_are_counted(tmp_path):
    script = write_script(tmp_path / "agent.txt")
    async with FakeElevenLabs(api_key=API_KEY) as fake, \
            serve(bridge_settings(fake, script, BRIDGE_MAX_CALLS="1")) as bridge:
        before = await scrape(bridge.http)
        first = PhoneCall(bridge.media_url, caller=Timeline([]), duration=2.0)
        await first.start()
        second = PhoneCall(bridge.media_url, caller=Timeline([]), duration=1.0)
        with pytest.raises(Exception):  # noqa: B017 - the upgrade is refused: any handshake error will do
            await second.start()
        await first.wait()
        after = await scrape(bridge.http)
    assert delta(after, before, "bridge_calls_rejected_total") == 1
    assert delta(after, before, "bridge_calls_total") == 1


WORKER = textwrap.dedent("""
    import sys
    from bridge.server import metrics
    from bridge.core.call import Call
    calls = int(sys.argv[1])
    for _ in range(calls):
        metrics.call_started()
    snapshot = Call().snapshot
    for _ in range(int(sys.argv[2])):
        metrics.call_ended(snapshot, tts_connects=2)
""")


def _run(code: str, *args: str, env: dict[str, str]) -> str:
    done = subprocess.run([sys.executable, "-c", code, *args], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=30, check=True)
    return done.stdout


def test_worker_processes_share_their_figures_through_the_multiprocess_directory(tmp_path):
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    _run(WORKER, "3", "3", env=env)  # a worker that took three calls, all over
    _run(WORKER, "2", "0", env=env)  # one that died with two calls live: its live gauge must not linger
    exposition = _run("import sys; from bridge.server.metrics import _exposition; "
                      "sys.stdout.write(_exposition().decode())", env=env)
    figures = samples(exposition)
    assert figures["bridge_calls_total"] == 5
    assert figures["bridge_tts_reconnects_total"] == 3
    assert figures["bridge_live_calls"] == 0, "a dead worker's live calls are not counted"


def test_without_the_directory_each_process_reports_its_own():
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    code = WORKER + "\nfrom bridge.server.metrics import _exposition\nsys.stdout.write(_exposition().decode())"
    figures = samples(_run(code, "4", "1", env=env))
    assert figures["bridge_calls_total"] == 4
    assert figures["bridge_live_calls"] == 3
    assert "process_resident_memory_bytes" in figures, "the process's own CPU and memory come along"
