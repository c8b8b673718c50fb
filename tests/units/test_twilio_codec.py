"""The Twilio codec against the golden messages of shared/protocols.md §2, plus TwiML and URLs."""

from __future__ import annotations

import base64
import json
import string
import struct
import xml.etree.ElementTree as ET

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.datastructures import Headers

from bridge.carriers.twilio.codec import MAX_MEDIA_BYTES, TwilioCodec
from bridge.carriers.twilio.twiml import busy_twiml, media_stream_url, public_base_url, stream_twiml
from bridge.core.actions import ClearPlayback, SendMark, SendMedia
from bridge.core.audio import ulaw_to_pcm
from bridge.core.events import (
    CallEnded,
    CallerAudio,
    CallStarted,
    DtmfReceived,
    MarkPlayed,
    TelephonyMalformed,
)

SID = "MZ18ad3ab5a668481ce02b83e7395059f0"
CALL = "CA5f4e6b0dbbd9e5a56f9e8e5e5c0c0f1a"

# §2.2, verbatim but for concrete SIDs.
CONNECTED = '{"event":"connected","protocol":"Call","version":"1.0.0"}'
START = json.dumps({
    "event": "start", "sequenceNumber": "1", "streamSid": SID,
    "start": {"accountSid": "AC123", "streamSid": SID, "callSid": CALL, "tracks": ["inbound"],
              "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
              "customParameters": {"tenant": "acme", "lang": "en"}},
})
DTMF = json.dumps({"event": "dtmf", "streamSid": SID, "sequenceNumber": "5",
                   "dtmf": {"track": "inbound_track", "digit": "1"}})
MARK = json.dumps({"event": "mark", "sequenceNumber": "4", "streamSid": SID, "mark": {"name": "r-42:17"}})
STOP = json.dumps({"event": "stop", "sequenceNumber": "5", "streamSid": SID,
                   "stop": {"accountSid": "AC123", "callSid": CALL}})


def media(payload: str | bytes, *, track: str = "inbound", sid: str = SID) -> str:
    if isinstance(payload, bytes):
        payload = base64.b64encode(payload).decode()
    return json.dumps({"event": "media", "sequenceNumber": "4", "streamSid": sid,
                       "media": {"track": track, "chunk": "2", "timestamp": "5", "payload": payload}})


def started() -> TwilioCodec:
    codec = TwilioCodec()
    assert codec.decode(CONNECTED, 0.0) == []
    [event] = codec.decode(START, 0.01)
    assert isinstance(event, CallStarted)
    return codec


def g711_ulaw(byte: int) -> int:
    """ITU-T G.711 mu-law expansion, written out from the standard (independent of audioop)."""
    byte = ~byte & 0xFF
    magnitude = (((byte & 0x0F) << 3) + 0x84) << ((byte >> 4) & 0x07)
    return -(magnitude - 0x84) if byte & 0x80 else magnitude - 0x84


# ---------------------------------------------------------------------------- decode, golden


def test_connected_then_start_gives_call_started_with_custom_parameters() -> None:
    codec = TwilioCodec()
    assert codec.decode(CONNECTED, 1.0) == []
    assert codec.decode(START, 1.5) == [CallStarted(1.5, SID, CALL, {"tenant": "acme", "lang": "en"})]
    assert codec.stream_id == SID


def test_media_decodes_every_mulaw_byte_to_the_g711_value() -> None:
    codec = started()
    ulaw = bytes(range(256))
    [event] = codec.decode(media(ulaw), 2.0)
    expected = struct.pack("<256h", *(g711_ulaw(b) for b in ulaw))
    assert event == CallerAudio(2.0, expected)
    assert g711_ulaw(0xFF) == 0 and g711_ulaw(0x00) == -32124 and g711_ulaw(0x80) == 32124


def test_a_20ms_frame_becomes_320_bytes_of_pcm() -> None:
    [event] = started().decode(media(b"\xff" * 160), 2.0)
    assert isinstance(event, CallerAudio) and event.pcm == b"\x00\x00" * 160


def test_mark_dtmf_and_stop() -> None:
    codec = started()
    assert codec.decode(MARK, 3.0) == [MarkPlayed(3.0, "r-42:17")]
    assert codec.decode(DTMF, 3.1) == [DtmfReceived(3.1, "1")]
    assert codec.decode(STOP, 3.2) == [CallEnded(3.2, "stop")]


def test_outbound_track_media_is_not_caller_audio() -> None:
    assert started().decode(media(b"\xff" * 160, track="outbound"), 1.0) == []


def test_start_without_custom_parameters_or_call_sid() -> None:
    message = json.dumps({"event": "start", "streamSid": SID, "start": {"streamSid": SID}})
    assert TwilioCodec().decode(message, 0.0) == [CallStarted(0.0, SID, "", {})]


# ---------------------------------------------------------------------------- encode, golden


def compact(message: dict[str, object]) -> str:
    return json.dumps(message, separators=(",", ":"))


