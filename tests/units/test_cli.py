"""The ``bridge`` command as people use it: `serve` prints where to point Twilio, `call` dials a
real server like Twilio and writes what both sides said, `tunnel` fails in one clear sentence.

`bridge call` and `bridge serve` run as subprocesses against real servers on 127.0.0.1. A real
ngrok tunnel cannot be opened here (no account, no internet): the SDK is replaced by a stand-in
for the success path, and the real SDK is run only to see it fail cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import http.server
import os
import re
import signal
import subprocess
import sys
import threading
import time
import types
import urllib.parse
import wave
from pathlib import Path

import httpx
import numpy as np
import pytest

from bridge.carriers.twilio.signature import is_valid_signature
from bridge.tools import cli, serving, tunnel
from bridge.tools.simulator import Timeline, pcm_to_ulaw, ulaw_to_pcm
from bridge.tools.simulator.cli import (
    DialError,
    Target,
    media_url_from_twiml,
    noise,
    parse_say,
    resolve_target,
    summary_lines,
)
from tests.e2e.conftest import REPO, bridge_settings, serve, write_script
from tests.support import SPEECH, free_port

PYTHON = [sys.executable, "-m", "bridge.tools.cli"]


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any setting or secret of the person running the tests."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("BRIDGE_", "ELEVENLABS_", "TWILIO_", "NGROK_")) and k != "PUBLIC_URL"}
    return env | extra


# ------------------------------------------------------------------ bridge call, end to end


def read_stereo(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with wave.open(str(path), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (2, 2, 8000)
        both = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2)
    return both[:, 0], both[:, 1]


def loud(samples: np.ndarray, start: float, end: float) -> float:
    """RMS level in dBFS of a stretch of one channel."""
    x = samples[int(start * 8000) : int(end * 8000)].astype(np.float64)
    rms = float(np.sqrt(np.mean(x**2))) if len(x) else 0.0
    return 20 * np.log10(rms / 32768) if rms else -np.inf


def timeline_times(stdout: str, what: str) -> list[float]:
    return [float(m.group(1)) for m in re.finditer(rf"^\s*([0-9.]+) {what}", stdout, re.M)]


async def run_call(*args: str, cwd: Path) -> tuple[int, str, str]:
    """`bridge call ...` as a subprocess, while this test's event loop keeps serving the bridge."""
    proc = await asyncio.create_subprocess_exec(*PYTHON, "call", *args, cwd=cwd, env=clean_env(),
                                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_bridge_call_dials_like_twilio_and_writes_what_each_side_said(tmp_path):
    pytest.importorskip("espeakng_loader")
    settings = bridge_settings(None, write_script(tmp_path / "agent.txt", [
        "Hello, thanks for calling the demo line. How can I help you today?",
        "Sure, I can help with that. Let me look it up."]), BRIDGE_TTS="local")
    out = tmp_path / "call.wav"
    async with serve(settings) as bridge:
        code, stdout, stderr = await run_call(bridge.http, "--say", f"1.5:{SPEECH / 'caller_02.wav'}",
                                              "--duration", "7", "--out", str(out), cwd=tmp_path)
    assert code == 0, stderr
    assert f"dialing {bridge.http}/twilio/voice" in stdout
    assert f"media stream ws://127.0.0.1:{bridge.port}/twilio/media" in stdout, "wss:// from TwiML, dialled as ws://"
    assert re.search(r"greeting latency: \d+ ms", stdout)
    assert re.search(r"barge-in 1 \(caller_02.wav\): reaction \d+ ms", stdout)
    assert re.search(r"reply 1 \(after caller_02.wav\): latency \d+ ms", stdout)
    assert "underruns: 0" in stdout
    assert re.search(r"bridge stages \(mean per turn, from /metrics\): end of turn \d+ ms \(1\), agent first text "
                     r"\d+ ms \(\d\), TTS first audio \d+ ms \(\d\), playout start \d+ ms \(\d\)", stdout), stdout

    left, right = read_stereo(out)
    assert abs(len(left) - 7 * 8000) <= 160
    caller = ulaw_to_pcm(pcm_to_ulaw(Timeline.from_files([(1.5, SPEECH / "caller_02.wav")]).render(7.0)))
    assert np.array_equal(left, np.frombuffer(caller, dtype="<i2")[: len(left)]), "left: the caller, as sent"
    [greeting, reply] = timeline_times(stdout, "agent audio starts")
    [clear] = timeline_times(stdout, "clear")
    assert loud(right, greeting + 0.05, 1.5) > -40, "right: the greeting, as heard"
    assert loud(right, clear + 0.05, reply) == -np.inf, "right: silence after the clear"
    assert loud(right, reply + 0.05, reply + 1.0) > -40, "right: the reply"
    assert loud(left, 0, 1.5) == -np.inf, "left: nothing before the caller spoke"


async def test_bridge_call_says_how_the_bridge_ended_the_call(tmp_path):
    pytest.importorskip("espeakng_loader")
    settings = bridge_settings(None, write_script(tmp_path / "agent.txt", [
        "Hello. Let me put you through. [transfer +15551234567]"]), BRIDGE_TTS="local",
        BRIDGE_TRANSFER_NUMBERS="+15551234567")
    async with serve(settings) as bridge:
        code, stdout, stderr = await run_call(bridge.http, "--say", f"9:{SPEECH / 'caller_02.wav'}",
                                              "--duration", "10", "--out", str(tmp_path / "c.wav"), cwd=tmp_path)
    assert code == 0, stderr
    assert re.search(r"the call was ended by the bridge at \d+\.\d+ s: transfer to \+15551234567", stdout), stdout


def test_bridge_call_that_cannot_connect_says_so_and_fails(tmp_path):
    done = subprocess.run([*PYTHON, "call", f"http://127.0.0.1:{free_port()}", "--duration", "1",
                           "--say", f"0:{write_wav(tmp_path / 'x.wav')}"],
                          cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "bridge call: cannot reach" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "call.wav").exists()


def test_bridge_call_checks_its_arguments_before_dialing(tmp_path, capsys):
    wav = write_wav(tmp_path / "x.wav")
    assert cli.main(["call", "--out", str(tmp_path / "missing" / "c.wav"), "--say", f"0:{wav}"]) == 2
    assert "no such directory" in capsys.readouterr().err
    (tmp_path / "not.wav").write_text("text")
    assert cli.main(["call", "--say", f"0:{tmp_path / 'not.wav'}"]) == 2
    assert "cannot read a --say file" in capsys.readouterr().err


def write_wav(path: Path, pcm: bytes = b"\x00\x00" * 800) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(pcm)
    return path


# ------------------------------------------------------------------ bridge call, its parts


@pytest.mark.parametrize(("url", "target"), [
    ("http://127.0.0.1:8000", Target("http://127.0.0.1:8000/twilio/voice")),
    ("https://abc.ngrok.app/", Target("https://abc.ngrok.app/twilio/voice")),
    ("wss://abc.ngrok.app", Target("https://abc.ngrok.app/twilio/voice")),
    ("http://host:8000/twilio/voice", Target("http://host:8000/twilio/voice")),
    ("ws://127.0.0.1:8000/twilio/media", Target(None, "ws://127.0.0.1:8000/twilio/media")),
])
def test_call_accepts_http_and_ws_urls(url, target):
    assert resolve_target(url) == target


@pytest.mark.parametrize("url", ["127.0.0.1:8000", "ftp://x", "http://"])
def test_call_rejects_what_is_not_a_url(url):
    with pytest.raises(DialError, match="expected an http"):
        resolve_target(url)


def test_media_url_option_skips_the_webhook():
    assert resolve_target("http://ignored", "ws://h:1/twilio/media") == Target(None, "ws://h:1/twilio/media")
    with pytest.raises(DialError):
        resolve_target("http://x", "http://h/twilio/media")


@pytest.mark.parametrize(("webhook", "stream", "dialled"), [
    ("http://127.0.0.1:8000/twilio/voice", "wss://127.0.0.1:8000/twilio/media", "ws://127.0.0.1:8000/twilio/media"),
    ("http://localhost:9/twilio/voice", "wss://localhost:9/twilio/media", "ws://localhost:9/twilio/media"),
    ("http://10.0.0.5:8000/twilio/voice", "wss://abc.ngrok.app/twilio/media", "wss://abc.ngrok.app/twilio/media"),
    ("https://abc.ngrok.app/twilio/voice", "wss://abc.ngrok.app/twilio/media", "wss://abc.ngrok.app/twilio/media"),
    ("https://abc.ngrok.app/twilio/voice", "/twilio/media", "wss://abc.ngrok.app/twilio/media"),
])
def test_the_stream_url_is_read_from_twiml_like_twilio_does(webhook, stream, dialled):
    twiml = (f'<?xml version="1.0"?><Response><Connect><Stream url="{stream}">'
             '<Parameter name="tenant" value="acme"/></Stream></Connect></Response>')
    found = media_url_from_twiml(twiml, webhook)
    assert found.url == dialled and found.parameters == {"tenant": "acme"}
    assert found.signed_url.startswith("wss://"), "Twilio signs the wss:// URL"


def test_twiml_without_a_stream_is_reported_with_what_it_says():
    with pytest.raises(DialError, match="lines are busy"):
        media_url_from_twiml("<Response><Say>All our lines are busy.</Say><Hangup/></Response>", "http://h/")
    with pytest.raises(DialError, match="other than TwiML"):
        media_url_from_twiml("<html>nope", "http://h/")


def test_say_takes_time_and_wav(tmp_path):
    wav = write_wav(tmp_path / "a.wav")
    assert parse_say(f"2.5:{wav}") == (2.5, wav)
    for bad in [str(wav), f"x:{wav}", f"-1:{wav}", "1:missing.wav"]:
        with pytest.raises(argparse.ArgumentTypeError, match=r"TIME:WAV|no such file"):
            parse_say(bad)


def test_noise_is_at_the_level_asked_for():
    samples = np.frombuffer(noise(-45.0, 2.0), dtype="<i2")
    assert len(samples) == 16000 and abs(loud(samples, 0, 2) + 45) < 0.5


async def test_auth_token_signs_the_webhook_like_twilio(tmp_path):
    seen: dict[str, object] = {}

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            seen.update(headers=dict(self.headers), form=dict(urllib.parse.parse_qsl(body.decode())))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"<Response><Say>Bye.</Say></Response>")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/twilio/voice"
    try:
        done = await asyncio.to_thread(subprocess.run, [*PYTHON, "call", url, "--auth-token", "tok-12345",
                                                        "--say", f"0:{write_wav(tmp_path / 'x.wav')}"],
                                       cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=30)
    finally:
        server.shutdown()
    form, headers = seen["form"], seen["headers"]
    assert form["CallSid"].startswith("CA") and form["Direction"] == "inbound"
    assert is_valid_signature("tok-12345", url, form, headers["X-Twilio-Signature"])
    assert done.returncode == 1 and "it says: 'Bye.'" in done.stderr
    assert "tok-12345" not in done.stdout + done.stderr


