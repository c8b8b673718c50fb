"""Scaling out: calls are independent, so more processes carry more calls, with no stickiness.

Each test starts real servers as subprocesses on 127.0.0.1 (``uvicorn --workers 2``, gunicorn
with uvicorn workers, two separate instances behind a round-robin TCP balancer written here), a
protocol-faithful local ElevenLabs server (``bridge.testing.fake_elevenlabs``, standing in for the
cloud API) and Twilio-protocol phone simulators, and checks that every call is carried and that
``/metrics`` adds up across processes; under gunicorn also that SIGTERM drains live calls and
which of gunicorn's ``graceful_timeout`` and the app's ``server.drain_timeout_s`` wins. Every server
is stopped by the test (SIGTERM, then SIGKILL), and every wait is bounded. See docs/scaling.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from bridge.server import metrics as bridge_metrics
from bridge.server.app import WS_MAX_SIZE
from bridge.testing.fake_elevenlabs import FakeElevenLabs
from bridge.tools.simulator import CallReport, PhoneCall, Timeline
from tests.e2e.conftest import API_KEY, write_script
from tests.support import free_port, stop_process
from tests.units.test_metrics import samples

REPO = Path(__file__).resolve().parents[2]
CALL_S = 2.5


def server_env(fake: FakeElevenLabs, script: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BRIDGE_", "ELEVENLABS_", "PROMETHEUS_"))}
    return env | {"ELEVENLABS_API_KEY": API_KEY, "ELEVENLABS_BASE_URL": fake.base_url, "BRIDGE_TTS": "elevenlabs",
                  "BRIDGE_AGENT_SCRIPT": str(script), "BRIDGE_LOG_LEVEL": "warning"} | extra


@contextlib.contextmanager
def running(argv: list[str], env: dict[str, str], port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A server process, stopped (SIGTERM, then SIGKILL) whatever happens.

    Its output goes to a file, never to an unread pipe: a server that logs more than a pipe holds
    would block on its next log line."""
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, tail(log)
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
            assert time.monotonic() < deadline, "the server did not start listening\n" + tail(log)
            time.sleep(0.05)
        yield proc
    finally:
        stop_process(proc, 15)


def tail(log: Path, chars: int = 3000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.exists() else "(no output)"


async def ready(base: str) -> None:
    """Until /healthz answers (from one worker: see ``workers_up`` for all of them)."""
    async with httpx.AsyncClient() as client:
        for _ in range(200):
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(base + "/healthz")).status_code == 200:
                    break
            await asyncio.sleep(0.05)


async def calls(url: str, n: int) -> list[CallReport]:
    phones = [PhoneCall(url, caller=Timeline([]), duration=CALL_S) for _ in range(n)]
    return list(await asyncio.gather(*(p.run() for p in phones)))


async def metric(base: str, name: str) -> float:
    async with httpx.AsyncClient() as client:
        text = (await client.get(base + "/metrics")).text
    return samples(text).get(name, 0.0)


def all_heard(reports: list[CallReport]) -> bool:
    return all(r.greeting_latency is not None and r.greeting_latency < 1.0 and not r.underruns for r in reports)


@pytest.fixture
async def fake() -> AsyncIterator[FakeElevenLabs]:
    async with FakeElevenLabs(api_key=API_KEY) as server:
        yield server


async def workers_up(folder: Path, n: int) -> None:
    """Until n worker processes have created their metrics files (each does as it imports the app)."""
    for _ in range(200):
        if len({p.stem.rsplit("_", 1)[1] for p in folder.glob("counter_*.db")}) >= n:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)  # from import to serving: the lifespan's start-up


async def _workers_share_metrics(argv: list[str], env: dict[str, str], port: int, n: int, log: Path) -> list[float]:
    base = f"http://127.0.0.1:{port}"
    with running(argv, env, port, log):
        await ready(base)
        await workers_up(Path(env["PROMETHEUS_MULTIPROC_DIR"]), 2)
        reports = await calls(f"ws://127.0.0.1:{port}/twilio/media", n)
        await asyncio.sleep(0.5)  # the servers notice the hang-ups
        totals = [await metric(base, "bridge_calls_total") for _ in range(6)]  # whichever worker answers
        live = await metric(base, "bridge_live_calls")
    assert all_heard(reports), [r.greeting_latency for r in reports]
    assert live == 0
    return totals