def test_encode_media_mark_and_clear_exactly_as_protocols_2_3() -> None:
    codec = started()
    ulaw = bytes(b for b in range(161) if b != 0x7F)  # 0x7F is µ-law's "minus zero": it comes back as 0xFF
    payload = base64.b64encode(ulaw).decode()
    assert codec.encode(SendMedia(ulaw_to_pcm(ulaw))) == compact(
        {"event": "media", "streamSid": SID, "media": {"payload": payload}})
    assert codec.encode(SendMark("r-42:17")) == compact(
        {"event": "mark", "streamSid": SID, "mark": {"name": "r-42:17"}})
    assert codec.encode(ClearPlayback()) == compact({"event": "clear", "streamSid": SID})


def test_encode_escapes_names_and_round_trips_through_json() -> None:
    codec = started()
    name = 'odd "name" \\ with\nnewline and é'
    assert json.loads(codec.encode(SendMark(name)))["mark"]["name"] == name
    sent = json.loads(codec.encode(SendMedia(ulaw_to_pcm(b"\x00\x01\xfe"))))
    assert base64.b64decode(sent["media"]["payload"]) == b"\x00\x01\xfe"


def test_encode_before_start_is_our_bug() -> None:
    with pytest.raises(RuntimeError):
        TwilioCodec().encode(ClearPlayback())


# ---------------------------------------------------------------------------- bad input

BAD_AFTER_START = {
    "invalid JSON": '{"event": "media",',
    "JSON array": '["media"]',
    "JSON string": '"media"',
    "no event": '{"streamSid": "MZ1"}',
    "event not a string": '{"event": 5}',
    "unknown event": '{"event": "transmogrify"}',
    "media without media": json.dumps({"event": "media", "streamSid": SID}),
    "media not an object": '{"event": "media", "media": "AAAA"}',
    "payload missing": '{"event": "media", "media": {"track": "inbound"}}',
    "payload not a string": '{"event": "media", "media": {"payload": 12}}',
    "payload padding missing": media("QQ"),
    "payload a partial byte": media("QUJDR"),
    "payload data after padding": media("QQ==QQ=="),
    "payload with whitespace": media("QU JD"),
    "payload not ascii": media("QUJDé"),
    "payload empty": media(""),
    "payload too large": media(b"\xff" * (MAX_MEDIA_BYTES + 3)),
    "media for another stream": media(b"\xff" * 160, sid="MZother"),
    "track not a string": media(b"\xff", track=None),  # type: ignore[arg-type]
    "second start": START,
    "mark without name": '{"event": "mark", "mark": {}}',
    "mark name not a string": '{"event": "mark", "mark": {"name": 3}}',
    "mark not an object": '{"event": "mark", "mark": "x"}',
    "dtmf without digit": '{"event": "dtmf", "dtmf": {}}',
    "dtmf two digits": '{"event": "dtmf", "dtmf": {"digit": "12"}}',
    "deeply nested": "[" * 100_000 + "]" * 100_000,
    "huge number": '{"event": "media", "n": ' + "9" * 10_000 + "}",
}


@pytest.mark.parametrize("message", BAD_AFTER_START.values(), ids=BAD_AFTER_START.keys())
def test_bad_messages_become_telephony_malformed(message: str) -> None:
    [event] = started().decode(message, 7.0)
    assert isinstance(event, TelephonyMalformed) and event.at == 7.0
    assert 0 < len(event.reason) <= 80 and "QUJD" not in event.reason and "\n" not in event.reason


@pytest.mark.parametrize("message", [
    media(b"\xff" * 160),
    '{"event": "start", "start": {}}',
    '{"event": "start", "start": "x"}',
    '{"event": "start", "start": {"streamSid": 5}}',
    '{"event": "start", "start": {"streamSid": "MZ1", "customParameters": [1]}}',
])
def test_no_media_before_a_valid_start(message: str) -> None:
    codec = TwilioCodec()
    [event] = codec.decode(message, 0.0)
    assert isinstance(event, TelephonyMalformed)
    assert codec.stream_id is None


def test_binary_frames_are_malformed() -> None:
    [event] = started().decode(media(b"\xff").encode(), 0.0)
    assert isinstance(event, TelephonyMalformed) and "binary" in event.reason


def test_unknown_event_names_are_shortened() -> None:
    [event] = started().decode(json.dumps({"event": "x" * 10_000}), 0.0)
    assert isinstance(event, TelephonyMalformed) and len(event.reason) < 80


def test_non_string_parameters_are_dropped() -> None:
    start = {"streamSid": SID, "customParameters": {"a": "b", "n": 1}}
    message = json.dumps({"event": "start", "start": start})
    assert TwilioCodec().decode(message, 0.0) == [CallStarted(0.0, SID, "", {"a": "b"})]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
