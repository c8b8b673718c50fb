"""The Twilio Media Streams wire format as Twilio speaks it (shared/protocols.md §2.2, §2.3).

Builders produce the exact JSON Twilio sends; `parse` turns whatever the bridge sends into one typed
message, and never raises: a frame Twilio would reject (warning 31950) becomes `Malformed` with a
reason, so a buggy server is counted and reported instead of crashing the simulator.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = [
    "AgentClear",
    "AgentMark",
    "AgentMedia",
    "Malformed",
    "ServerMessage",
    "StreamIds",
    "connected",
    "dtmf",
    "mark_echo",
    "media",
    "parse",
    "start",
    "stop",
]


@dataclass(frozen=True, slots=True)
class StreamIds:
    """The SIDs that name one stream; random ones look like Twilio's (two letters + 32 hex)."""

    account_sid: str
    stream_sid: str
    call_sid: str

    @classmethod
    def new(cls, account_sid: str | None = None, stream_sid: str | None = None,
            call_sid: str | None = None) -> StreamIds:
        return cls(account_sid or _sid("AC"), stream_sid or _sid("MZ"), call_sid or _sid("CA"))


def _sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def _dump(message: Mapping[str, Any]) -> str:
    """Compact JSON, as Twilio sends it. orjson, because a load generator builds 50 of these a
    second per call and its CPU is taken from the machine the server is measured on."""
    return orjson.dumps(message).decode()


def connected() -> str:
    """First message on the socket; it has no sequenceNumber and no streamSid."""
    return _dump({"event": "connected", "protocol": "Call", "version": "1.0.0"})


def start(seq: int, ids: StreamIds, custom_parameters: Mapping[str, str]) -> str:
    body = {
        "accountSid": ids.account_sid,
        "streamSid": ids.stream_sid,
        "callSid": ids.call_sid,
        "tracks": ["inbound"],
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        "customParameters": dict(custom_parameters),
    }
    return _dump({"event": "start", "sequenceNumber": str(seq), "start": body, "streamSid": ids.stream_sid})


def media(seq: int, ids: StreamIds, chunk: int, timestamp_ms: int, ulaw: bytes) -> str:
    """One inbound frame; `chunk` counts from 1, `timestamp_ms` is media time since the stream began."""
    body = {
        "track": "inbound",
        "chunk": str(chunk),
        "timestamp": str(timestamp_ms),
        "payload": base64.b64encode(ulaw).decode("ascii"),
    }
    return _dump({"event": "media", "sequenceNumber": str(seq), "media": body, "streamSid": ids.stream_sid})


def mark_echo(seq: int, ids: StreamIds, name: str) -> str:
    return _dump({"event": "mark", "sequenceNumber": str(seq), "streamSid": ids.stream_sid,
                  "mark": {"name": name}})


def dtmf(seq: int, ids: StreamIds, digit: str) -> str:
    return _dump({"event": "dtmf", "streamSid": ids.stream_sid, "sequenceNumber": str(seq),
                  "dtmf": {"track": "inbound_track", "digit": digit}})


def stop(seq: int, ids: StreamIds) -> str:
    body = {"accountSid": ids.account_sid, "callSid": ids.call_sid}
    return _dump({"event": "stop", "sequenceNumber": str(seq), "stop": body, "streamSid": ids.stream_sid})


@dataclass(frozen=True, slots=True)
class AgentMedia:
    """Audio to queue; `warning` notes something Twilio accepts but the caller would notice."""

    ulaw: bytes
    warning: str | None = None


@dataclass(frozen=True, slots=True)
class AgentMark:
    name: str


@dataclass(frozen=True, slots=True)
class AgentClear:
    pass


@dataclass(frozen=True, slots=True)
class Malformed:
    reason: str


ServerMessage = AgentMedia | AgentMark | AgentClear | Malformed


def parse(raw: str | bytes, stream_sid: str) -> ServerMessage:
    """Decode one frame from the bridge. Never raises."""
    if isinstance(raw, bytes):
        return Malformed("binary frame (Twilio accepts text frames only)")
    try:
        message = orjson.loads(raw)
    except ValueError:  # orjson.JSONDecodeError is one
        return Malformed("not JSON")
    if not isinstance(message, dict):
        return Malformed("not a JSON object")
    event = message.get("event")
    if event not in ("media", "mark", "clear"):
        return Malformed(f"unknown event {event!r}")
    if message.get("streamSid") != stream_sid:
        return Malformed(f"{event}: streamSid {message.get('streamSid')!r} is not this stream's")
    if event == "media":
        return _parse_media(message.get("media"))
    if event == "mark":
        return _parse_mark(message.get("mark"))
    return AgentClear()


def _parse_media(body: object) -> AgentMedia | Malformed:
    if not isinstance(body, dict) or not isinstance(body.get("payload"), str):
        return Malformed("media: no media.payload string")
    try:
        ulaw = base64.b64decode(body["payload"], validate=True)
    except (binascii.Error, ValueError):
        return Malformed("media: payload is not base64")
    if ulaw.startswith(b"RIFF"):
        return AgentMedia(ulaw, "media payload starts with a WAV header (Twilio plays it as noise)")
    return AgentMedia(ulaw)


def _parse_mark(body: object) -> AgentMark | Malformed:
    if not isinstance(body, dict) or not isinstance(body.get("name"), str):
        return Malformed("mark: no mark.name string")
    return AgentMark(body["name"])
