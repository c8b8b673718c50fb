"""Each carrier's codec on golden messages shaped as its docs show them (cited in each codec).

Inbound: the documented messages decode to the core's events; junk becomes `TelephonyMalformed`,
never an exception. Outbound: every phone action encodes to the documented message, and the
carrier's stricter rules hold (Exotel's chunk sizes, Vonage's exact 20 ms binary frames).
"""

from __future__ import annotations

import base64
import json
import math
import struct

import numpy as np
import pytest

from bridge.carriers.base import CARRIERS, call_settings_for, frames, make_codec
from bridge.carriers.exotel.codec import ExotelCodec
from bridge.carriers.plivo.codec import PlivoCodec
from bridge.carriers.signalwire.codec import SignalWireCodec
from bridge.carriers.telnyx.codec import TelnyxCodec
from bridge.carriers.vonage.codec import VonageCodec
from bridge.core.actions import ClearPlayback, SendMark, SendMedia
from bridge.core.audio import ulaw_to_pcm
from bridge.core.call import CallSettings
from bridge.core.events import CallEnded, CallerAudio, CallStarted, DtmfReceived, MarkPlayed, TelephonyMalformed

ULAW_20MS = bytes(b for b in range(0x10, 0xB1) if b != 0x7F)  # 160 bytes of non-silent mu-law (no "minus zero")
B64 = base64.b64encode(ULAW_20MS).decode()
PCM_20MS = ulaw_to_pcm(ULAW_20MS)  # the core's frame that the 8 kHz carriers carry as ULAW_20MS


def tone(freq: float, rate: int, ms: int) -> bytes:
    n = rate * ms // 1000
    return struct.pack(f"<{n}h", *(int(8000 * math.sin(2 * math.pi * freq * i / rate)) for i in range(n)))


def dominant(pcm: bytes, rate: int) -> float:
    x = np.frombuffer(pcm, dtype="<i2").astype(float)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[int(np.argmax(spectrum))])


JUNK = ["{not json", "[1, 2]", '{"event": "telepathy"}', '{"event": "media", "media": {"payload": "%%%"}}', "{}",
        '{"event": 7}']


@pytest.mark.parametrize("carrier", CARRIERS)
@pytest.mark.parametrize("junk", JUNK)
def test_junk_is_a_logged_problem_never_an_exception(carrier, junk):
    codec = make_codec(carrier)
    events = codec.decode(junk, 1.0)
    assert all(isinstance(e, TelephonyMalformed) for e in events) and len(events) <= 1


@pytest.mark.parametrize("carrier", CARRIERS)
def test_nothing_is_sent_before_the_stream_started(carrier):
    with pytest.raises(RuntimeError):
        make_codec(carrier).encode(ClearPlayback())


# ------------------------------------------------------------------ Telnyx

TELNYX_START = {
    "event": "start", "sequence_number": "1", "stream_id": "32DE0DEA-53CB-4B21-89A4-9E1819C043BC",
    "start": {"user_id": "3E6F995F-85F7-4705-9741-53B116D28237",
              "call_control_id": "v3:MdI91X4lWFEs7IgbBEOT9M4AigoY08M0WWZFISt1Yw2axZ_IiE4pqg",
              "call_session_id": "6c8c1fea-0f6f-11ef-9c2c-02420a0d4f69", "from": "+13122010094", "to": "+13122123456",
              "tags": ["TAG1"], "client_state": "aGF2ZSBhIG5pY2UgZGF5ID1d", "custom_parameters": {"tenant": "acme"},
              "media_format": {"encoding": "PCMU", "sample_rate": 8000, "channels": 1}},
}


def test_telnyx_inbound_messages_become_events():
    codec = TelnyxCodec()
    assert codec.decode('{"event": "connected", "version": "1.0.0"}', 0.0) == []
    [started] = codec.decode(json.dumps(TELNYX_START), 0.1)
    assert started == CallStarted(0.1, TELNYX_START["stream_id"], TELNYX_START["start"]["call_control_id"],
                                  {"tenant": "acme"})
    media = {"event": "media", "sequence_number": "4", "stream_id": TELNYX_START["stream_id"],
             "media": {"track": "inbound", "chunk": "2", "timestamp": "5", "payload": B64}}
    assert codec.decode(json.dumps(media), 0.2) == [CallerAudio(0.2, ulaw_to_pcm(ULAW_20MS))]
    outbound = {**media, "media": {**media["media"], "track": "outbound"}}
    assert codec.decode(json.dumps(outbound), 0.2) == []
    dtmf = {"event": "dtmf", "stream_id": TELNYX_START["stream_id"], "occurred_at": "2024-05-01T10:00:00Z",
            "sequence_number": "5", "dtmf": {"digit": "1"}}
    assert codec.decode(json.dumps(dtmf), 0.3) == [DtmfReceived(0.3, "1")]
    mark = {"event": "mark", "sequence_number": "6", "stream_id": TELNYX_START["stream_id"], "mark": {"name": "1:10"}}
    assert codec.decode(json.dumps(mark), 0.4) == [MarkPlayed(0.4, "1:10")]
    error = {"event": "error", "payload": {"code": 100002, "title": "Unknown error", "detail": "An unknown error"}}
    assert isinstance(codec.decode(json.dumps(error), 0.5)[0], TelephonyMalformed)
    assert codec.decode(json.dumps({"event": "stop", "stream_id": TELNYX_START["stream_id"]}), 0.6) == [
        CallEnded(0.6, "stop")]