def worker_pids(folder: Path) -> set[str]:
    return {p.stem.rsplit("_", 1)[1] for p in folder.glob("counter_*.db")}


async def test_uvicorn_workers_carry_calls_and_report_one_total(fake, tmp_path):
    port = free_port()
    env = server_env(fake, write_script(tmp_path / "agent.txt"), PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"))
    argv = [sys.executable, "-m", "uvicorn", "bridge.app:app", "--host", "127.0.0.1", "--port", str(port),
            "--workers", "2", "--log-level", "warning"]
    totals = await _workers_share_metrics(argv, env, port, 6, tmp_path / "server.log")
    assert totals == [6] * 6, "every scrape, whichever worker answers it, counts the calls of both"
    assert len(worker_pids(tmp_path / "metrics")) == 2, "both workers write to the shared directory"


def gunicorn_argv(port: int, workers: int = 2) -> list[str]:
    """Started as docs/scaling.md says: the repo's gunicorn.conf.py, which picks the worker class.

    Without the ``scale`` extra these tests fail rather than skip: `make test` installs it, and a
    skip would hide the layout docs/scaling.md recommends behind a passing run."""
    missing = [name for name in ("gunicorn", "uvicorn_worker") if importlib.util.find_spec(name) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} not installed: pip install -e '.[scale]' (make test does)")
    return [sys.executable, "-m", "gunicorn", "bridge.app:app", "-c", str(REPO / "gunicorn.conf.py"),
            "--bind", f"127.0.0.1:{port}", "--workers", str(workers)]


def stale_calls_file(folder: Path, pid: int = 999_999, value: float = 100.0) -> Path:
    """A calls counter left by a worker of an earlier run, as prometheus_client itself writes it."""
    path = folder / f"counter_{pid}.db"
    calls_counter = bridge_metrics.CALLS.describe()[0]
    data = MmapedDict(str(path))
    data.write_value(mmap_key(calls_counter.name, calls_counter.name + "_total", [], [], calls_counter.documentation),
                     value, 0.0)
    data.close()
    return path


async def test_gunicorn_with_uvicorn_workers_carries_calls(fake, tmp_path):
    """Two gunicorn workers, one /metrics. The metrics directory here also holds the agent's
    script: gunicorn's start-up clears the earlier run's figures, and nothing else."""
    port = free_port()
    script = write_script(tmp_path / "agent.txt")
    stale = stale_calls_file(tmp_path)
    env = server_env(fake, script, PROMETHEUS_MULTIPROC_DIR=str(tmp_path))
    log = tmp_path / "server.log"
    totals = await _workers_share_metrics(gunicorn_argv(port), env, port, 4, log)
    assert totals == [4] * 6, "every scrape counts the calls of both workers, and none of an earlier run"
    assert not stale.exists() and script.exists()
    assert len(worker_pids(tmp_path)) == 2, "both workers write to the shared directory"
    assert "exited with code" not in tail(log, 100_000), "no worker restarted"


async def test_gunicorn_workers_refuse_oversized_frames_like_uvicorn(fake, tmp_path):
    """The worker class in gunicorn.conf.py applies the same WebSocket frame limit as the Procfile."""
    port = free_port()
    env = server_env(fake, write_script(tmp_path / "agent.txt"))
    with running(gunicorn_argv(port, workers=1), env, port, tmp_path / "server.log"):
        await ready(f"http://127.0.0.1:{port}")
        async with connect(f"ws://127.0.0.1:{port}/twilio/media", open_timeout=5) as ws:
            with contextlib.suppress(ConnectionClosed):
                await ws.send(b"\0" * (WS_MAX_SIZE + 1))
            await asyncio.wait_for(ws.wait_closed(), 5)
    assert ws.close_code == 1009, "message too big"


async def _sigterm_gunicorn_mid_calls(fake: FakeElevenLabs, tmp_path: Path, n: int, **env_extra: str
                                      ) -> tuple[list[float], list[PhoneCall], httpx.Response, int, float, str]:
    """n long calls on a 2-worker gunicorn, then SIGTERM to the master, as a deploy sends it.

    Returns when each call closed after the SIGTERM, the phones, /healthz just after it, the
    master's exit code, how long it took to exit, and the server's output."""
    port = free_port()
    base, url = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/twilio/media"
    env = server_env(fake, write_script(tmp_path / "agent.txt"), BRIDGE_LOG_LEVEL="info", **env_extra)
    log = tmp_path / "server.log"
    with running(gunicorn_argv(port), env, port, log) as proc:
        await ready(base)
        phones = [PhoneCall(url, caller=Timeline([]), duration=8.0) for _ in range(n)]
        tasks = [asyncio.create_task(p.run()) for p in phones]
        await asyncio.wait_for(asyncio.gather(*(p.started.wait() for p in phones)), 10)
        await asyncio.sleep(0.5)
        term_at = [p.now() for p in phones]
        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        health = httpx.Response(0)
        async with httpx.AsyncClient() as http:
            for _ in range(20):  # each worker hears SIGTERM from the master a moment later
                with contextlib.suppress(httpx.HTTPError):
                    health = await http.get(base + "/healthz")
                    if health.status_code == 503:
                        break
                await asyncio.sleep(0.05)
        await asyncio.wait_for(asyncio.gather(*tasks), 15)
        code = await asyncio.to_thread(proc.wait, 20)
        exit_s = time.monotonic() - began
    closed_after = [(p.log.server_closed or 99.0) - t for p, t in zip(phones, term_at, strict=True)]
    return closed_after, phones, health, code, exit_s, tail(log, 100_000)


async def test_gunicorn_sigterm_drains_live_calls_then_ends_them_cleanly(fake, tmp_path):
    """gunicorn.conf.py's graceful_timeout follows drain_timeout_s, so the app's drain wins."""
    drain_s = 1.5
    closed_after, phones, health, code, exit_s, output = await _sigterm_gunicorn_mid_calls(
        fake, tmp_path, 2, BRIDGE_DRAIN_TIMEOUT_S=str(drain_s))
    assert health.status_code == 503 and health.json()["status"] == "draining", "the listening socket stays open"
    assert all(drain_s - 0.2 < t < drain_s + 1.5 for t in closed_after), closed_after
    assert [p.log.close_code for p in phones] == [1000, 1000], "ended the way a hang-up ends them"
    assert all(conn.messages[-1][1] == {"close_socket": True} for conn in fake.connections), "close_socket to the TTS"
    assert code == 0 and exit_s < drain_s + 6, (code, exit_s, output[-2000:])
    assert "drain timeout: ending" in output and "SIGKILL" not in output


async def test_gunicorn_graceful_timeout_is_the_hard_limit(fake, tmp_path):
    """Set below the drain, gunicorn's graceful_timeout wins: calls are cut by SIGKILL, no goodbye."""
    closed_after, phones, _, code, exit_s, output = await _sigterm_gunicorn_mid_calls(
        fake, tmp_path, 1, BRIDGE_DRAIN_TIMEOUT_S="30", GRACEFUL_TIMEOUT="1")
    assert 0.8 < closed_after[0] < 3.0, closed_after
    assert phones[0].log.close_code != 1000, "the socket dropped without a close frame"
    assert fake.connections[0].messages[-1][1] != {"close_socket": True}, "nor a goodbye to the TTS"
    assert "drain timeout: ending" not in output, "the drain never got to end the call"
    assert code == 0 and exit_s < 5, (code, exit_s, output[-2000:])


async def _balance(ports: list[int]) -> tuple[asyncio.Server, int]:
    """A round-robin TCP balancer: each new connection goes to the next backend. No stickiness."""
    turn = 0

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal turn
        port, turn = ports[turn % len(ports)], turn + 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_instances_behind_a_load_balancer_need_no_stickiness(fake, tmp_path):
    env = server_env(fake, write_script(tmp_path / "agent.txt"))
    ports = [free_port(), free_port()]
    argv = [sys.executable, "-m", "uvicorn", "bridge.app:app", "--host", "127.0.0.1", "--log-level", "warning"]
    with (running([*argv, "--port", str(ports[0])], env, ports[0], tmp_path / "a.log"),
          running([*argv, "--port", str(ports[1])], env, ports[1], tmp_path / "b.log")):
        for port in ports:
            await ready(f"http://127.0.0.1:{port}")
        balancer, port = await _balance(ports)
        async with balancer:
            reports = await calls(f"ws://127.0.0.1:{port}/twilio/media", 4)
        await asyncio.sleep(0.5)
        per_instance = [await metric(f"http://127.0.0.1:{p}", "bridge_calls_total") for p in ports]
    assert all_heard(reports), [(r.greeting_latency, r.underruns) for r in reports]
    assert per_instance == [2, 2], "each instance carried the calls the balancer gave it, start to end"
