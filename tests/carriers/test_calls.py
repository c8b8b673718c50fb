"""The same call on every carrier, end to end: real uvicorn, real sockets, real webrtcvad.

Each carrier's phone (``bridge.tools.simulator.carriers``) asks the webhook its console would call,
reads the stream URL from the answer document exactly as that carrier does, and dials it in the
carrier's own dialect. The ElevenLabs side voices each context as its own tone, so what the caller
heard tells which reply it came from.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from bridge.tools.simulator import PhoneCall, Timeline
from bridge.tools.simulator.carriers import WEBHOOKS, dialect, stream_url_from_answer
from tests.e2e.conftest import bridge_settings, contexts_in_order, serve, tone_share, window
from tests.support import SPEECH

CARRIERS = ["signalwire", "telnyx", "plivo", "vonage", "exotel"]


async def wait_for(predicate, timeout: float) -> bool:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while loop.time() < end:
        if predicate():
            return True
        await asyncio.sleep(0.01)
    return predicate()


async def answer(bridge, carrier: str, **params: str) -> httpx.Response:
    method, path = WEBHOOKS[carrier]
    async with httpx.AsyncClient() as http:
        if method == "GET":
            return await http.get(f"{bridge.http}{path}", params=params)
        return await http.post(f"{bridge.http}{path}", data=params)


def call_ids(call: str) -> dict[str, str]:
    """The call's id as each carrier's webhook names it; its stream's ``start`` carries the same."""
    return {"CallSid": call, "CallUUID": call, "uuid": call}


def local(url: str, bridge) -> str:
    """The answer names the public wss:// URL; on loopback the phone dials it as ws://."""
    assert url.startswith(f"wss://127.0.0.1:{bridge.port}/"), url
    return "ws://" + url.removeprefix("wss://")


@pytest.mark.parametrize("carrier", CARRIERS)
async def test_greeting_barge_in_fresh_reply_and_hang_up(carrier, fake_tts, script):
    timeline = Timeline.from_files([(2.0, SPEECH / "caller_02.wav")])
    async with serve(bridge_settings(fake_tts, script)) as bridge:
        response = await answer(bridge, carrier, **call_ids("aaaa-bbbb"))
        assert response.status_code == 200
        url = local(stream_url_from_answer(carrier, response.text), bridge)
        phone = PhoneCall(url, caller=timeline, duration=7.0, dialect=dialect(carrier), call_sid="aaaa-bbbb")
        report = await phone.run()
        released = await wait_for(lambda: fake_tts.live_connections == 0, timeout=2.0)
        await wait_for(lambda: bridge.live_calls == 0, timeout=2.0)

    assert report.malformed == (), report.malformed
    assert phone.log.warnings == [], phone.log.warnings
    first, *_, second = contexts_in_order(fake_tts)  # between them, any guess at a pause in the caller's words
    assert report.greeting_latency is not None and report.greeting_latency < 1.0
    greeting = window(phone.heard, report.greeting_latency + 0.1, 1.9)
    assert tone_share(greeting, fake_tts.frequency_of(first)) > 0.8, "the greeting was heard"
    [barge] = report.barge_ins
    assert not barge.missed and barge.clear_at - barge.onset < 0.5, "the carrier's own clear came in time"
    assert report.leaked_frames and all(n == 0 for n in report.leaked_frames), "nothing interrupted was heard"
    assert tone_share(window(phone.heard, barge.clear_at + 0.1, 7.0), fake_tts.frequency_of(first)) < 0.02
    [reply] = [r for r in report.replies if r.reply_at is not None]
    assert second != first and fake_tts.contexts(0)[second].text.startswith(" Sure"), "a fresh context"
    heard = window(phone.heard, reply.reply_at + 0.05, reply.reply_at + 1.0)
    assert tone_share(heard, fake_tts.frequency_of(second)) > 0.8, "the reply was heard"
    assert report.underruns == (), "the line never ran dry mid-reply"
    assert report.marks_received > 0 and report.marks_echoed > 0, "marks/checkpoints report what was heard"
    assert released, "the TTS socket was closed within 2 s of the hang-up"
    assert fake_tts.connections[0].messages[-1][1] == {"close_socket": True}


@pytest.mark.parametrize("carrier", CARRIERS)
async def test_keys_and_bad_input_on_every_carrier(carrier, fake_tts, script):
    """Junk in the carrier's framing is ignored; the turn-end key (#) cuts the greeting as speech would."""
    async with serve(bridge_settings(fake_tts, script)) as bridge:
        response = await answer(bridge, carrier, **call_ids("cccc-dddd"))
        url = local(stream_url_from_answer(carrier, response.text), bridge)
        phone = PhoneCall(url, caller=Timeline([]), duration=5.0, dialect=dialect(carrier), call_sid="cccc-dddd")
        task = asyncio.create_task(phone.run())
        await phone.started.wait()
        await asyncio.sleep(1.0)
        for junk in ["{not json", "[1, 2]", '{"event": "telepathy"}', '{"event": "media", "media": {"payload": 7}}',
                     '{"event": "dtmf", "dtmf": {"digit": "too long"}}', "x" * 200_000]:
            await phone.send_raw(junk)
        for digit in "12#":
            await phone.press(digit)
        pressed_at = phone.now()
        report = await task
        await wait_for(lambda: bridge.live_calls == 0, timeout=2.0)
        async with httpx.AsyncClient() as http:
            health = (await http.get(f"{bridge.http}/healthz")).json()

    assert report.server_closed is None, "the bridge kept the call up"
    assert health == {"status": "ok", "calls": 0, "voice": "elevenlabs", "warning": None}
    second = contexts_in_order(fake_tts)[1]
    assert report.greeting_latency is not None
    assert any(pressed_at <= t <= pressed_at + 0.5 for t, text in report.events if "clear" in text), report.events
    assert all(n == 0 for n in report.leaked_frames)
    heard = window(phone.heard, pressed_at + 0.3, 5.0)
    assert tone_share(heard, fake_tts.frequency_of(second)) > 0.5, "the key started the next reply"