async def test_bridge_call_signs_like_twilio_for_a_bridge_that_checks(tmp_path):
    settings = bridge_settings(None, write_script(tmp_path / "agent.txt", ["Hi.", "Bye."]), BRIDGE_TTS="local",
                               TWILIO_AUTH_TOKEN="tok-12345")
    say = ["--duration", "1", "--say", f"0:{write_wav(tmp_path / 'x.wav')}"]
    async with serve(settings) as bridge:
        signed = await run_call(bridge.http, *say, "--auth-token", "tok-12345", cwd=tmp_path)
        unsigned = await run_call(bridge.http, *say, "--auth-token", "wrong", cwd=tmp_path)
    assert signed[0] == 0 and "greeting latency" in signed[1], signed[2]
    assert unsigned[0] == 1 and "answered HTTP 403" in unsigned[2] and "--auth-token" in unsigned[2]
    assert "tok-12345" not in signed[1] + signed[2] + unsigned[1] + unsigned[2]


def test_summary_names_every_number():
    from bridge.tools.simulator.metrics import BargeIn, Reply, Underrun
    from bridge.tools.simulator.report import CallReport

    report = CallReport(
        duration=10, greeting_latency=0.2, barge_ins=(BargeIn("a.wav", 2.0, 2.1, 0.0), BargeIn("b.wav", 6, None, 1)),
        replies=(Reply("a.wav", 3.0, 3.7), Reply("b.wav", 7.0, None), Reply("after hang-up", 11, None)),
        leaked_frames=(0,),
        underruns=(Underrun(4.0, 0.04),), unprompted_clears=(), agent_seconds=5.0, media_messages=9,
        marks_received=0, marks_echoed=0, marks_cleared=0, marks_unechoed=0, malformed=(), server_closed=None,
        max_send_lag=0.0, events=())
    assert summary_lines(report)[:7] == [
        "greeting latency: 200 ms",
        "barge-in 1 (a.wav): reaction 100 ms",
        "barge-in 2 (b.wav): MISSED, no clear within 2 s",
        "reply 1 (after a.wav): latency 700 ms",
        "reply 2 (after b.wav): no reply heard",
        "underruns: 1, longest gap 40 ms",
        "agent audio heard: 5.0 s in 9 media messages",
    ]


