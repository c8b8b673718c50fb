"""The phone simulator must behave as Twilio does, and measure honestly.

The playback model and the metrics are checked with explicit times, no socket. Then the whole phone
dials a tiny scripted Twilio-side server on 127.0.0.1 that plays a tone with marks and clears it when
it hears the caller, and the test compares what the simulator recorded with what the server did.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.server import ServerConnection, serve

from bridge.core.audio import pcm_level_dbfs
from bridge.tools.simulator import (
    TWILIO_USER_AGENT,
    CallLog,
    PhoneCall,
    PlaybackBuffer,
    Run,
    Timeline,
    load_wav_8k,
    pcm_to_ulaw,
    run_call,
    ulaw_to_pcm,
    wire,
)
from bridge.tools.simulator.audio import SPEECH_DBFS, speech_bounds
from bridge.tools.simulator.metrics import leaked_frames, underruns
from bridge.tools.simulator.playback import MarkEcho, frames, render, runs
from bridge.tools.simulator.report import build_report
from tests.support import SPEECH, tone

FRAME = 160  # µ-law bytes in 20 ms


def ulaw_tone(seconds: float) -> bytes:
    return pcm_to_ulaw(tone(440.0, seconds))


def roundtrip(pcm: bytes) -> np.ndarray:
    """PCM as it comes out of a µ-law line."""
    return np.frombuffer(ulaw_to_pcm(pcm_to_ulaw(pcm)), dtype="<i2")


def speaking_buffer(frames_before_marks: list[int], total: int, at: float = 0.0) -> PlaybackBuffer:
    """`total` 20 ms packets pushed at `at`, with a mark named `m<n>` after packet n for each n given."""
    buf = PlaybackBuffer()
    for i in range(total):
        buf.push_audio(at, b"\x10" * FRAME)
        if i + 1 in frames_before_marks:
            buf.push_mark(at, f"m{i + 1}")
    return buf


# -- the playback model, explicit times ----------------------------------------------------------


def test_marks_are_echoed_when_the_audio_before_them_has_played() -> None:
    buf = speaking_buffer([10, 20], total=30, at=1.0)
    assert buf.due_marks(1.199) == []
    assert buf.due_marks(1.2 + 1e-9) == [MarkEcho(pytest.approx(1.2), "m10", False)]
    assert buf.next_mark_due() == pytest.approx(1.4)
    assert [e.name for e in buf.due_marks(5.0)] == ["m20"]


def test_a_mark_on_an_idle_line_echoes_at_once_and_waits_for_the_packet_in_flight() -> None:
    buf = PlaybackBuffer()
    buf.push_mark(0.5, "idle")
    assert buf.due_marks(0.5) == [MarkEcho(0.5, "idle", False)]
    buf.push_audio(1.0, b"\x10" * 100)  # 12.5 ms of audio, still playing at 1.005
    buf.push_mark(1.005, "after")
    assert buf.next_mark_due() == pytest.approx(1.0125)


def test_marks_sit_behind_odd_sized_payloads_to_the_byte() -> None:
    buf = PlaybackBuffer()
    for _ in range(5):
        buf.push_audio(0.0, b"\x10" * 100)
    buf.push_mark(0.0, "end")
    assert buf.next_mark_due() == pytest.approx(500 / 8000)
    assert runs(buf.played) == [Run(0.0, pytest.approx(500 / 8000))]


def test_clear_drops_queued_audio_after_the_packet_in_flight_and_echoes_pending_marks() -> None:
    buf = speaking_buffer([10, 30, 50], total=50)
    echoes = buf.clear(0.31)
    assert echoes == [
        MarkEcho(pytest.approx(0.2), "m10", False),  # its audio had played; not yet sent back
        MarkEcho(0.31, "m30", True),
        MarkEcho(0.31, "m50", True),
    ]
    assert buf.next_mark_due() is None
    assert runs(buf.played) == [Run(0.0, pytest.approx(0.32))]
    assert buf.clears[0].cut == pytest.approx(0.32)
    assert leaked_frames(buf.played, buf.clears) == [0]


def test_a_speakerphone_hears_what_played_when_it_played_and_nothing_after_a_clear() -> None:
    buf = PlaybackBuffer()
    buf.push_audio(0.1, b"\x10" * FRAME * 5)  # 100 ms of agent audio from 0.1 s
    buf.clear(0.15)  # cut after the packet in flight: it plays until 0.16
    assert buf.heard_between(0.0, 0.1) == b"\xff" * 800  # µ-law silence before it
    window = buf.heard_between(0.14, 0.18)
    assert window == b"\x10" * 160 + b"\xff" * 160


def test_audio_after_a_clear_plays_right_after_the_packet_in_flight() -> None:
    buf = speaking_buffer([], total=50)
    buf.clear(0.305)
    buf.push_audio(0.306, b"\x20" * FRAME)  # the next reply, sent just after the clear
    assert runs(buf.played) == [Run(0.0, pytest.approx(0.34))]
    starts = [start for start, _ in frames(buf.played)]
    assert starts[-1] == pytest.approx(0.32)
    assert leaked_frames(buf.played, buf.clears) == [0]


def test_gaps_split_runs_and_count_as_underruns_unless_a_clear_explains_them() -> None:
    buf = PlaybackBuffer()
    buf.push_audio(0.0, b"\x10" * 800)  # 0.1 s
    buf.push_audio(0.05, b"\x10" * 800)  # arrives while playing: seamless
    buf.push_audio(0.25, b"\x10" * 800)  # 50 ms late: the line went quiet
    played_runs = runs(buf.played)
    assert played_runs == [Run(0.0, pytest.approx(0.2)), Run(0.25, pytest.approx(0.35))]
    [starved] = underruns(played_runs, clears=[])
    assert starved.at == pytest.approx(0.2) and starved.gap == pytest.approx(0.05)
    assert underruns(played_runs, clears=[0.21]) == []
    assert underruns(played_runs, clears=[], max_gap=0.04) == []


def test_jitter_delay_holds_the_start_and_a_clear_inside_it_plays_nothing() -> None:
    buf = PlaybackBuffer(start_delay=0.06)
    buf.push_audio(1.0, b"\x10" * FRAME)
    buf.push_mark(1.0, "m")
    assert runs(buf.played) == [Run(1.06, pytest.approx(1.08))]
    assert buf.clear(1.03) == [MarkEcho(1.03, "m", True)]
    assert buf.played == []


def test_close_drops_unplayed_audio_and_reports_unechoed_marks() -> None:
    buf = speaking_buffer([40], total=50)
    assert buf.close(0.5) == ["m40"]
    assert runs(buf.played) == [Run(0.0, pytest.approx(0.5))]
    buf.push_audio(0.6, b"\x10" * FRAME)
    assert runs(buf.played) == [Run(0.0, pytest.approx(0.5))]


def test_heard_audio_sits_on_the_call_timeline() -> None:
    buf = PlaybackBuffer()
    pcm = tone(440.0, 0.2)
    buf.push_audio(0.5, pcm_to_ulaw(pcm))
    heard = np.frombuffer(render(buf.played, until=1.0), dtype="<i2")
    assert len(heard) == 8000
    assert not heard[:4000].any() and not heard[5600:].any()
    assert np.array_equal(heard[4000:5600], roundtrip(pcm))


# -- caller audio, wire and metrics ------------------------------------------------------------------


def test_load_wav_8k_downmixes_and_resamples(tmp_path: Path) -> None:
    mono = tone(440.0, 0.5, level=0.5)
    path = tmp_path / "stereo16k.wav"
    up = np.repeat(np.frombuffer(tone(440.0, 0.5, level=0.5), dtype="<i2"), 2)  # crude 16 kHz copy
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(np.stack([up, up], axis=1).astype("<i2").tobytes())
    pcm = load_wav_8k(path)
    assert abs(len(pcm) - len(mono)) <= 4
    assert speech_bounds(pcm) is not None


def test_speech_bounds_skip_quiet_lead_in_and_tail() -> None:
    quiet = tone(440.0, 0.1, level=0.001)  # about -63 dBFS
    pcm = quiet + tone(440.0, 0.3) + quiet
    assert speech_bounds(pcm) == (pytest.approx(0.1), pytest.approx(0.4))
    assert speech_bounds(quiet) is None


def test_timeline_mixes_segments_over_a_looped_background() -> None:
    noise = (np.ones(80, dtype="<i2") * 100).tobytes()
    line = np.frombuffer(Timeline([(0.1, tone(440.0, 0.1))], background=noise).render(0.5), dtype="<i2")
    assert len(line) == 4000
    assert (line[:800] == 100).all() and (line[1600:] == 100).all()
    assert np.array_equal(line[800:1600], np.frombuffer(tone(440.0, 0.1), dtype="<i2") + 100)


def test_server_frames_twilio_would_reject_are_reported_not_raised() -> None:
    sid = "MZ1"
    assert wire.parse(b"\x00", sid) == wire.Malformed("binary frame (Twilio accepts text frames only)")
    assert isinstance(wire.parse("{nope", sid), wire.Malformed)
    assert isinstance(wire.parse('{"event":"dance","streamSid":"MZ1"}', sid), wire.Malformed)
    assert isinstance(wire.parse('{"event":"clear","streamSid":"MZ2"}', sid), wire.Malformed)
    assert isinstance(wire.parse('{"event":"media","streamSid":"MZ1","media":{"payload":"%%"}}', sid),
                      wire.Malformed)
    assert isinstance(wire.parse('{"event":"mark","streamSid":"MZ1","mark":{}}', sid), wire.Malformed)
    assert wire.parse('{"event":"clear","streamSid":"MZ1"}', sid) == wire.AgentClear()
    riff = base64.b64encode(b"RIFF....").decode()
    media = wire.parse(f'{{"event":"media","streamSid":"MZ1","media":{{"payload":"{riff}"}}}}', sid)
    assert isinstance(media, wire.AgentMedia) and media.warning


def test_metrics_from_a_scripted_call() -> None:
    speech = load_wav_8k(SPEECH / "caller_02.wav")
    caller = Timeline([(1.0, speech, "caller_02.wav"), (4.5, speech, "again")])
    onset, end = caller.segments[0].onset, caller.segments[0].end
    assert onset is not None and end is not None
    log = CallLog(caller, PlaybackBuffer())
    log.playback.push_audio(0.4, ulaw_tone(2.0))  # greeting from 0.4 s
    log.playback.clear(onset + 0.12)
    log.playback.push_audio(end + 0.7, ulaw_tone(1.0))  # the reply; the second segment lands on it
    log.ended_at = 8.0
    report = build_report(log)
    assert report.greeting_latency == pytest.approx(0.4)
    first, second = report.barge_ins
    assert first.reaction == pytest.approx(0.12) and first.talk_over == 0
    assert second.label == "again" and second.missed  # spoke over the reply; nobody cleared it
    assert second.talk_over == pytest.approx(end + 1.7 - second.onset)
    assert report.replies[0].latency == pytest.approx(0.7)
    assert report.leaked_frames == (0,)
    text = report.timeline_text()
    assert "  0.000 start" in text
    assert "agent audio starts (greeting latency 400 ms)" in text
    assert "clear (barge-in reaction 120 ms)" in text
    assert "caller speaks (caller_02.wav) over the agent" in text
    assert "reply latency 700 ms after caller_02.wav" in text


def test_a_caller_talking_over_the_agent_with_no_clear_is_a_missed_barge_in() -> None:
    caller = Timeline([(1.0, tone(440.0, 0.5), "yes.wav")])
    log = CallLog(caller, PlaybackBuffer())
    log.playback.push_audio(0.0, ulaw_tone(3.0))
    log.ended_at = 3.0
    [barge] = build_report(log).barge_ins
    assert barge.missed and barge.talk_over == pytest.approx(0.5)
    assert "barge-in MISSED" in build_report(log).timeline_text()


# -- end to end against a scripted Twilio-side server ---------------------------------------------------


@dataclass
class Script:
    """What the scripted server saw and did, in seconds since it received `start`."""

    headers: dict[str, str] = field(default_factory=dict)
    messages: list[dict[str, Any]] = field(default_factory=list)
    media_at: list[float] = field(default_factory=list)
    first_loud_ms: int | None = None
    clear_at: float | None = None
    echoes: list[tuple[float, str]] = field(default_factory=list)


def loud(payload: str) -> bool:
    return pcm_level_dbfs(ulaw_to_pcm(base64.b64decode(payload))) > SPEECH_DBFS


async def tone_then_clear(ws: ServerConnection, script: Script) -> None:
    """Plays 1 s of tone at once with marks after 0.3, 0.7 and 1.0 s; clears after 5 loud frames."""
    script.headers = dict(ws.request.headers) if ws.request else {}
    script.messages += [json.loads(await ws.recv()), json.loads(await ws.recv())]
    loop = asyncio.get_running_loop()
    t0, sid = loop.time(), script.messages[1]["streamSid"]
    audio = ulaw_tone(1.0)
    for i in range(50):
        payload = base64.b64encode(audio[i * FRAME : (i + 1) * FRAME]).decode()
        await ws.send(json.dumps({"event": "media", "streamSid": sid, "media": {"payload": payload}}))
        if i + 1 in (15, 35, 50):
            await ws.send(json.dumps({"event": "mark", "streamSid": sid, "mark": {"name": f"m{i + 1}"}}))
    run = 0
    async for raw in ws:
        message = json.loads(raw)
        script.messages.append(message)
        now = loop.time() - t0
        if message["event"] == "mark":
            script.echoes.append((now, message["mark"]["name"]))
        if message["event"] != "media":
            continue
        script.media_at.append(now)
        run = run + 1 if loud(message["media"]["payload"]) else 0
        if run == 1 and script.first_loud_ms is None:
            script.first_loud_ms = int(message["media"]["timestamp"])
        if run == 5 and script.clear_at is None:
            await ws.send(json.dumps({"event": "clear", "streamSid": sid}))
            script.clear_at = loop.time() - t0


async def test_a_call_against_a_scripted_twilio_side_server(tmp_path: Path) -> None:
    script = Script()
    speech = load_wav_8k(SPEECH / "caller_01.wav")
    async with serve(lambda ws: tone_then_clear(ws, script), "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        url = f"ws://127.0.0.1:{port}/twilio/media"
        call = PhoneCall(url, caller=Timeline([(0.3, speech, "caller_01.wav")]), duration=3.3,
                         custom_parameters={"tenant": "acme"}, auth_token="12345")
        report = await call.run()

    _check_handshake(script, call, url)
    _check_line(script)
    [barge] = report.barge_ins
    assert script.first_loud_ms is not None and script.clear_at is not None
    assert barge.onset == pytest.approx(script.first_loud_ms / 1000, abs=0.021)
    assert barge.reaction == pytest.approx(script.clear_at - barge.onset, abs=0.02)
    assert report.leaked_frames == (0,) and report.malformed == ()
    _check_marks(script, call)
    _check_heard(call)
    _check_wav(call, speech, tmp_path / "call.wav")


def _check_handshake(script: Script, call: PhoneCall, url: str) -> None:
    headers = {k.lower(): v for k, v in script.headers.items()}
    assert headers["user-agent"] == TWILIO_USER_AGENT
    signature = base64.b64encode(hmac.new(b"12345", url.encode(), hashlib.sha1).digest()).decode()
    assert headers["x-twilio-signature"] == signature
    assert "sec-websocket-extensions" not in headers
    connected, start = script.messages[:2]
    assert connected == {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    assert start == {
        "event": "start",
        "sequenceNumber": "1",
        "start": {
            "accountSid": call.ids.account_sid,
            "streamSid": call.stream_sid,
            "callSid": call.ids.call_sid,
            "tracks": ["inbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            "customParameters": {"tenant": "acme"},
        },
        "streamSid": call.stream_sid,
    }


def _check_line(script: Script) -> None:
    later = script.messages[2:]
    assert [int(m["sequenceNumber"]) for m in later] == list(range(2, 2 + len(later)))
    media = [m for m in later if m["event"] == "media"]
    assert len(media) == 165
    assert [m["media"]["chunk"] for m in media] == [str(i) for i in range(1, 166)]
    assert [m["media"]["timestamp"] for m in media] == [str(20 * i) for i in range(165)]
    assert all(m["media"]["track"] == "inbound" and len(base64.b64decode(m["media"]["payload"])) == FRAME
               for m in media)
    silent = base64.b64decode(media[0]["media"]["payload"])
    assert silent == b"\xff" * FRAME  # an idle line carries µ-law silence
    assert script.media_at[-1] == pytest.approx(3.3, abs=0.04)  # paced in real time, no drift
    assert later[-1]["event"] == "stop"
    assert later[-1]["stop"] == {"accountSid": script.messages[1]["start"]["accountSid"],
                                 "callSid": script.messages[1]["start"]["callSid"]}


def _check_marks(script: Script, call: PhoneCall) -> None:
    assert script.clear_at is not None
    assert [name for _, name in script.echoes] == ["m15", "m35", "m50"]
    m15, m35, m50 = (t for t, _ in script.echoes)
    assert m15 == pytest.approx(0.3, abs=0.04)
    assert m35 == pytest.approx(script.clear_at, abs=0.04)
    assert m50 == pytest.approx(script.clear_at, abs=0.04)
    assert [cleared for _, _, cleared in call.log.marks_sent] == [False, True, True]


def _check_heard(call: PhoneCall) -> None:
    [start], [stop] = call.log.playback_started, call.log.playback_stopped
    [clear_at] = call.log.clears
    assert 0 <= stop - clear_at <= 0.02 + 1e-6  # the packet in flight finishes, nothing more
    heard = np.frombuffer(call.heard, dtype="<i2")
    assert len(heard) == round(3.3 * 8000)
    a, b = round(start * 8000), round(stop * 8000)
    assert not heard[:a].any() and not heard[b:].any()
    assert np.array_equal(heard[a:b], roundtrip(tone(440.0, 1.0))[: b - a])


def _check_wav(call: PhoneCall, speech: bytes, path: Path) -> None:
    call.write_wav(path)
    with wave.open(str(path), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (2, 2, 8000)
        stereo = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2)
    left, right = stereo[:, 0], stereo[:, 1]
    expected = roundtrip(speech)
    assert np.array_equal(left[2400 : 2400 + len(expected)], expected)
    assert not left[:2400].any()
    assert np.array_equal(right, np.frombuffer(call.heard, dtype="<i2"))


async def test_the_call_ends_cleanly_when_the_server_closes_first() -> None:
    async def hang_up_after_10_frames(ws: ServerConnection) -> None:
        for _ in range(12):  # connected, start, 10 media
            await ws.recv()
        await ws.close(1000, "bye")

    async with serve(hang_up_after_10_frames, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        call = PhoneCall(f"ws://127.0.0.1:{port}/twilio/media", caller=Timeline(), duration=3.0)
        report = await asyncio.wait_for(call.run(), timeout=2.0)
    assert report.server_closed == pytest.approx(0.2, abs=0.05)
    assert call.log.close_code == 1000 and call.log.stop_sent is None
    assert "server closed the socket (code 1000 bye)" in report.timeline_text()


async def test_faulty_frames_are_counted_and_send_raw_reaches_the_server() -> None:
    got: list[str | bytes] = []

    async def faulty(ws: ServerConnection) -> None:
        await ws.recv()
        sid = json.loads(await ws.recv())["streamSid"]
        await ws.send(b"\x01\x02")
        await ws.send("not json")
        await ws.send(json.dumps({"event": "media", "streamSid": "MZwrong", "media": {"payload": ""}}))
        await ws.send(json.dumps({"event": "mark", "streamSid": sid, "mark": {"name": "ok"}}))
        async for raw in ws:
            got.append(raw)

    async with serve(faulty, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        call = PhoneCall(f"ws://127.0.0.1:{port}/twilio/media", caller=Timeline(), duration=0.4)
        await call.start()
        await call.send_raw("raw hello")
        report = await call.wait()
    assert len(report.malformed) == 3
    assert report.marks_echoed == 1  # the valid mark after the junk still works
    assert "raw hello" in got
    assert json.loads(got[-1])["event"] == "stop"


async def test_run_call_rejects_a_query_string_like_twilio() -> None:
    with pytest.raises(ValueError, match="query string"):
        await run_call("ws://127.0.0.1:1/twilio/media?token=x", Timeline(), 1.0)