def test_telnyx_outbound_is_rtp_mode_json_without_a_stream_id():
    codec = TelnyxCodec()
    codec.decode(json.dumps(TELNYX_START), 0.0)
    assert json.loads(codec.encode(SendMedia(PCM_20MS))) == {"event": "media", "media": {"payload": B64}}
    assert json.loads(codec.encode(SendMark("1:10"))) == {"event": "mark", "mark": {"name": "1:10"}}
    assert json.loads(codec.encode(ClearPlayback())) == {"event": "clear"}


def test_telnyx_refuses_a_codec_it_did_not_ask_for():
    other = json.loads(json.dumps(TELNYX_START))
    other["start"]["media_format"]["encoding"] = "OPUS"
    codec = TelnyxCodec()
    assert isinstance(codec.decode(json.dumps(other), 0.0)[0], TelephonyMalformed)
    assert codec.stream_id is None


# ------------------------------------------------------------------ Plivo

PLIVO_START = {
    "sequenceNumber": 0, "event": "start",
    "start": {"callId": "6a4ba3ab-5f7d-4f4b-a3e3-3d8f1a1a8a3e", "streamId": "b77e037d-4119-44b5-902d-25826b654539",
              "accountId": "MAXXXXXXXXXXXXXXXXXX", "tracks": ["inbound"],
              "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000}},
    "extra_headers": "{}",
}
PLIVO_SID = PLIVO_START["start"]["streamId"]


def test_plivo_inbound_messages_become_events():
    codec = PlivoCodec()
    [started] = codec.decode(json.dumps(PLIVO_START), 0.0)
    assert started == CallStarted(0.0, PLIVO_SID, PLIVO_START["start"]["callId"], {})
    media = {"sequenceNumber": 1, "streamId": PLIVO_SID, "event": "media",
             "media": {"track": "inbound", "timestamp": "1697535264000", "chunk": 1, "payload": B64}}
    assert codec.decode(json.dumps(media), 0.1) == [CallerAudio(0.1, ulaw_to_pcm(ULAW_20MS))]
    dtmf = {"event": "dtmf", "sequenceNumber": 2, "streamId": PLIVO_SID,
            "dtmf": {"track": "inbound", "digit": "5", "timestamp": "1697535265000"}}
    assert codec.decode(json.dumps(dtmf), 0.2) == [DtmfReceived(0.2, "5")]
    played = {"event": "playedStream", "sequenceNumber": 3, "streamId": PLIVO_SID, "name": "1:10"}
    assert codec.decode(json.dumps(played), 0.3) == [MarkPlayed(0.3, "1:10")]
    cleared = {"event": "clearedAudio", "sequenceNumber": 4, "streamId": PLIVO_SID}
    assert codec.decode(json.dumps(cleared), 0.4) == []
    assert codec.decode(json.dumps({"event": "stop", "streamId": PLIVO_SID}), 0.5) == [CallEnded(0.5, "stop")]


def test_plivo_outbound_is_play_audio_checkpoint_and_clear_audio():
    codec = PlivoCodec()
    codec.decode(json.dumps(PLIVO_START), 0.0)
    assert json.loads(codec.encode(SendMedia(PCM_20MS))) == {
        "event": "playAudio", "streamId": PLIVO_SID,
        "media": {"contentType": "audio/x-mulaw", "sampleRate": 8000, "payload": B64}}
    assert json.loads(codec.encode(SendMark("1:10"))) == {"event": "checkpoint", "streamId": PLIVO_SID, "name": "1:10"}
    assert json.loads(codec.encode(ClearPlayback())) == {"event": "clearAudio", "streamId": PLIVO_SID}


# ------------------------------------------------------------------ Exotel (the page's own examples)

EXOTEL_START = """{"event": "start", "sequence_number": "1", "stream_sid": "MZxxxxxxxxxxxxxxxxxxxxxxxx",
 "start": {"stream_sid": "MZxxxxxxxxxxxxxxxxxxxxxxxx", "call_sid": "CAxxxxxxxxxxxxxxxxxxxxxxxx",
  "account_sid": "ACxxxxxxxxxxxxxxxxxxxxxxxx", "from": "+919876543210", "to": "+918047491899",
  "custom_parameters": {"key1": "value1"},
  "media_format": {"encoding": "audio/x-raw", "sample_rate": "8000", "bit_rate": "16"}}}"""
EXOTEL_SID = "MZxxxxxxxxxxxxxxxxxxxxxxxx"


def test_exotel_inbound_messages_become_events():
    codec = ExotelCodec()
    assert codec.decode('{ "event": "connected" }', 0.0) == []
    [started] = codec.decode(EXOTEL_START, 0.0)
    assert started == CallStarted(0.0, EXOTEL_SID, "CAxxxxxxxxxxxxxxxxxxxxxxxx", {"key1": "value1"})
    pcm = tone(440, 8000, 100)
    media = {"event": "media", "sequence_number": "3", "stream_sid": EXOTEL_SID,
             "media": {"chunk": "2", "timestamp": "200", "payload": base64.b64encode(pcm).decode()}}
    assert codec.decode(json.dumps(media), 0.1) == [CallerAudio(0.1, pcm)]
    dtmf = {"event": "dtmf", "sequence_number": "7", "stream_sid": EXOTEL_SID,
            "dtmf": {"digit": "5", "duration": "100"}}
    assert codec.decode(json.dumps(dtmf), 0.2) == [DtmfReceived(0.2, "5")]
    mark = {"event": "mark", "sequence_number": "15", "stream_sid": EXOTEL_SID, "mark": {"name": "1:10"}}
    assert codec.decode(json.dumps(mark), 0.3) == [MarkPlayed(0.3, "1:10")]
    stop = {"event": "stop", "sequence_number": "20", "stream_sid": EXOTEL_SID,
            "stop": {"call_sid": "CAxxxxxxxxxxxxxxxxxxxxxxxx", "account_sid": "ACx", "reason": "callended"}}
    assert codec.decode(json.dumps(stop), 0.4) == [CallEnded(0.4, "stop")]


def test_exotel_outbound_chunks_meet_its_size_rule_and_marks_follow_their_audio():
    codec = ExotelCodec()
    codec.decode(EXOTEL_START, 0.0)
    sent = []
    for _ in range(23):  # 460 ms of 20 ms frames, then a mark: the end of a reply
        sent += frames(codec.encode(SendMedia(PCM_20MS)))
    sent += frames(codec.encode(SendMark("1:23")))
    media = [json.loads(m) for m in sent[:-1]]
    sizes = [len(base64.b64decode(m["media"]["payload"])) for m in media]
    assert all(m["event"] == "media" and m["stream_sid"] == EXOTEL_SID for m in media)
    assert all(3200 <= n <= 100_000 and n % 320 == 0 for n in sizes), sizes
    assert sum(sizes) >= 23 * 320 and sum(sizes) - 23 * 320 < 3200, "only the last chunk was topped up"
    assert json.loads(sent[-1]) == {"event": "mark", "stream_sid": EXOTEL_SID, "mark": {"name": "1:23"}}
    audio = b"".join(base64.b64decode(m["media"]["payload"]) for m in media)
    assert audio[: 23 * 320] == ulaw_to_pcm(ULAW_20MS) * 23, "the caller hears exactly what the core sent"


def test_exotel_clear_drops_what_it_held():
    codec = ExotelCodec()
    codec.decode(EXOTEL_START, 0.0)
    assert codec.encode(SendMedia(PCM_20MS)) == []
    cleared = [json.loads(m) for m in frames(codec.encode(ClearPlayback()))]
    assert cleared == [{"event": "clear", "stream_sid": EXOTEL_SID}]
    assert frames(codec.encode(SendMark("2:0")))[0].startswith('{"event":"mark"'), "nothing held was sent after it"


def test_exotel_asks_for_a_lead_of_two_chunks():
    codec = ExotelCodec()
    adjusted = call_settings_for(CallSettings(lead_ms=200, low_ms=100), codec)
    assert adjusted.lead_ms == 400 and adjusted.low_ms == 300
    assert call_settings_for(CallSettings(lead_ms=200), TelnyxCodec()).lead_ms == 200


@pytest.mark.parametrize("rate", [16000, 24000])
def test_exotel_wideband_converts_at_the_boundary(rate):
    codec = ExotelCodec(rate=rate)
    start = json.loads(EXOTEL_START)
    start["start"]["media_format"]["sample_rate"] = str(rate)
    codec.decode(json.dumps(start), 0.0)
    heard = b""
    for i in range(20):
        media = {"event": "media", "stream_sid": EXOTEL_SID,
                 "media": {"payload": base64.b64encode(tone(1000, rate, 100)).decode()}}
        heard += b"".join(e.pcm for e in codec.decode(json.dumps(media), i * 0.1) if isinstance(e, CallerAudio))
    assert abs(dominant(heard, 8000) - 1000) < 20
    out = b""
    for i in range(50):
        chunk = tone(700, 8000, 1000)[i * 320:(i + 1) * 320]
        for message in frames(codec.encode(SendMedia(chunk))):
            payload = base64.b64decode(json.loads(message)["media"]["payload"])
            assert len(payload) % (rate // 50 * 2) == 0 and len(payload) >= 3200
            out += payload
    assert abs(dominant(out, rate) - 700) < 20


# ------------------------------------------------------------------ Vonage (asyncapi examples)

VONAGE_CONNECTED = {"event": "websocket:connected", "content-type": "audio/l16;rate=16000", "call_uuid": "aaaa-bbbb",
                    "prop1": "value1"}


def test_vonage_inbound_binary_and_text_become_events():
    codec = VonageCodec()
    assert isinstance(codec.decode(b"\x00" * 640, 0.0)[0], TelephonyMalformed), "audio before connected"
    [started] = codec.decode(json.dumps(VONAGE_CONNECTED), 0.0)
    assert started == CallStarted(0.0, "aaaa-bbbb", "aaaa-bbbb", {"call_uuid": "aaaa-bbbb", "prop1": "value1"})
    wide = tone(5500, 16000, 2000)  # above what 8 kHz can carry
    heard = b""
    for i in range(100):
        heard += b"".join(e.pcm for e in codec.decode(wide[i * 640:(i + 1) * 640], i * 0.02))
    assert heard == wide, "the caller's 16 kHz audio reaches the core as it came"
    assert isinstance(codec.decode(b"\x00" * 639, 2.0)[0], TelephonyMalformed), "half a sample"
    assert codec.decode('{"event": "websocket:dtmf", "digit": "5", "duration": 260}', 1.0) == [DtmfReceived(1.0, "5")]
    notify = {"event": "websocket:notify", "payload": {"name": "1:10"}}
    assert codec.decode(json.dumps(notify), 1.1) == [MarkPlayed(1.1, "1:10")]
    assert codec.decode('{"event": "websocket:cleared"}', 1.2) == []


def test_vonage_refuses_a_rate_the_ncco_did_not_ask_for():
    codec = VonageCodec(rate=16000)
    other = {**VONAGE_CONNECTED, "content-type": "audio/l16;rate=8000"}
    assert isinstance(codec.decode(json.dumps(other), 0.0)[0], TelephonyMalformed)


@pytest.mark.parametrize("rate", [8000, 16000])
def test_vonage_runs_the_call_at_the_line_rate(rate):
    settings = call_settings_for(CallSettings(), VonageCodec(rate=rate))
    assert settings.audio.rate == rate and settings.audio.pcm_frame_bytes == rate // 50 * 2
    assert call_settings_for(CallSettings(), TelnyxCodec()).audio.rate == 8000, "µ-law lines stay at 8 kHz"


@pytest.mark.parametrize("rate", [8000, 16000])
def test_vonage_outbound_is_the_cores_20_ms_frame_unchanged(rate):
    codec = VonageCodec(rate=rate)
    codec.decode(json.dumps({**VONAGE_CONNECTED, "content-type": f"audio/l16;rate={rate}"}), 0.0)
    source = tone(rate * 0.35, rate, 1000)  # 5.6 kHz at 16 kHz: a wideband line carries it intact
    out: list[str | bytes] = []
    for i in range(50):
        out += frames(codec.encode(SendMedia(source[i * codec.frame_bytes:(i + 1) * codec.frame_bytes])))
    assert all(isinstance(f, bytes) and len(f) == rate // 50 * 2 for f in out)
    assert b"".join(out) == source  # type: ignore[arg-type]
    assert json.loads(codec.encode(SendMark("1:50"))) == {"action": "notify", "payload": {"name": "1:50"}}
    assert codec.encode(ClearPlayback()) == '{"action":"clear"}'


# ------------------------------------------------------------------ SignalWire (Twilio's messages)


def test_signalwire_speaks_twilio_json():
    codec = SignalWireCodec()
    start = {"event": "start", "sequenceNumber": "1", "streamSid": "MZ1",
             "start": {"accountSid": "AC1", "streamSid": "MZ1", "callSid": "CA1", "tracks": ["inbound"],
                       "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                       "customParameters": {}}}
    assert codec.decode(json.dumps(start), 0.0) == [CallStarted(0.0, "MZ1", "CA1", {})]
    assert json.loads(codec.encode(ClearPlayback())) == {"event": "clear", "streamSid": "MZ1"}
