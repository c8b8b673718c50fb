"""How each carrier's media stream speaks, for the phone simulator: one dialect per carrier.

`PhoneCall` keeps the call (the line clock, the playback model, the echoes) and asks its dialect
for the bytes of each message and for the meaning of each message the bridge sends. Every dialect
speaks as its carrier's docs show (the same sources the codecs in ``bridge/carriers`` cite), and
reports as a warning what the carrier would play badly: an Exotel chunk outside 3.2-100 kB or not
a multiple of 320 bytes, a Vonage frame that is not exactly 20 ms. Carriers also differ after a
clear: Twilio, Telnyx, SignalWire and Exotel echo every pending mark; Plivo and Vonage acknowledge
the clear itself and never the checkpoints it dropped.

The playback model works in 8 kHz mu-law whatever the line carries, so a wideband (Vonage) frame
is brought down to it here: two samples averaged into one, which keeps each frame's timing exact.
The Vonage dialect also keeps the line's own 16 kHz audio as it arrived (`VonageDialect.line`), so
what only a wideband path carries (energy above 4 kHz) can be checked at the phone.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any, ClassVar, Final
from urllib.error import HTTPError, URLError
from urllib.parse import urlencode, urlsplit
from urllib.request import Request, urlopen
from xml.etree import ElementTree

import numpy as np

from bridge.core.audio import pcm_to_ulaw, ulaw_to_pcm
from bridge.tools.simulator import wire
from bridge.tools.simulator.wire import AgentClear, AgentMark, AgentMedia, Malformed, ServerMessage, StreamIds

__all__ = [
    "DIALECTS",
    "WEBHOOKS",
    "Dialect",
    "ExotelDialect",
    "PlivoDialect",
    "SignalWireDialect",
    "TelnyxDialect",
    "TwilioDialect",
    "VonageDialect",
    "dialable",
    "dialect",
    "fetch_stream_url",
    "stream_url_from_answer",
]

Message = str | bytes | None
"""What a dialect hands the phone to send: a frame, or None for nothing this time."""


def _dump(message: Mapping[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _load(raw: str | bytes) -> dict[str, Any] | Malformed:
    if isinstance(raw, bytes):
        return Malformed("binary frame (this carrier accepts text frames only)")
    try:
        message = json.loads(raw)
    except ValueError:
        return Malformed("not JSON")
    return message if isinstance(message, dict) else Malformed("not a JSON object")


def _audio(payload: object, what: str) -> bytes | Malformed:
    if not isinstance(payload, str):
        return Malformed(f"{what}: no payload string")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        return Malformed(f"{what}: payload is not base64")


class Dialect:
    """Twilio Media Streams (the simulator's native tongue); the other carriers override it."""

    name: ClassVar[str] = "twilio"
    echo_cleared_marks: ClassVar[bool] = True  # pending marks are echoed when a clear drops their audio
    query_allowed: ClassVar[bool] = False  # Twilio drops a stream URL's query string

    def connected(self, ids: StreamIds) -> Message:
        return wire.connected()

    def start(self, seq: int, ids: StreamIds, parameters: Mapping[str, str]) -> Message:
        return wire.start(seq, ids, parameters)

    def media(self, seq: int, ids: StreamIds, chunk: int, timestamp_ms: int, ulaw: bytes) -> Message:
        return wire.media(seq, ids, chunk, timestamp_ms, ulaw)

    def mark_echo(self, seq: int, ids: StreamIds, name: str) -> Message:
        return wire.mark_echo(seq, ids, name)

    def dtmf(self, seq: int, ids: StreamIds, digit: str) -> Message:
        return wire.dtmf(seq, ids, digit)

    def stop(self, seq: int, ids: StreamIds) -> Message:
        return wire.stop(seq, ids)

    def cleared(self, seq: int, ids: StreamIds) -> Message:
        """The carrier's acknowledgement of a clear, if it sends one."""
        return None

    def parse(self, raw: str | bytes, ids: StreamIds) -> ServerMessage:
        return wire.parse(raw, ids.stream_sid)


TwilioDialect = Dialect


class SignalWireDialect(Dialect):
    """cXML streams: Twilio's messages (developer.signalwire.com, cXML ``<Stream>``)."""

    name = "signalwire"


class TelnyxDialect(Dialect):
    """Telnyx Media Streaming (developers.telnyx.com, "Stream call media over WebSocket")."""

    name = "telnyx"
    query_allowed = True

    def connected(self, ids: StreamIds) -> Message:
        return _dump({"event": "connected", "version": "1.0.0"})

    def start(self, seq: int, ids: StreamIds, parameters: Mapping[str, str]) -> Message:
        body = {"user_id": ids.account_sid, "call_control_id": ids.call_sid, "call_session_id": ids.call_sid,
                "from": "+15550100", "to": "+15550199", "tags": [], "client_state": "",
                "custom_parameters": dict(parameters),
                "media_format": {"encoding": "PCMU", "sample_rate": 8000, "channels": 1}}
        return _dump({"event": "start", "sequence_number": str(seq), "stream_id": ids.stream_sid, "start": body})

    def media(self, seq: int, ids: StreamIds, chunk: int, timestamp_ms: int, ulaw: bytes) -> Message:
        body = {"track": "inbound", "chunk": str(chunk), "timestamp": str(timestamp_ms), "payload": _b64(ulaw)}
        return _dump({"event": "media", "sequence_number": str(seq), "stream_id": ids.stream_sid, "media": body})

    def mark_echo(self, seq: int, ids: StreamIds, name: str) -> Message:
        return _dump({"event": "mark", "sequence_number": str(seq), "stream_id": ids.stream_sid,
                      "mark": {"name": name}})

    def dtmf(self, seq: int, ids: StreamIds, digit: str) -> Message:
        return _dump({"event": "dtmf", "sequence_number": str(seq), "stream_id": ids.stream_sid,
                      "dtmf": {"digit": digit}})

    def stop(self, seq: int, ids: StreamIds) -> Message:
        return _dump({"event": "stop", "sequence_number": str(seq), "stream_id": ids.stream_sid,
                      "stop": {"user_id": ids.account_sid, "call_control_id": ids.call_sid}})

    def parse(self, raw: str | bytes, ids: StreamIds) -> ServerMessage:
        message = _load(raw)
        if isinstance(message, Malformed):
            return message
        event = message.get("event")
        if event == "media":
            body = message.get("media")
            ulaw = _audio(body.get("payload") if isinstance(body, dict) else None, "media")
            return ulaw if isinstance(ulaw, Malformed) else AgentMedia(ulaw)
        if event == "mark":
            body = message.get("mark")
            name = body.get("name") if isinstance(body, dict) else None
            return AgentMark(name) if isinstance(name, str) else Malformed("mark: no mark.name string")
        if event == "clear":
            return AgentClear()
        return Malformed(f"unknown event {event!r}")


class PlivoDialect(Dialect):
    """Plivo Audio Streams, bidirectional, mu-law 8 kHz (plivo.com, "Stream XML element")."""

    name = "plivo"
    echo_cleared_marks = False
    query_allowed = True

    def connected(self, ids: StreamIds) -> Message:
        return None

    def start(self, seq: int, ids: StreamIds, parameters: Mapping[str, str]) -> Message:
        body = {"callId": ids.call_sid, "streamId": ids.stream_sid, "accountId": ids.account_sid,
                "tracks": ["inbound"], "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000}}
        return _dump({"event": "start", "sequenceNumber": seq, "start": body, "extra_headers": "{}"})

    def media(self, seq: int, ids: StreamIds, chunk: int, timestamp_ms: int, ulaw: bytes) -> Message:
        body = {"track": "inbound", "timestamp": str(timestamp_ms), "chunk": chunk, "payload": _b64(ulaw)}
        return _dump({"event": "media", "sequenceNumber": seq, "streamId": ids.stream_sid, "media": body})

    def mark_echo(self, seq: int, ids: StreamIds, name: str) -> Message:
        return _dump({"event": "playedStream", "sequenceNumber": seq, "streamId": ids.stream_sid, "name": name})

    def dtmf(self, seq: int, ids: StreamIds, digit: str) -> Message:
        return _dump({"event": "dtmf", "sequenceNumber": seq, "streamId": ids.stream_sid,
                      "dtmf": {"track": "inbound", "digit": digit, "timestamp": str(seq)}})

    def stop(self, seq: int, ids: StreamIds) -> Message:
        return _dump({"event": "stop", "sequenceNumber": seq, "streamId": ids.stream_sid})

    def cleared(self, seq: int, ids: StreamIds) -> Message:
        return _dump({"event": "clearedAudio", "sequenceNumber": seq, "streamId": ids.stream_sid})

    def parse(self, raw: str | bytes, ids: StreamIds) -> ServerMessage:
        message = _load(raw)
        if isinstance(message, Malformed):
            return message
        event = message.get("event")
        if event not in ("playAudio", "checkpoint", "clearAudio"):
            return Malformed(f"unknown event {event!r}")
        if message.get("streamId") != ids.stream_sid:
            return Malformed(f"{event}: streamId {message.get('streamId')!r} is not this stream's")
        if event == "checkpoint":
            name = message.get("name")
            return AgentMark(name) if isinstance(name, str) else Malformed("checkpoint: no name string")
        if event == "clearAudio":
            return AgentClear()
        body = message.get("media")
        if not isinstance(body, dict) or body.get("contentType") != "audio/x-mulaw" or body.get("sampleRate") != 8000:
            return Malformed("playAudio: media is not audio/x-mulaw at 8000 Hz")
        ulaw = _audio(body.get("payload"), "playAudio")
        return ulaw if isinstance(ulaw, Malformed) else AgentMedia(ulaw)


class ExotelDialect(Dialect):
    """Exotel Voicebot: 8 kHz 16-bit PCM, about 100 ms a message (developer.exotel.com, AgentStream)."""

    name = "exotel"
    query_allowed = True
    CHUNK_FRAMES: Final = 5  # Exotel streams "every ~100 ms"

    def __init__(self) -> None:
        self._pending: list[bytes] = []
        self._chunk = 0

    def connected(self, ids: StreamIds) -> Message:
        return _dump({"event": "connected"})

    def start(self, seq: int, ids: StreamIds, parameters: Mapping[str, str]) -> Message:
        body = {"stream_sid": ids.stream_sid, "call_sid": ids.call_sid, "account_sid": ids.account_sid,
                "from": "+919876543210", "to": "+918047491899", "custom_parameters": dict(parameters),
                "media_format": {"encoding": "audio/x-raw", "sample_rate": "8000", "bit_rate": "16"}}
        return _dump({"event": "start", "sequence_number": str(seq), "stream_sid": ids.stream_sid, "start": body})

    def media(self, seq: int, ids: StreamIds, chunk: int, timestamp_ms: int, ulaw: bytes) -> Message:
        self._pending.append(ulaw_to_pcm(ulaw))
        if len(self._pending) < self.CHUNK_FRAMES:
            return None
        pcm, self._pending = b"".join(self._pending), []
        self._chunk += 1
        body = {"chunk": str(self._chunk), "timestamp": str(timestamp_ms), "payload": _b64(pcm)}
        return _dump({"event": "media", "sequence_number": str(seq), "stream_sid": ids.stream_sid, "media": body})

    def mark_echo(self, seq: int, ids: StreamIds, name: str) -> Message:
        return _dump({"event": "mark", "sequence_number": str(seq), "stream_sid": ids.stream_sid,
                      "mark": {"name": name}})

    def dtmf(self, seq: int, ids: StreamIds, digit: str) -> Message:
        return _dump({"event": "dtmf", "sequence_number": str(seq), "stream_sid": ids.stream_sid,
                      "dtmf": {"digit": digit, "duration": "100"}})

    def stop(self, seq: int, ids: StreamIds) -> Message:
        return _dump({"event": "stop", "sequence_number": str(seq), "stream_sid": ids.stream_sid,
                      "stop": {"call_sid": ids.call_sid, "account_sid": ids.account_sid, "reason": "callended"}})

    def parse(self, raw: str | bytes, ids: StreamIds) -> ServerMessage:
        message = _load(raw)
        if isinstance(message, Malformed):
            return message
        event = message.get("event")
        if event not in ("media", "mark", "clear"):
            return Malformed(f"unknown event {event!r}")
        if message.get("stream_sid") != ids.stream_sid:
            return Malformed(f"{event}: stream_sid {message.get('stream_sid')!r} is not this stream's")
        if event == "clear":
            return AgentClear()
        if event == "mark":
            body = message.get("mark")
            name = body.get("name") if isinstance(body, dict) else None
            return AgentMark(name) if isinstance(name, str) else Malformed("mark: no mark.name string")
        body = message.get("media")
        pcm = _audio(body.get("payload") if isinstance(body, dict) else None, "media")
        if isinstance(pcm, Malformed):
            return pcm
        warning = None
        if not 3200 <= len(pcm) <= 100_000 or len(pcm) % 320:
            warning = f"media chunk of {len(pcm)} bytes (Exotel wants 3.2-100 kB in multiples of 320)"
        return AgentMedia(pcm_to_ulaw(pcm[: len(pcm) & ~1]), warning)


class VonageDialect(Dialect):
    """Vonage Voice WebSocket at 16 kHz: JSON first, then binary 20 ms frames (developer.vonage.com).

    ``line`` holds every binary frame the bridge sent, as it came (16 kHz PCM16), and ``clears`` the
    byte offset into it at each clear: what came before a clear is the interrupted audio."""

    name = "vonage"
    echo_cleared_marks = False
    query_allowed = True
    RATE: Final = 16000
    FRAME: Final = 640

    def __init__(self) -> None:
        self.line = bytearray()
        self.clears: list[int] = []

    def connected(self, ids: StreamIds) -> Message:
        return _dump({"event": "websocket:connected", "content-type": f"audio/l16;rate={self.RATE}",
                      "call_uuid": ids.call_sid})

    def start(self, seq: int, ids: StreamIds, parameters: Mapping[str, str]) -> Message:
        return None

    def media(self, seq: int, ids: StreamIds, chunk: int, timestamp_ms: int, ulaw: bytes) -> Message:
        x = np.frombuffer(ulaw_to_pcm(ulaw), dtype="<i2").astype(np.int32)
        wide = np.empty(2 * len(x), dtype="<i2")
        wide[0::2] = x
        wide[1::2] = (x + np.append(x[1:], x[-1:])) // 2
        return wide.tobytes()

    def mark_echo(self, seq: int, ids: StreamIds, name: str) -> Message:
        return _dump({"event": "websocket:notify", "payload": json.loads(name)})

    def dtmf(self, seq: int, ids: StreamIds, digit: str) -> Message:
        return _dump({"event": "websocket:dtmf", "digit": digit, "duration": 250})

    def stop(self, seq: int, ids: StreamIds) -> Message:
        return None  # Vonage ends the leg by closing the socket

    def cleared(self, seq: int, ids: StreamIds) -> Message:
        return _dump({"event": "websocket:cleared"})

    def parse(self, raw: str | bytes, ids: StreamIds) -> ServerMessage:
        if isinstance(raw, bytes):
            warning = None if len(raw) == self.FRAME else f"binary frame of {len(raw)} bytes (Vonage wants 640)"
            self.line += raw
            wide = np.frombuffer(raw[: len(raw) & ~3], dtype="<i2").astype(np.int32)
            narrow = ((wide[0::2] + wide[1::2]) // 2).astype("<i2")
            return AgentMedia(pcm_to_ulaw(narrow.tobytes()), warning)
        message = _load(raw)
        if isinstance(message, Malformed):
            return message
        action = message.get("action")
        if action == "clear":
            self.clears.append(len(self.line))
            return AgentClear()
        if action == "notify" and isinstance(message.get("payload"), dict):
            return AgentMark(_dump(message["payload"]))
        return Malformed(f"unknown action {action!r}")


DIALECTS: Final[dict[str, type[Dialect]]] = {
    d.name: d for d in (Dialect, SignalWireDialect, TelnyxDialect, PlivoDialect, VonageDialect, ExotelDialect)}


WEBHOOKS: Final = {"twilio": ("POST", "/twilio/voice"), "signalwire": ("POST", "/signalwire/voice"),
                   "telnyx": ("POST", "/telnyx/voice"), "plivo": ("POST", "/plivo/voice"),
                   "vonage": ("GET", "/vonage/answer"), "exotel": ("GET", "/exotel/voice")}
"""Where each carrier asks a bridge how to connect a call, and with which method."""


def stream_url_from_answer(carrier: str, body: str) -> str:
    """The WebSocket URL an answer document names, read as the carrier reads it; ValueError if none.

    TwiML, cXML and TeXML: ``<Stream url>`` under ``<Connect>``; Plivo XML: the ``<Stream>`` text;
    Vonage: the NCCO ``connect`` action's ``websocket`` endpoint ``uri``; Exotel: the JSON ``url``."""
    try:
        if carrier in ("twilio", "signalwire", "telnyx", "plivo"):
            stream = ElementTree.fromstring(body).find(".//Stream")
            url = None if stream is None else (stream.text or "").strip() if carrier == "plivo" else stream.get("url")
        elif carrier == "vonage":
            url = next(e["uri"] for a in json.loads(body) if a.get("action") == "connect"
                       for e in a.get("endpoint", []) if e.get("type") == "websocket")
        else:
            url = json.loads(body).get("url")
    except (ElementTree.ParseError, ValueError, StopIteration, AttributeError, TypeError, KeyError) as exc:
        raise ValueError(f"no stream URL in the {carrier} answer ({type(exc).__name__})") from None
    if not isinstance(url, str) or not url.startswith(("ws://", "wss://")):
        raise ValueError(f"no ws(s):// stream URL in the {carrier} answer")
    return url


def dialable(url: str, webhook_url: str) -> str:
    """The stream URL as a local phone dials it: a bridge reached over plain http (development, no
    TLS) is dialled at ws:// on the same host, as the TLS-terminating proxy of a real one would."""
    hook, media = urlsplit(webhook_url), urlsplit(url)
    loopback = media.hostname in ("127.0.0.1", "localhost", "::1")
    if hook.scheme == "http" and media.scheme == "wss" and (media.netloc == hook.netloc or loopback):
        return "ws://" + url.removeprefix("wss://")
    return url


def fetch_stream_url(carrier: str, webhook_url: str, timeout: float = 10.0, call_id: str = "sim-call") -> str:
    """Ask the bridge's webhook for ``carrier`` as the carrier would, and read the stream URL; blocking.

    ``call_id`` names the call as the stream's ``start`` will. Raises ValueError with one line for
    the person at the terminal."""
    method, _ = WEBHOOKS[carrier]
    form = {"CallSid": call_id, "CallUUID": call_id, "From": "+15550100", "To": "+15550199"}
    query = "?" + urlencode({"uuid": call_id, "CallSid": call_id}) if method == "GET" else ""
    body = None if method == "GET" else urlencode(form).encode()
    request = Request(webhook_url + query, data=body, method=method)
    try:
        with urlopen(request, timeout=timeout) as response:
            answer = response.read(1 << 16).decode("utf-8", "replace")
    except HTTPError as exc:
        raise ValueError(f"the webhook {webhook_url} answered HTTP {exc.code} {exc.reason}") from None
    except (URLError, OSError) as exc:
        raise ValueError(f"cannot reach {webhook_url}: {getattr(exc, 'reason', exc)}") from None
    return dialable(stream_url_from_answer(carrier, answer), webhook_url)


def dialect(name: str) -> Dialect:
    """A fresh dialect for one call (Exotel's holds the caller's partial 100 ms)."""
    return DIALECTS[name]()
