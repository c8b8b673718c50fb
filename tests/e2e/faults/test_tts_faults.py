"""TTS faults, as the caller lives them: a dropped socket, error frames, a bad key, a slow server,
a server that refuses connections. The TTS is ``bridge.testing.fake_elevenlabs`` (protocol-faithful,
local); the bridge is the real app under uvicorn; the phone is the Twilio-faithful simulator.

Each test prints what the caller experienced (``pytest -s`` shows it): the gap in playback, and
what was heard after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.server import serve as ws_serve

from bridge.server import factories
from bridge.testing.fake_elevenlabs import FakeElevenLabs, SentFrame
from bridge.tools.simulator import PhoneCall, Timeline
from bridge.tts import supervisor
from tests.e2e.conftest import API_KEY, RunningBridge, bridge_settings, serve, tone_share, window, write_script
from tests.e2e.faults.conftest import ResetProxy, no_leaks
from tests.support import SPEECH

GREETING = "Thanks for calling the bridge demo line, where every answer is read out by a friendly voice."
REPLY = "Sure, one moment please."
MS_PER_CHAR = 55.0  # the fake's default speaking rate

# The ElevenLabs client and its supervisor alone: with the offline voice behind it a fault that
# cannot heal fails over instead (tests/e2e/test_call_control.py covers that).
ONE_VOICE = factories.make_cloud_tts


def caller(*placements: tuple[float, str]) -> Timeline:
    return Timeline.from_files([(t, SPEECH / name) for t, name in placements])


def voiced_text(frames: list[SentFrame], context_id: str) -> str:
    """The characters the server voiced for a context, from the alignment of the audio it sent."""
    return "".join(
        "".join(f.message["alignment"]["chars"]) for f in frames if f.context_id == context_id and f.audio_bytes
    )


def gaps_after(phone: PhoneCall, t: float, until: float) -> list[float]:
    """Silences inside the agent's playback that began between ``t`` and ``until`` (seconds)."""
    return [b.start - a.end for a, b in pairwise(phone.log.runs) if t - 0.05 <= a.end <= until]


@contextlib.asynccontextmanager
async def running(script: Path, env: dict[str, str] | None = None, **fake_options: Any
                  ) -> AsyncIterator[tuple[FakeElevenLabs, RunningBridge]]:
    """A fake ElevenLabs and the bridge using it; on the way out, nothing of the calls may be left."""
    async with FakeElevenLabs(api_key=API_KEY, **fake_options) as fake:  # noqa: SIM117  (fake is needed below)
        async with (serve(bridge_settings(fake, script, **(env or {})), make_tts=ONE_VOICE) as bridge,
                    no_leaks(bridge, fake)):
            yield fake, bridge


@pytest.fixture
def short_script(tmp_path: Path) -> Path:
    return write_script(tmp_path / "agent.txt", [GREETING, REPLY, "Anything else?"])


