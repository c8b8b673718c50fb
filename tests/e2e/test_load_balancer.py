"""The scale-out recipe, for real: HAProxy (Debian's package) in front of bridge processes.

The test starts two bridge processes as the Procfile does (``python -m bridge.app``) and HAProxy
with ``deploy/haproxy.cfg`` on 127.0.0.1, a protocol-faithful local ElevenLabs server
(``bridge.testing.fake_elevenlabs``, standing in for the cloud API), and Twilio-protocol phone
simulators dialling through HAProxy. It checks that calls spread across the processes, that a
draining process leaves the rotation through its ``/healthz`` while its live call goes on to the
end, and that a rolling restart (drain one process, start its successor on the same address) drops
no call. Every process is stopped by the test and every wait is bounded. Without ``haproxy`` on the
machine (``apt-get install haproxy``) the tests are skipped with that reason, except under CI,
where they must run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bridge.testing.fake_elevenlabs import FakeElevenLabs
from bridge.tools.simulator import CallReport, PhoneCall, Timeline
from tests.e2e.conftest import write_script
from tests.e2e.test_scaleout import REPO, all_heard, fake, metric, ready, running, server_env, tail
from tests.support import free_port, stop_process

__all__ = ["fake"]  # the fixture, used by name

HAPROXY = shutil.which("haproxy") or ("/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None)
pytestmark = pytest.mark.skipif(HAPROXY is None and not os.environ.get("CI"),
                                reason="haproxy is not installed (apt-get install haproxy)")


@contextlib.contextmanager
def haproxy(backends: list[int], log: Path) -> Iterator[int]:
    port = free_port()
    env = os.environ | {"BRIDGE_LB_PORT": str(port)} | {
        f"BRIDGE_BACKEND_{n}": f"127.0.0.1:{p}" for n, p in enumerate(backends, 1)}
    assert HAPROXY is not None, "CI must install haproxy"
    with log.open("wb") as out:
        proc = subprocess.Popen([HAPROXY, "-db", "-f", str(REPO / "deploy" / "haproxy.cfg")], env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        yield port
    finally:
        stop_process(proc, 5)


def bridge_argv(port: int) -> list[str]:
    return [sys.executable, "-m", "bridge.app", "--host", "127.0.0.1", "--port", str(port)]


async def dial(port: int, n: int, seconds: float) -> list[CallReport]:
    phones = [PhoneCall(f"ws://127.0.0.1:{port}/twilio/media", caller=Timeline([]), duration=seconds)
              for _ in range(n)]
    return list(await asyncio.gather(*(p.run() for p in phones)))


async def live_calls(port: int) -> int:
    async with httpx.AsyncClient() as client:
        answer = await client.get(f"http://127.0.0.1:{port}/healthz")
    return int(answer.json()["calls"])


async def in_rotation(lb: int, backends: list[int]) -> None:
    """Until HAProxy's checks have seen every backend up (rise 2 × 200 ms), bounded."""
    deadline = time.monotonic() + 10
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(f"http://127.0.0.1:{lb}/healthz")).status_code == 200:
                    await asyncio.sleep(0.6)
                    return
            await asyncio.sleep(0.1)
    raise AssertionError("HAProxy never put the bridges in rotation")


async def test_calls_spread_across_processes_behind_haproxy(fake: FakeElevenLabs, tmp_path: Path) -> None:
    env = server_env(fake, write_script(tmp_path / "agent.txt"))
    ports = [free_port(), free_port()]
    with (running(bridge_argv(ports[0]), env, ports[0], tmp_path / "a.log"),
          running(bridge_argv(ports[1]), env, ports[1], tmp_path / "b.log"),
          haproxy(ports, tmp_path / "haproxy.log") as lb):
        for port in ports:
            await ready(f"http://127.0.0.1:{port}")
        await in_rotation(lb, ports)
        reports = await dial(lb, 6, 2.5)
        await asyncio.sleep(0.5)
        carried = [await metric(f"http://127.0.0.1:{p}", "bridge_calls_total") for p in ports]
    assert all_heard(reports), [(r.greeting_latency, r.underruns) for r in reports]
    assert sum(carried) == 6 and min(carried) >= 2, f"both processes took calls: {carried}"


async def test_a_rolling_restart_drops_no_live_call(fake: FakeElevenLabs, tmp_path: Path) -> None:
    """Drain the process that carries a call: HAProxy sends new calls to the other at once, the live
    call plays to its end, the process exits 0, and its successor on the same address takes calls."""
    env = server_env(fake, write_script(tmp_path / "agent.txt"), BRIDGE_DRAIN_TIMEOUT_S="20")
    ports = [free_port(), free_port()]
    with contextlib.ExitStack() as stack:
        procs = {p: stack.enter_context(running(bridge_argv(p), env, p, tmp_path / f"{p}.log")) for p in ports}
        lb = stack.enter_context(haproxy(ports, tmp_path / "haproxy.log"))
        for port in ports:
            await ready(f"http://127.0.0.1:{port}")
        await in_rotation(lb, ports)
        long_call = asyncio.create_task(dial(lb, 1, 6.0))
        await asyncio.sleep(1.0)
        [draining] = [p for p in ports if await live_calls(p) == 1]
        [other] = [p for p in ports if p != draining]
        procs[draining].send_signal(signal.SIGTERM)
        async with httpx.AsyncClient() as client:
            for _ in range(50):
                if (await client.get(f"http://127.0.0.1:{draining}/healthz")).status_code == 503:
                    break
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # HAProxy's next check marks it down (inter 200 ms, fall 1)
        during = await dial(lb, 3, 1.5)
        other_calls = await metric(f"http://127.0.0.1:{other}", "bridge_calls_total")
        [kept] = await long_call
        exit_code = procs[draining].wait(15)
        stack.enter_context(running(bridge_argv(draining), env, draining, tmp_path / "successor.log"))
        await ready(f"http://127.0.0.1:{draining}")
        await in_rotation(lb, ports)
        after = await dial(lb, 4, 1.5)
        await asyncio.sleep(0.5)
        successor_calls = await metric(f"http://127.0.0.1:{draining}", "bridge_calls_total")
    assert kept.server_closed is None and kept.greeting_latency is not None, "the live call went on to its end"
    assert not kept.underruns, kept.underruns
    assert all_heard(during), "calls placed during the drain were served"
    assert other_calls == 3, "every call placed during the drain went to the process still in rotation"
    assert exit_code == 0, tail(tmp_path / f"{draining}.log")
    assert all_heard(after) and successor_calls >= 1, "the successor is back in rotation"
