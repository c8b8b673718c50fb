"""Secrets never leave the process: not in logs at DEBUG (ours, uvicorn's, websockets'), not in
``/healthz`` or ``/metrics``, not in TwiML or printed URLs, not in error messages, even when the TTS server echoes
the key back in an error frame.

The bridge runs as its own process, as deployed, with every logger at DEBUG writing to its output;
the test then searches all of that output, and every response, for each secret and for every
8-character piece of it. The TTS is the local protocol-faithful fake, in the test's process.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

import httpx
from twilio.request_validator import RequestValidator

from bridge.testing.fake_elevenlabs import FakeElevenLabs
from bridge.tools.simulator import PhoneCall, Timeline
from tests.e2e.conftest import REPO
from tests.e2e.faults.test_capacity_and_drain import server_process
from tests.support import SPEECH, free_port

API_KEY = "sk_LEAKCHECK_5f1e2d3c4b5a69788796a5b4c3d2e1f0"
TOKEN = "LEAKCHECKtoken0a1b2c3d4e5f60718293"
SECRETS = (API_KEY, TOKEN)

LOG_CONFIG = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(levelname)s %(name)s: %(message)s"}},
    "handlers": {"out": {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stdout"}},
    "root": {"level": "DEBUG", "handlers": ["out"]},
    "loggers": {name: {"level": "DEBUG"} for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "websockets")},
}


def leaks(text: str) -> list[str]:
    """Every 8-character piece of a secret found in ``text``."""
    return [s[i : i + 8] for s in SECRETS for i in range(len(s) - 7) if s[i : i + 8] in text]


async def _calls(port: int, fake: FakeElevenLabs) -> list[str]:
    """A signed webhook, a refused one, a whole call with a barge-in and a TTS drop, a call whose
    TTS echoes the key in an error frame, /healthz and /metrics; returns every response body."""
    base, wss = f"http://127.0.0.1:{port}", f"wss://127.0.0.1:{port}/twilio/media"
    form = {"CallSid": "CA" + "1" * 32, "From": "+14155550100"}
    bodies: list[str] = []
    async with httpx.AsyncClient() as http:
        signature = RequestValidator(TOKEN).compute_signature(f"{base}/twilio/voice", form)
        for sig in (signature, "bad"):
            response = await http.post(f"{base}/twilio/voice", data=form, headers={"X-Twilio-Signature": sig})
            bodies.append(f"{response.status_code} {response.text}")
        caller = Timeline.from_files([(2.0, SPEECH / "caller_04.wav")])
        phone = PhoneCall(f"ws://127.0.0.1:{port}/twilio/media", caller=caller, duration=4.0, auth_token=TOKEN,
                          signed_url=wss)
        task = asyncio.create_task(phone.run())
        await asyncio.sleep(1.0)
        await fake.drop_all(1011)
        report = await task
        assert report.greeting_latency is not None and report.replies, "a whole call took place"
        fake.error_on_connect = {"message": f"Invalid API key: {API_KEY}", "error": "invalid_api_key", "code": 1008}
        echo = PhoneCall(f"ws://127.0.0.1:{port}/twilio/media", caller=Timeline([]), duration=1.0,
                         auth_token=TOKEN, signed_url=wss)
        await echo.run()
        for path in ("/healthz", "/metrics"):
            bodies.append((await http.get(f"{base}{path}")).text)
    return bodies


async def test_no_secret_in_any_log_line_response_or_printed_url(script, tmp_path: Path):
    config = tmp_path / "log.json"
    config.write_text(json.dumps(LOG_CONFIG))
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "bridge.app:app", "--port", str(port), "--log-level", "debug",
               "--log-config", str(config)]
    async with FakeElevenLabs(api_key=API_KEY, seed=15) as fake:
        env = {"BRIDGE_CONFIG": str(REPO / "config" / "bridge.toml"), "ELEVENLABS_API_KEY": API_KEY,
               "ELEVENLABS_BASE_URL": fake.base_url, "BRIDGE_TTS": "elevenlabs", "BRIDGE_AGENT_SCRIPT": str(script),
               "TWILIO_AUTH_TOKEN": TOKEN, "BRIDGE_LOG_LEVEL": "debug", "BRIDGE_DRAIN_TIMEOUT_S": "1"}
        async with server_process(command, port, env, tmp_path) as proc:
            bodies = await _calls(port, fake)
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 10)
            output = (await proc.stdout.read()).decode() if proc.stdout else ""
        serve_port = free_port()
        serve_env = {**env, "PUBLIC_URL": "https://bridge.example.com"}
        serve_cmd = [sys.executable, "-m", "bridge.tools.cli", "serve", "--port", str(serve_port)]
        async with server_process(serve_cmd, serve_port, serve_env, tmp_path) as serve_proc:
            serve_proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(serve_proc.wait(), 10)
            printed = (await serve_proc.stdout.read()).decode() if serve_proc.stdout else ""
    lines = output.splitlines()
    print(f"\n[secrets] searched {len(lines)} log lines, {len(bodies)} responses, {len(printed.splitlines())} "
          f"printed lines: {len(leaks(output + ''.join(bodies) + printed))} leaks")
    assert "> xi-api-key: [redacted]" in output, "websockets' DEBUG handshake log was captured, the key blanked"
    assert "invalid_api_key" in output and "[redacted]" in output, "the echoed key was blanked in the error"
    assert "Twilio voice webhook (POST): https://bridge.example.com/twilio/voice" in printed
    assert leaks(output) == [], [line for line in lines if leaks(line)][:5]
    assert leaks("".join(bodies)) == []
    assert leaks(printed) == []