@pytest.mark.parametrize(
    ("how", "chunk_ms"),
    [("close 1011", (40.0, 300.0)), ("tcp reset", (40.0, 300.0)), ("tcp reset", (40.0, 50.0))],
    ids=["close-1011", "tcp-reset", "tcp-reset-small-chunks"],
)
async def test_a_drop_mid_reply_costs_a_short_gap_and_the_reply_goes_on(short_script, bridge_log, how, chunk_ms):
    # Audio arrives in real time (realtime_factor=1), so the bridge holds at most one chunk ahead
    # when the socket dies: the harshest case for the gap.
    fake = FakeElevenLabs(api_key=API_KEY, realtime_factor=1.0, chunk_ms=chunk_ms, seed=5)
    async with fake, ResetProxy(fake.port) as proxy:
        settings = bridge_settings(fake, short_script, ELEVENLABS_BASE_URL=proxy.base_url)
        async with serve(settings, make_tts=ONE_VOICE) as bridge, no_leaks(bridge, fake):
            phone = PhoneCall(bridge.media_url, caller=caller((7.0, "caller_04.wav")), duration=9.5)
            task = asyncio.create_task(phone.run())
            await phone.started.wait()
            await asyncio.sleep(2.0)  # the greeting is playing, its audio arriving in real time
            dropped_at, dropped_mono = phone.now(), time.monotonic()
            if how == "tcp reset":
                proxy.reset_all()
            else:
                await fake.drop_all(1011)
            report = await task

    first, second = fake.connections[0], fake.connections[1]
    [cid0] = [c.context_id for c in first.contexts]
    revoiced_ctx = second.contexts[0]
    said_before, said_after = voiced_text(first.sent, cid0), revoiced_ctx.text.strip()
    gaps = gaps_after(phone, dropped_at, dropped_at + 1.5)
    heard_greeting = report.agent_seconds
    reconnect_ms = (second.messages[0][0] - dropped_mono) * 1000
    new_audio_ms = (min(f.at for f in second.sent if f.audio_bytes) - dropped_mono) * 1000
    print(f"\n[{how}, chunks {chunk_ms} ms] drop at {dropped_at:.2f} s: first message on the new socket after "
          f"{reconnect_ms:.0f} ms, its first audio after {new_audio_ms:.0f} ms; caller's gap(s) "
          f"{[round(g * 1000) for g in gaps]} ms; voiced before {len(said_before)} chars, re-voiced {said_after!r}")
    assert len(fake.connections) == 2, "one reconnect"
    assert GREETING.endswith(said_after) and GREETING[: len(GREETING) - len(said_after)].endswith(" "), \
        "the new context voices the rest of the greeting from a word boundary"
    repeated = len(said_before.strip()) + 1 + len(said_after) - len(GREETING)
    assert 0 <= repeated <= 12, f"nothing lost, at most a word said twice ({repeated} chars)"
    assert max(gaps, default=0.0) < 0.4, f"the caller hears at most a short gap: {gaps}"
    # The rest of the greeting is heard in the voice of the new context, then the reply.
    after = window(phone.heard, dropped_at + 0.5, dropped_at + 1.5)
    assert tone_share(after, fake.frequency_of(revoiced_ctx.context_id, 1)) > 0.8
    assert [r for r in report.replies if r.reply_at is not None], "the call goes on: the next reply is heard"
    assert first.closed_code is not None and second.messages[-1][1] == {"close_socket": True}
    assert len(bridge_log.matching("TTS socket lost", "connected again")) == 1, bridge_log.lines()
    assert heard_greeting > (len(GREETING) - 2) * MS_PER_CHAR / 1000


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("max_active_conversations", "Maximum simultaneous contexts per WebSocket connection exceeded (5)."),
        ("invalid_input_message", "Invalid message."),
    ],
)
async def test_an_error_frame_is_one_log_line_and_the_bridge_reconnects(short_script, bridge_log, code, message):
    async with running(short_script, seed=2) as (fake, bridge):
        phone = PhoneCall(bridge.media_url, caller=caller((3.0, "caller_04.wav")), duration=5.5)
        task = asyncio.create_task(phone.run())
        await fake.wait_until(lambda: len(fake.connections) == 1, 2.0)
        await asyncio.sleep(1.0)
        # The server's answer to the next socket: the error frame, then close 1008.
        fake.error_on_connect = {"message": message, "error": code, "code": 1008}
        await fake.drop_all(1011)
        await fake.wait_until(lambda: len(fake.connections) >= 2, 3.0)
        fake.error_on_connect = None  # the retry 0.1 s later is served
        report = await task
    lines = bridge_log.lines()
    refused = [c for c in fake.connections if code in c.errors]
    print(f"\n[{code}] {len(refused)} socket(s) refused with it; log: {lines[1:]}")
    assert len(bridge_log.matching(code)) == 1, "the fault is one log line"
    assert bridge_log.matching(code, message, "connected again"), "it names the error, and that it healed"
    assert [r for r in report.replies if r.reply_at is not None], "the reply after the error is heard"


async def test_an_idle_socket_timed_out_by_the_server_is_reopened(short_script, bridge_log):
    # The server closes a socket that saw no message for its timeout (input_timeout_exceeded).
    async with running(short_script, timeout_scale=2.5 / 180, seed=4) as (fake, bridge):
        phone = PhoneCall(bridge.media_url, caller=caller((7.5, "caller_04.wav")), duration=10.0)
        report = await phone.run()
    assert "input_timeout_exceeded" in fake.connections[0].errors
    assert len(bridge_log.matching("input_timeout_exceeded", "connected again")) >= 1, bridge_log.lines()
    assert not bridge_log.lines(logging.ERROR), "an idle timeout is not a failure"
    reply = [r for r in report.replies if r.reply_at is not None]
    print(f"\n[input_timeout_exceeded] reply latency after reopen: {reply[0].latency * 1000:.0f} ms")
    assert reply and reply[0].latency < 1.2


