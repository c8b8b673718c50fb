"""A whole call, end to end: real uvicorn, real WebSockets, real webrtcvad on real speech.

The ElevenLabs side is ``bridge.testing.fake_elevenlabs``, a protocol-faithful local server
(the cloud API cannot be reached from tests). It voices each context as a tone of its own
frequency, so what the phone heard tells exactly which context it came from.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from websockets.asyncio.client import connect

from bridge.core.audio import OUTPUT_FORMATS
from bridge.testing.fake_elevenlabs import FakeElevenLabs
from bridge.tools.simulator import PhoneCall, Timeline
from tests.e2e.conftest import (
    API_KEY,
    bridge_settings,
    contexts_in_order,
    first_messages,
    serve,
    tone_share,
    window,
)
from tests.support import SPEECH
from tests.units.test_metrics import scrape


def caller(*placements: tuple[float, str]) -> Timeline:
    return Timeline.from_files([(t, SPEECH / name) for t, name in placements])


async def wait_for(predicate, timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


async def test_greeting_is_heard_and_the_tts_socket_follows_the_protocol(fake_tts, script):
    async with serve(bridge_settings(fake_tts, script)) as bridge:
        phone = PhoneCall(bridge.media_url, caller=Timeline([]), duration=4.0)
        report = await phone.run()
        await wait_for(lambda: bridge.live_calls == 0)

    assert report.greeting_latency is not None and report.greeting_latency < 0.6
    [conn] = fake_tts.connections
    assert conn.headers.get("xi-api-key") == API_KEY
    assert conn.query["output_format"] == "ulaw_8000" and conn.query["model_id"] == "eleven_flash_v2_5"
    [cid] = contexts_in_order(fake_tts)
    heard = window(phone.heard, report.greeting_latency + 0.05, 4.0)
    assert tone_share(heard, fake_tts.frequency_of(cid)) > 0.8, "the greeting's audio reached the caller"
    assert conn.violations == []
    first = first_messages(fake_tts)[cid]
    assert first["text"] == " " and "voice_settings" in first
    messages = [m for _, m in conn.messages]
    assert sum(1 for m in messages if "voice_settings" in m) == 1
    texts = [m for m in messages if m.get("text", "").strip()]
    assert len(texts) >= 3, "the reply was streamed in pieces"
    assert sum(1 for m in messages if m.get("flush")) >= 3, "flushed at each sentence end"
    close_at = next(t for t, m in conn.messages if m.get("close_context"))
    first_audio = min(s.at for s in conn.sent if s.audio_bytes)
    assert close_at >= first_audio, "close_context only after the context's first audio"
    assert messages[-1] == {"close_socket": True}
    assert conn.closed_code == 1000


async def test_barge_in_stops_the_agent_and_the_next_reply_uses_a_fresh_context(script):
    # Voiced at 1.5x real time, the greeting is still being sent when the caller talks over it.
    fake_tts = FakeElevenLabs(api_key=API_KEY, realtime_factor=1.5, seed=7)
    async with fake_tts, serve(bridge_settings(fake_tts, script)) as bridge:
        dropped_before = (await scrape(bridge.http)).get("bridge_dropped_audio_bytes_total", 0.0)
        phone = PhoneCall(bridge.media_url, caller=caller((2.0, "caller_02.wav")), duration=8.0)
        report = await phone.run()
        await wait_for(lambda: bridge.live_calls == 0)
        dropped = (await scrape(bridge.http)).get("bridge_dropped_audio_bytes_total", 0.0) - dropped_before

    [barge] = report.barge_ins
    assert not barge.missed
    reaction = barge.clear_at - barge.onset
    assert reaction < 0.25, f"barge-in reaction {reaction * 1000:.0f} ms"
    first, *_, second = contexts_in_order(fake_tts)  # between them, any guess at a pause in the caller's words
    assert first != second
    ctx = fake_tts.contexts(0)
    assert ctx[first].closed and ctx[second].text.startswith(" Sure")
    # Nothing of the interrupted greeting is heard after the clear took effect.
    after_clear = window(phone.heard, barge.clear_at + 0.04, 8.0)
    assert tone_share(after_clear, fake_tts.frequency_of(first)) < 0.02
    # The reply to the caller is heard, in its own context's voice.
    [reply] = [r for r in report.replies if r.reply_at is not None]
    assert tone_share(window(phone.heard, reply.reply_at + 0.05, reply.reply_at + 1.0),
                      fake_tts.frequency_of(second)) > 0.8
    assert report.leaked_frames and all(n == 0 for n in report.leaked_frames)
    # close_context is graceful: the server went on voicing the greeting after it, as the real one
    # does. What came after the barge-in was dropped, not played (the metric counts the 8 kHz PCM16
    # it became, two bytes per mu-law byte sent).
    late = fake_tts.audio_after_close(first)
    assert late, "audio for the closed context kept coming after close_context"
    assert 0 < dropped <= 2 * len(late), (dropped, len(late))


async def test_caller_audio_reaches_the_core_where_it_is_read(script, monkeypatch):
    """On the bridge's own WebSocket protocol the phone's messages go to the call as the server
    reads them (`bridge.server.wsframes.DirectFeed`): the app's ``receive`` hands over only the
    connect and the end, and the call behaves as it does through ``receive``."""
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

    from bridge.server.wsframes import FrameProtocol

    received: list[str] = []
    sent: list[str] = []
    through_receive, through_send = WebSocketsSansIOProtocol.receive, FrameProtocol.send

    async def receive(self):
        message = await through_receive(self)
        received.append(message["type"])
        return message

    async def send(self, message):
        sent.append(message["type"])
        await through_send(self, message)

    monkeypatch.setattr(WebSocketsSansIOProtocol, "receive", receive)
    monkeypatch.setattr(FrameProtocol, "send", send)
    fake_tts = FakeElevenLabs(api_key=API_KEY, realtime_factor=1.5, seed=7)
    async with fake_tts, serve(bridge_settings(fake_tts, script)) as bridge:
        phone = PhoneCall(bridge.media_url, caller=caller((2.0, "caller_02.wav")), duration=6.0)
        report = await phone.run()
        await wait_for(lambda: bridge.live_calls == 0)

    assert received[0] == "websocket.connect" and "websocket.receive" not in received, received[:5]
    # What the core sends the phone goes out at once too, from where the event came (the phone's
    # read, the timer, the TTS reader): of the agent's 100 ms media messages, few wait for the
    # call's loop and the ASGI send.
    media_messages = report.agent_seconds / 0.1
    assert sent.count("websocket.send") < media_messages / 2, (sent.count("websocket.send"), media_messages)
    [barge] = report.barge_ins
    assert not barge.missed and barge.clear_at - barge.onset < 0.25
    assert [r for r in report.replies if r.reply_at is not None], "the caller's words were answered"
    assert report.greeting_latency is not None and not report.underruns


async def test_several_turns_each_in_its_own_context(fake_tts, tmp_path):
    from tests.e2e.conftest import write_script

    short = write_script(tmp_path / "s.txt", ["Hi there.", "One.", "Two.", "Three."])
    async with serve(bridge_settings(fake_tts, short)) as bridge:
        timeline = caller((2.0, "caller_04.wav"), (4.0, "caller_07.wav"), (7.0, "caller_04.wav"))
        phone = PhoneCall(bridge.media_url, caller=timeline, duration=9.5)
        report = await phone.run()
        await wait_for(lambda: bridge.live_calls == 0)

    assert report.barge_ins == ()
    latencies = [r.latency for r in report.replies]
    assert len(latencies) == 3 and all(lat is not None and lat < 1.2 for lat in latencies), latencies
    ids = contexts_in_order(fake_tts)
    assert len(ids) >= 4 and len(set(ids)) == len(ids), "every reply in a fresh context"
    texts = [fake_tts.contexts(0)[c].text.strip() for c in ids]
    # A reply started at a pause inside "Okay, thanks, goodbye." and abandoned when the caller went
    # on took a context of its own (never heard); the line it would have said answers the turn.
    assert [t for i, t in enumerate(texts) if i == 0 or t != texts[i - 1]] == ["Hi there.", "One.", "Two.", "Three."]
    assert fake_tts.connections[0].max_open <= 5
    assert fake_tts.connections[0].violations == []


@pytest.mark.parametrize("output_format", OUTPUT_FORMATS)
async def test_every_output_format_reaches_the_caller_at_the_right_pitch(script, output_format):
    async with FakeElevenLabs(api_key=API_KEY, seed=3) as fake:
        settings = bridge_settings(fake, script, ELEVENLABS_OUTPUT_FORMAT=output_format)
        async with serve(settings) as bridge:
            phone = PhoneCall(bridge.media_url, caller=Timeline([]), duration=3.0)
            report = await phone.run()
    assert fake.connections[0].query["output_format"] == output_format
    assert report.greeting_latency is not None
    heard = window(phone.heard, report.greeting_latency + 0.2, 3.0)
    [cid] = contexts_in_order(fake)
    assert tone_share(heard, fake.frequency_of(cid)) > 0.8
    assert report.underruns == ()


async def test_bad_input_is_ignored_and_the_call_goes_on(fake_tts, script):
    async with serve(bridge_settings(fake_tts, script)) as bridge:
        phone = PhoneCall(bridge.media_url, caller=caller((2.5, "caller_02.wav")), duration=6.0)
        task = asyncio.create_task(phone.run())
        await phone.started.wait()
        await asyncio.sleep(0.3)
        for junk in [
            "{not json",
            "[1, 2]",
            json.dumps({"event": "telepathy"}),
            json.dumps({"event": "media", "streamSid": phone.stream_sid, "media": {"payload": "%%%not-b64"}}),
            json.dumps({"event": "media", "media": {"payload": 12}}),
            b"\x00\x01binary",
            json.dumps({"event": "media", "media": {"payload": "A" * 200_000}}),
        ]:
            await phone.send_raw(junk)
        report = await task
        async with httpx.AsyncClient() as http:
            health = (await http.get(f"{bridge.http}/healthz")).json()
    assert report.server_closed is None or report.server_closed > 5.5, "the bridge kept the call up"
    assert report.greeting_latency is not None
    [barge] = report.barge_ins
    assert not barge.missed, "barge-in still works after the junk"
    assert health["status"] == "ok"


async def test_media_before_start_and_a_dropped_call_do_not_touch_another_call(fake_tts, script):
    async with serve(bridge_settings(fake_tts, script)) as bridge:
        good = PhoneCall(bridge.media_url, caller=caller((2.0, "caller_02.wav")), duration=5.0)
        good_task = asyncio.create_task(good.run())
        async with connect(bridge.media_url) as ws:
            await ws.send(json.dumps({"event": "media", "media": {"payload": "//8="}}))
            await ws.send(json.dumps({"event": "start", "streamSid": "MZbad", "start": {"streamSid": "MZbad"}}))
            await asyncio.sleep(0.5)
            ws.transport.abort()  # the caller's line drops without a close frame
        report = await good_task
        await wait_for(lambda: bridge.live_calls == 0)
    assert report.greeting_latency is not None and len(report.barge_ins) == 1
    assert not report.barge_ins[0].missed
    # The dropped call's TTS socket was closed too.
    assert all(c.closed_code is not None for c in fake_tts.connections)


async def test_call_end_tears_everything_down(fake_tts, script):
    async with serve(bridge_settings(fake_tts, script)) as bridge:
        before = {t for t in asyncio.all_tasks() if not t.done()}
        phone = PhoneCall(bridge.media_url, caller=Timeline([]), duration=1.5)
        await phone.run()
        await wait_for(lambda: bridge.live_calls == 0)
        await asyncio.sleep(0.1)
        leftover = {t for t in asyncio.all_tasks() if not t.done()} - before
        leftover = {t for t in leftover if "serve" not in repr(t.get_coro())}
        assert leftover == set() or all(t is asyncio.current_task() for t in leftover)
    [conn] = fake_tts.connections
    assert conn.messages[-1][1] == {"close_socket": True}
    assert fake_tts.live_connections == 0


async def test_webhook_returns_twiml_for_the_public_host(fake_tts, script):
    async with serve(bridge_settings(fake_tts, script)) as bridge, httpx.AsyncClient() as http:
        plain = await http.post(f"{bridge.http}/twilio/voice", data={"CallSid": "CA1"})
        proxied = await http.post(
            f"{bridge.http}/twilio/voice",
            data={"CallSid": "CA1"},
            headers={"X-Forwarded-Host": "abc.ngrok.app", "X-Forwarded-Proto": "https"},
        )
        health = await http.get(f"{bridge.http}/healthz")
    assert plain.status_code == 200 and plain.headers["content-type"].startswith("text/xml")
    assert f'<Stream url="wss://127.0.0.1:{bridge.port}/twilio/media"' in plain.text
    assert '<Connect action="https://abc.ngrok.app/twilio/after"><Stream url="wss://abc.ngrok.app/twilio/media"' \
        in proxied.text, "the stream, and where Twilio asks what next when it ends"
    assert health.json() == {"status": "ok", "calls": 0, "voice": "elevenlabs", "warning": None}


@pytest.mark.parametrize("casing", ["camel", "snake"])
async def test_server_messages_are_read_in_either_casing(script, casing):
    async with FakeElevenLabs(api_key=API_KEY, casing=casing) as fake, serve(bridge_settings(fake, script)) as bridge:
        phone = PhoneCall(bridge.media_url, caller=caller((2.0, "caller_04.wav")), duration=5.0)
        report = await phone.run()
    assert report.greeting_latency is not None
    assert [r for r in report.replies if r.reply_at is not None], "the reply after the barge-in is heard"
    assert all(c.final_sent for c in fake.contexts(0).values()), "every context reached isFinal"


async def test_rapid_barge_ins_never_exceed_five_contexts(tmp_path):
    from tests.e2e.conftest import write_script

    long_line = " ".join(["This is a long answer that keeps on going for quite a while."] * 5)
    script = write_script(tmp_path / "long.txt", [long_line] * 3)
    # Slow draining: each closed context keeps its slot for seconds while the server finishes it.
    fake = FakeElevenLabs(api_key=API_KEY, realtime_factor=1.5, seed=1)
    async with fake, serve(bridge_settings(fake, script)) as bridge:
        timeline = caller(*[(1.0 + 1.1 * i, "caller_04.wav") for i in range(8)])
        phone = PhoneCall(bridge.media_url, caller=timeline, duration=11.0)
        report = await phone.run()
    [conn] = fake.connections
    assert conn.errors == [], "the server never had to refuse a context"
    assert conn.max_open == 5, "the caller's interruptions pushed the bridge to the cap, never past it"
    assert report.barge_ins and not any(b.missed for b in report.barge_ins)
