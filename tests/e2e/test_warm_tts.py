"""The TTS socket opened when the voice webhook is answered, taken by the call's stream.

Real uvicorn, the fake ElevenLabs (which records every connection it accepts), the Twilio webhook
posted as Twilio does, then the simulated phone's stream with the same ``CallSid`` (or another).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from bridge.testing.fake_elevenlabs import FakeElevenLabs
from bridge.tools.simulator import PhoneCall, Timeline
from tests.e2e.conftest import API_KEY, RunningBridge, bridge_settings, serve

CALL = "CA" + "1" * 32
OTHER = "CA" + "2" * 32


async def answer_webhook(bridge: RunningBridge, call_sid: str, path: str = "/twilio/voice",
                         **form: str) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        response = await http.post(bridge.http + path, data={"CallSid": call_sid, "From": "+15550100", **form})
    assert response.status_code == 200
    return response


async def phone(bridge: RunningBridge, call_sid: str, duration: float = 1.5) -> float | None:
    """One call on the media stream; its greeting latency (None: no greeting heard)."""
    report = await PhoneCall(bridge.media_url, caller=Timeline(), duration=duration, call_sid=call_sid).run()
    return report.greeting_latency


async def hung_up(bridge: RunningBridge, fake: FakeElevenLabs) -> None:
    await fake.wait_until(lambda: bridge.live_calls == 0 and fake.live_connections == 0, timeout=5.0)


async def test_the_call_takes_the_socket_opened_when_its_webhook_was_answered(fake_tts, script: Path) -> None:
    async with serve(bridge_settings(fake_tts, script)) as bridge:
        await answer_webhook(bridge, CALL)
        await fake_tts.wait_until(lambda: len(fake_tts.connections) == 1)  # open before the stream exists
        assert bridge.live_calls == 0
        assert await phone(bridge, CALL) is not None, "the greeting was heard"
        await hung_up(bridge, fake_tts)
    assert len(fake_tts.connections) == 1, "one TTS socket for the call: the one opened at the webhook"
    [conn] = fake_tts.connections
    assert conn.contexts, "the greeting was voiced on it"
    assert conn.violations == []


async def test_a_call_whose_webhook_was_not_answered_here_opens_its_own(fake_tts, script: Path) -> None:
    settings = bridge_settings(fake_tts, script, BRIDGE_WARM_TTS_S="0.8")
    async with serve(settings) as bridge:
        await answer_webhook(bridge, OTHER)  # another call's webhook: its stream goes elsewhere
        await fake_tts.wait_until(lambda: len(fake_tts.connections) == 1)
        assert await phone(bridge, CALL) is not None, "the greeting was heard"
        await fake_tts.wait_until(lambda: bridge.live_calls == 0)
        assert len(fake_tts.connections) == 2, "the other call's socket was not taken"
        assert fake_tts.connections[0].contexts == [] and fake_tts.connections[1].contexts
        await hung_up(bridge, fake_tts)  # the unclaimed one is closed once its time is up


async def test_a_stream_with_no_webhook_before_it_opens_its_socket_as_ever(fake_tts, script: Path) -> None:
    async with serve(bridge_settings(fake_tts, script)) as bridge:
        assert await phone(bridge, CALL) is not None
        await hung_up(bridge, fake_tts)
    assert len(fake_tts.connections) == 1


async def test_an_unclaimed_warm_socket_is_closed_and_never_used_after_its_time(fake_tts, script: Path) -> None:
    settings = bridge_settings(fake_tts, script, BRIDGE_WARM_TTS_S="0.5")
    async with serve(settings) as bridge:
        await answer_webhook(bridge, CALL)
        await fake_tts.wait_until(lambda: fake_tts.live_connections == 1)
        await fake_tts.wait_until(lambda: fake_tts.live_connections == 0, timeout=3.0)  # expired: closed
        assert await phone(bridge, CALL) is not None, "the late stream still greets, on a socket of its own"
        await hung_up(bridge, fake_tts)
    assert len(fake_tts.connections) == 2
    assert fake_tts.connections[0].contexts == [], "nothing was said on the expired socket"


async def test_a_warm_socket_lost_before_its_call_came_is_not_used(fake_tts, script: Path) -> None:
    async with serve(bridge_settings(fake_tts, script)) as bridge:
        await answer_webhook(bridge, CALL)
        await fake_tts.wait_until(lambda: fake_tts.live_connections == 1)
        await fake_tts.drop_all(code=1011)
        await asyncio.sleep(0.05)
        assert await phone(bridge, CALL) is not None, "the greeting was heard on a fresh socket"
        await hung_up(bridge, fake_tts)
    assert len(fake_tts.connections) == 2 and fake_tts.connections[1].contexts


async def test_a_warm_socket_that_could_not_open_leaves_the_call_its_own(script: Path) -> None:
    async with FakeElevenLabs(api_key=API_KEY, seed=3, reject_connections=1) as fake:
        async with serve(bridge_settings(fake, script)) as bridge:
            await answer_webhook(bridge, CALL)
            await fake.wait_until(lambda: len(fake.rejected) == 1)  # the warm socket was refused
            assert await phone(bridge, CALL) is not None, "the call opened its own and greeted"
            await hung_up(bridge, fake)
        assert len(fake.connections) == 1 and fake.connections[0].contexts


async def test_other_carriers_webhooks_warm_their_calls_too(fake_tts, script: Path) -> None:
    async with serve(bridge_settings(fake_tts, script, BRIDGE_WARM_TTS_S="0.5")) as bridge:
        await answer_webhook(bridge, "sw-call", path="/signalwire/voice")
        await answer_webhook(bridge, "", path="/plivo/voice", CallUUID="plivo-call")
        await fake_tts.wait_until(lambda: fake_tts.live_connections == 2)
        await fake_tts.wait_until(lambda: fake_tts.live_connections == 0, timeout=3.0)  # nobody came


async def test_the_greeting_does_not_wait_for_the_tts_handshake(script: Path) -> None:
    """A cloud TTS takes a TLS and upgrade round trip to answer; the warm socket took it before ``start``."""
    fake = FakeElevenLabs(api_key=API_KEY, seed=5, ttfb=0.12, handshake_s=0.3)
    async with fake, serve(bridge_settings(fake, script)) as bridge:
        await answer_webhook(bridge, CALL)
        await fake.wait_until(lambda: fake.live_connections == 1)
        latency = await phone(bridge, CALL)
        await hung_up(bridge, fake)
    assert latency is not None
    print(f"\ngreeting latency at a 120 ms TTS first audio, 300 ms handshake, warm socket: {latency * 1000:.0f} ms")
    assert latency < 0.12 + 0.1, "heard long before a fresh handshake (300 ms) could even have finished"
