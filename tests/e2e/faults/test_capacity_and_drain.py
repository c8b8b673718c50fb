"""Capacity and graceful drain.

``max_calls``: a call beyond it hears a polite busy message from the webhook, and a media upgrade
beyond it is refused. SIGTERM (a deploy): the server stops taking calls, says "draining" on
``/healthz``, lets live calls go on up to ``server.drain_timeout_s``, then ends the rest cleanly
and exits 0. The drain runs against a real server process started the way the Procfile does
(``python -m bridge.app``) and the way ``bridge serve`` does; the TTS is the local
protocol-faithful fake, in the test's process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from bridge.testing.fake_elevenlabs import FakeElevenLabs
from bridge.tools.simulator import PhoneCall, Timeline
from tests.e2e.conftest import API_KEY, REPO, bridge_settings, serve, tone_share, window
from tests.e2e.faults.conftest import no_leaks, wait_for
from tests.support import free_port

DRAIN_S = 2.5


async def test_calls_beyond_max_calls_hear_the_busy_message_and_their_stream_is_refused(script):
    async with FakeElevenLabs(api_key=API_KEY, seed=13) as fake:
        settings = bridge_settings(fake, script, BRIDGE_MAX_CALLS="1", BRIDGE_WARM_TTS_S="1")
        async with serve(settings) as bridge, no_leaks(bridge, fake):
            phone = PhoneCall(bridge.media_url, caller=Timeline([]), duration=2.0)
            task = asyncio.create_task(phone.run())
            await phone.started.wait()
            async with httpx.AsyncClient() as http:
                busy = await http.post(f"{bridge.http}/twilio/voice", data={"CallSid": "CA2"})
                with pytest.raises(InvalidStatus) as refused:
                    async with connect(bridge.media_url):
                        pass
                await task
                await wait_for(lambda: bridge.live_calls == 0, 5.0, "the call's slot is free again")
                free = await http.post(f"{bridge.http}/twilio/voice", data={"CallSid": "CA3"})
    assert busy.status_code == 200 and "<Say>Sorry, all our lines are busy" in busy.text and "<Hangup/>" in busy.text
    assert refused.value.response.status_code == 503
    assert re.search(r"<Connect[^>]*><Stream ", free.text), "once the call ended, the next one is taken"
    # The call's own socket, and the one opened for the call taken after it (closed unclaimed): the busy
    # webhook and the refused stream opened none.
    assert len(fake.connections) == 2


@contextlib.asynccontextmanager
async def server_process(command: list[str], port: int, env: dict[str, str], cwd: Path
                         ) -> AsyncIterator[asyncio.subprocess.Process]:
    """The bridge in its own process, up and healthy; killed if the test leaves it running."""
    proc = await asyncio.create_subprocess_exec(*command, env={**os.environ, **env}, cwd=cwd,
                                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        async with httpx.AsyncClient() as http:
            for _ in range(150):
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                        break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("the server did not come up")
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest.mark.parametrize("entry", ["python -m bridge.app", "bridge serve"])
async def test_sigterm_drains_live_calls_then_ends_them_cleanly_and_exits_0(script, tmp_path, entry):
    port = free_port()
    if entry == "bridge serve":
        command = [sys.executable, "-m", "bridge.tools.cli", "serve", "--port", str(port)]
    else:
        command = [sys.executable, "-m", "bridge.app", "--host", "127.0.0.1", "--port", str(port)]
    async with FakeElevenLabs(api_key=API_KEY, seed=14) as fake:
        env = {"BRIDGE_CONFIG": str(REPO / "config" / "bridge.toml"), "ELEVENLABS_API_KEY": API_KEY,
               "ELEVENLABS_BASE_URL": fake.base_url, "BRIDGE_TTS": "elevenlabs", "BRIDGE_AGENT_SCRIPT": str(script),
               "BRIDGE_DRAIN_TIMEOUT_S": str(DRAIN_S), "BRIDGE_LOG_LEVEL": "info"}
        async with server_process(command, port, env, tmp_path) as proc, httpx.AsyncClient() as http:
            url = f"ws://127.0.0.1:{port}/twilio/media"
            short = PhoneCall(url, caller=Timeline([]), duration=2.0)   # ends by itself during the drain
            long = PhoneCall(url, caller=Timeline([]), duration=9.0)    # outlives the drain timeout
            tasks = [asyncio.create_task(short.run()), asyncio.create_task(long.run())]
            await asyncio.gather(short.started.wait(), long.started.wait())
            await asyncio.sleep(1.0)
            term_at = long.now()
            proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.3)
            health = await http.get(f"http://127.0.0.1:{port}/healthz")
            webhook = await http.post(f"http://127.0.0.1:{port}/twilio/voice", data={"CallSid": "CA9"})
            with pytest.raises(InvalidStatus) as refused:
                async with connect(url):
                    pass
            short_report, long_report = await asyncio.gather(*tasks)
            began = time.monotonic()
            code = await asyncio.wait_for(proc.wait(), 10)
            exit_s = time.monotonic() - began
            output = (await proc.stdout.read()).decode() if proc.stdout else ""
    closed_after = long_report.server_closed - term_at
    still_heard = window(long.heard, term_at + 0.2, term_at + DRAIN_S - 0.2)
    print(f"\n[{entry}] SIGTERM at {term_at:.2f} s: /healthz {health.status_code} {health.json()}; the short call "
          f"ended itself; the long one was closed {closed_after:.2f} s after SIGTERM (code {long.log.close_code}); "
          f"process exit {code} {exit_s:.2f} s after the last call")
    assert health.status_code == 503
    assert health.json() == {"status": "draining", "calls": 2, "voice": "elevenlabs", "warning": None}
    assert "lines are busy" in webhook.text and refused.value.response.status_code == 503
    assert short_report.server_closed is None, "a call that ends within the drain is never cut"
    greeting_tone = {conn.contexts[0].frequency for conn in fake.connections}
    assert len(greeting_tone) == 1 and tone_share(still_heard, greeting_tone.pop()) > 0.8, \
        "the long call's greeting went on after SIGTERM"
    assert DRAIN_S - 0.2 < closed_after < DRAIN_S + 1.5 and long.log.close_code == 1000
    assert all(conn.messages[-1][1] == {"close_socket": True} for conn in fake.connections), "close_socket to the TTS"
    assert all(conn.closed_code == 1000 for conn in fake.connections)
    assert code == 0, output[-2000:]
    assert "draining" in output and "drain timeout: ending 1 call(s)" in output