@pytest.mark.parametrize("fault", ["wrong key", "quota_exceeded", "HTTP 401"])
async def test_a_fault_that_cannot_heal_is_tried_once_and_the_call_stays_up(short_script, bridge_log, fault):
    settings_env = {}
    async with FakeElevenLabs(api_key=API_KEY, seed=3) as fake, RefusingServer(401) as refuser:
        if fault == "wrong key":
            settings_env["ELEVENLABS_API_KEY"] = "sk-wrong-key-000000000000"
        elif fault == "quota_exceeded":
            fake.error_on_connect = {"message": "This request exceeds your quota.", "error": "quota_exceeded",
                                     "code": 1008}
        else:
            settings_env["ELEVENLABS_BASE_URL"] = refuser.base_url
        async with (serve(bridge_settings(fake, short_script, **settings_env), make_tts=ONE_VOICE) as bridge,
                    no_leaks(bridge, fake)):
            timeline = caller((1.5, "caller_04.wav"), (3.5, "caller_04.wav"))
            phone = PhoneCall(bridge.media_url, caller=timeline, duration=6.0)
            task = asyncio.create_task(phone.run())
            await asyncio.sleep(5.5)
            [session] = bridge.app.state.bridge.calls
            turns = session.call.snapshot.turn
            report = await task
    errors = bridge_log.lines(logging.ERROR)
    tries = len(fake.connections) + len(refuser.handshakes)
    print(f"\n[{fault}] {tries} connection attempt(s); log: {errors}")
    assert tries == 1, "not retried"
    assert len(errors) == 1 and "cannot heal" in errors[0], errors
    assert report.server_closed is None, "the bridge kept the call up"
    assert report.agent_seconds == 0.0, "the caller hears silence"
    assert turns == 2, "both caller turns reached the agent"


async def test_a_slow_server_keeps_barge_in_and_marks_responsive(short_script):
    async with running(short_script, seed=6) as (fake, bridge):
        timeline = caller((2.0, "caller_02.wav"), (6.0, "caller_04.wav"))
        phone = PhoneCall(bridge.media_url, caller=timeline, duration=11.0)
        task = asyncio.create_task(phone.run())
        await asyncio.sleep(1.0)
        fake.ttfb = 3.0  # from now on, first audio of anything comes after 3 s
        report = await task
    [barge] = report.barge_ins
    reaction = barge.reaction
    latencies = [r.latency for r in report.replies]
    print(f"\n[ttfb 3 s] barge-in reaction {reaction * 1000:.0f} ms; reply latencies "
          f"{[None if x is None else round(x * 1000) for x in latencies]} ms; marks echoed {report.marks_echoed}, "
          f"unechoed {report.marks_unechoed}; simulator lag {report.max_send_lag * 1000:.1f} ms")
    assert reaction is not None and reaction < 0.25, "barge-in is as quick as with a fast server"
    assert report.marks_unechoed <= 1 and report.marks_echoed >= 10
    assert latencies[-1] is not None and 3.0 < latencies[-1] < 4.5, "the slow reply still arrives"
    assert report.max_send_lag < 0.05


async def test_connect_failures_at_call_start_are_retried_and_the_greeting_is_heard(short_script, bridge_log):
    async with running(short_script, reject_connections=3, seed=8) as (fake, bridge):
        phone = PhoneCall(bridge.media_url, caller=Timeline([]), duration=3.0)
        report = await phone.run()
    print(f"\n[3 refused handshakes] greeting heard after {report.greeting_latency * 1000:.0f} ms; "
          f"log: {bridge_log.lines()}")
    assert len(fake.rejected) == 3 and len(fake.connections) == 1
    assert report.greeting_latency is not None and report.greeting_latency < 1.5
    assert len(bridge_log.matching("could not connect at call start", "connected again after 4 tries")) == 1


async def test_a_server_that_never_lets_us_in_is_given_up_and_the_call_stays_up(
    short_script, bridge_log, monkeypatch
):
    monkeypatch.setattr(supervisor, "RECONNECT_DELAYS_S", (0.0, 0.1, 0.2, 0.4))  # the same policy, shorter
    async with running(short_script, reject_connections=1000, seed=9) as (fake, bridge):
        phone = PhoneCall(bridge.media_url, caller=caller((2.0, "caller_04.wav")), duration=3.5)
        report = await phone.run()
    errors = bridge_log.lines(logging.ERROR)
    print(f"\n[always refused] {len(fake.rejected)} tries; log: {errors}")
    assert len(fake.rejected) == 5, "four retries, then no more"
    assert len(errors) == 1 and "giving up after 5 failures" in errors[0] and "HTTP 503" in errors[0]
    assert report.server_closed is None


class RefusingServer:
    """A WebSocket endpoint that answers every handshake with HTTP ``status`` (a key it refuses)."""

    def __init__(self, status: int) -> None:
        self.status = status
        self.handshakes: list[str] = []
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def __aenter__(self) -> RefusingServer:
        def refuse(connection, request):  # type: ignore[no-untyped-def]
            self.handshakes.append(request.path)
            return connection.respond(self.status, "Unauthorized\n")

        async def never_reached(ws):  # type: ignore[no-untyped-def]
            await ws.close()

        self._server = await ws_serve(never_reached, "127.0.0.1", 0, process_request=refuse)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        await self._server.wait_closed()