event_names = st.sampled_from(["connected", "start", "media", "mark", "dtmf", "stop", "clear", ""])
messages = st.fixed_dictionaries(
    {"event": event_names},
    optional={"streamSid": st.just(SID) | st.text(max_size=5), "start": json_values, "media": json_values,
              "mark": json_values, "dtmf": json_values, "stop": json_values},
)


@settings(max_examples=300, deadline=None)
@given(raw=st.text() | st.binary() | messages.map(json.dumps) | json_values.map(json.dumps),
       started_first=st.booleans())
def test_decode_never_raises(raw: str | bytes, started_first: bool) -> None:
    codec = started() if started_first else TwilioCodec()
    events = codec.decode(raw, 1.0)
    assert isinstance(events, list) and len(events) <= 1
    if isinstance(raw, bytes):
        assert isinstance(events[0], TelephonyMalformed)


@settings(max_examples=200, deadline=None)
@given(payload=st.text(alphabet=string.ascii_letters + string.digits + "+/= ", max_size=40))
def test_media_payloads_decode_or_are_refused_never_raise(payload: str) -> None:
    [event] = started().decode(media(payload), 1.0)
    if isinstance(event, CallerAudio):
        assert event.pcm == struct.pack(f"<{len(event.pcm) // 2}h",
                                        *(g711_ulaw(b) for b in base64.b64decode(payload, validate=True)))
    else:
        assert isinstance(event, TelephonyMalformed)


# ---------------------------------------------------------------------------- TwiML and URLs


def test_stream_twiml_exact() -> None:
    assert stream_twiml("wss://bridge.example.com/twilio/media") == (
        '<?xml version="1.0" encoding="UTF-8"?><Response><Connect>'
        '<Stream url="wss://bridge.example.com/twilio/media"/></Connect></Response>'
    )


def test_stream_twiml_parameters_are_escaped_children() -> None:
    xml = stream_twiml("wss://h.example/twilio/media", {"tenant": "a&b", "quote": '"<x>"'})
    stream = ET.fromstring(xml.split("?>", 1)[1]).find("./Connect/Stream")
    assert stream is not None and stream.get("url") == "wss://h.example/twilio/media"
    assert [(p.get("name"), p.get("value")) for p in stream] == [("tenant", "a&b"), ("quote", '"<x>"')]


@pytest.mark.parametrize("url", ["https://h/twilio/media", "wss://h/twilio/media?token=1", "h/twilio/media"])
def test_stream_twiml_refuses_urls_twilio_cannot_use(url: str) -> None:
    with pytest.raises(ValueError):
        stream_twiml(url)


def test_busy_twiml_says_then_hangs_up() -> None:
    xml = busy_twiml("Sorry & sorry, all <lines> are busy.")
    root = ET.fromstring(xml.split("?>", 1)[1])
    assert xml.startswith('<?xml version="1.0" encoding="UTF-8"?>')
    assert [child.tag for child in root] == ["Say", "Hangup"]
    assert root[0].text == "Sorry & sorry, all <lines> are busy."


def test_public_url_wins_over_headers() -> None:
    headers = {"x-forwarded-proto": "http", "x-forwarded-host": "other.example", "host": "localhost:8000"}
    assert public_base_url("https://bridge.example.com/", headers, "http", "localhost:8000") == (
        "https://bridge.example.com")


def test_forwarded_headers_as_ngrok_sends_them() -> None:
    headers = Headers({"host": "localhost:8000", "x-forwarded-proto": "https",
                       "x-forwarded-host": "abc.ngrok.app"})
    base = public_base_url(None, headers, "http", "localhost:8000")
    assert base == "https://abc.ngrok.app"
    assert media_stream_url(base) == "wss://abc.ngrok.app/twilio/media"


def test_forwarded_headers_take_the_first_of_a_list_any_case() -> None:
    headers = {"X-Forwarded-Proto": "https, http", "X-Forwarded-Host": "edge.example:8443, internal:80"}
    assert public_base_url(None, headers, "http", "internal:80") == "https://edge.example:8443"


def test_without_forwarding_the_host_header_then_the_request() -> None:
    assert public_base_url(None, {"host": "bridge.local:8000"}, "http", "x") == "http://bridge.local:8000"
    assert public_base_url(None, {}, "https", "bridge.local") == "https://bridge.local"
    assert public_base_url(None, {}, "wss", "bridge.local") == "https://bridge.local"


def test_junk_forwarded_values_are_ignored() -> None:
    headers = {"x-forwarded-proto": "gopher", "x-forwarded-host": 'evil"/><Hangup/>', "host": "ok.example"}
    assert public_base_url(None, headers, "http", "ok.example") == "http://ok.example"


@pytest.mark.parametrize(("base", "ws"), [
    ("https://a.example", "wss://a.example/twilio/media"),
    ("http://127.0.0.1:8000/", "ws://127.0.0.1:8000/twilio/media"),
    ("wss://a.example", "wss://a.example/twilio/media"),
])
def test_media_stream_url(base: str, ws: str) -> None:
    assert media_stream_url(base) == ws