# ------------------------------------------------------------------ bridge serve


def test_serve_prints_the_webhook_url_and_listens(tmp_path):
    script = write_script(tmp_path / "agent.txt")
    env = clean_env(BRIDGE_TTS="local", BRIDGE_AGENT_SCRIPT=str(script), BRIDGE_LOG_LEVEL="warning")
    proc = subprocess.Popen([*PYTHON, "serve", "--port", "0"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        match = re.fullmatch(r"bridge listening on http://127\.0\.0\.1:(\d+)\n", first)
        assert match, first
        base = f"http://127.0.0.1:{match.group(1)}"
        lines = [proc.stdout.readline() for _ in range(4)]
        assert f"  Twilio voice webhook (POST): {base}/twilio/voice\n" in lines
        assert any("voice: offline espeak-ng" in line for line in lines)
        for _ in range(100):
            try:
                if httpx.get(f"{base}/healthz", timeout=1).json()["status"] == "ok":
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        else:
            pytest.fail("the server never answered /healthz")
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0 and "Traceback" not in err, err


def test_serve_with_a_public_url_prints_the_public_webhook(monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PUBLIC_URL", "https://bridge.example.com")
    monkeypatch.setattr(cli, "run_server", lambda settings, sock: sock.close() or 0)
    assert cli.main(["serve", "--port", "0"]) == 0
    out = capsys.readouterr().out
    assert "Twilio voice webhook (POST): https://bridge.example.com/twilio/voice" in out
    assert "bridge tunnel" not in out


def test_a_bad_setting_stops_serve_with_one_line_naming_it(monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BRIDGE_VAD_AGGRESSIVENESS", "9")
    with pytest.raises(SystemExit) as stop:
        cli.main(["serve", "--port", "0"])
    assert stop.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert "BRIDGE_VAD_AGGRESSIVENESS" in captured.err and "'9'" in captured.err


def test_a_port_in_use_is_one_line(capsys):
    taken = serving.bind("127.0.0.1", 0)
    try:
        with pytest.raises(SystemExit) as stop:
            serving.bind("127.0.0.1", taken.getsockname()[1])
    finally:
        taken.close()
    assert stop.value.code == 1 and "pick another --port" in capsys.readouterr().err


# ------------------------------------------------------------------ bridge tunnel


@pytest.fixture
def no_secrets(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no .env
    for name in ("NGROK_AUTHTOKEN", "PUBLIC_URL", "TWILIO_AUTH_TOKEN", "ELEVENLABS_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def fake_ngrok(url: str = "https://abcd-1234.ngrok-free.app") -> types.ModuleType:
    """Stands in for the ngrok SDK: forward() returns a listener with that URL, and records calls."""
    module = types.ModuleType("ngrok")
    module.calls = []  # type: ignore[attr-defined]

    def forward(addr, **options):
        module.calls.append(("forward", addr, options))
        return types.SimpleNamespace(url=lambda: url)

    module.forward = forward  # type: ignore[attr-defined]
    module.disconnect = lambda u=None: module.calls.append(("disconnect", u))  # type: ignore[attr-defined]
    return module


def test_tunnel_without_the_sdk_says_how_to_install_it(no_secrets, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ngrok", None)  # import ngrok raises ImportError
    monkeypatch.setenv("NGROK_AUTHTOKEN", "tok")
    assert cli.main(["tunnel"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'bridge[tunnel]'" in err


def test_tunnel_without_a_token_says_where_to_get_one(no_secrets, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ngrok", fake_ngrok())
    assert cli.main(["tunnel"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "set NGROK_AUTHTOKEN" in err and "dashboard.ngrok.com" in err
    assert sys.modules["ngrok"].calls == []


def test_tunnel_token_comes_from_the_environment_or_dotenv(tmp_path):
    (tmp_path / ".env").write_text("NGROK_AUTHTOKEN=from-dotenv\n")
    assert tunnel.find_token({}, tmp_path / ".env") == "from-dotenv"
    assert tunnel.find_token({"NGROK_AUTHTOKEN": "from-env"}, tmp_path / ".env") == "from-env"
    assert tunnel.find_token({"NGROK_AUTHTOKEN": " "}, None) is None


@pytest.mark.parametrize("url", ["http://abc.ngrok.app", "https://abc.ngrok.app/x", "tcp://1.tcp.ngrok.io:1", ""])
def test_tunnel_refuses_a_url_twilio_could_not_use(url):
    with pytest.raises(tunnel.TunnelError):
        tunnel.public_url(url)
    assert tunnel.public_url("https://abc.ngrok.app/") == "https://abc.ngrok.app"


def test_tunnel_sets_public_url_prints_the_webhook_and_serves(no_secrets, monkeypatch, capsys):
    ngrok = fake_ngrok()
    monkeypatch.setitem(sys.modules, "ngrok", ngrok)
    monkeypatch.setenv("NGROK_AUTHTOKEN", "tok-secret-42")
    served = []
    monkeypatch.setattr(tunnel, "run_server", lambda settings, sock: served.append((settings, sock)) or 0)
    monkeypatch.setattr(tunnel, "_hard_exit", lambda code: None)
    monkeypatch.setattr(os, "environ", dict(os.environ))  # the tunnel sets PUBLIC_URL in it

    assert cli.main(["tunnel", "--port", "0"]) == 0
    [(settings, sock)] = served
    port = sock.getsockname()[1]
    sock.close()
    assert settings.server.public_url == "https://abcd-1234.ngrok-free.app" == os.environ["PUBLIC_URL"]
    assert ngrok.calls[0] == ("forward", f"127.0.0.1:{port}", {"authtoken": "tok-secret-42"})
    out = capsys.readouterr().out
    assert "Twilio voice webhook (POST): https://abcd-1234.ngrok-free.app/twilio/voice" in out
    assert "A call comes in" in out and "tok-secret-42" not in out


def test_tunnel_that_cannot_connect_is_one_sentence_without_the_token(tmp_path):
    """The real SDK, with a token ngrok refuses (or no route to ngrok at all, as here)."""
    pytest.importorskip("ngrok")
    done = subprocess.run([*PYTHON, "tunnel", "--port", "0"], cwd=tmp_path, capture_output=True, text=True,
                          env=clean_env(NGROK_AUTHTOKEN="2abcNotARealToken_0123456789"), timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("bridge tunnel: ngrok could not open")
    assert "NotARealToken" not in done.stdout + done.stderr and "Traceback" not in done.stderr
