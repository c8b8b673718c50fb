"""Twilio Media Streams, as data: JSON text frames to events, phone actions to JSON text.

A pure codec (shared/protocols.md §2.2, §2.3): no I/O, no clock (the shell passes ``at``).
Like websockets' parser it never raises on what the peer sends: anything unusable becomes
``TelephonyMalformed`` with a short reason (never a payload dump), and the core decides.

``decode`` runs 50 times a second per call, so the media path does only what it must: one
``orjson.loads`` (four times faster than the standard library's here), a few dict lookups, a
strict base64 decode and audioop's mu-law table. Outbound frames are built from a prefix cached
at ``start``, because only the payload changes.
"""

from __future__ import annotations

import binascii
import json
from typing import Any, Final, assert_never

import orjson

from bridge.core.actions import ClearPlayback, SendMark, SendMedia
from bridge.core.audio import PHONE, pcm_to_ulaw, ulaw_to_pcm
from bridge.core.events import (
    CallEnded,
    CallerAudio,
    CallStarted,
    DtmfReceived,
    Event,
    MarkPlayed,
    TelephonyMalformed,
)

__all__ = ["MAX_MEDIA_BYTES", "TwilioCodec"]

MAX_MEDIA_BYTES: Final = 8000 * 2
"""Largest inbound media payload we decode: 2 s of mu-law. Twilio sends 20 ms (160 bytes)."""
_MAX_NAME_CHARS: Final = 256  # mark names and parameters are ours; longer is not Twilio talking
_EVENT_NAME_SHOWN: Final = 32


def _bad(at: float, reason: str) -> list[Event]:
    return [TelephonyMalformed(at, reason)]


class TwilioCodec:
    """One media stream's codec. It remembers the ``streamSid`` from ``start``, which every
    outbound message must carry, and refuses media before it."""

    audio: Final = PHONE
    """8 kHz µ-law on the wire: the call runs at 8 kHz, and media is µ-law-encoded here."""

    def __init__(self, *, max_media_bytes: int = MAX_MEDIA_BYTES, max_message_bytes: int = 64 * 1024) -> None:
        self.stream_id: str | None = None
        self._max_message = max_message_bytes
        self._max_chars = (max_media_bytes + 2) // 3 * 4  # the payload's base64 length
        self._media_prefix = ""
        self._sid_field = ""

    # ------------------------------------------------------------------ inbound

    def decode(self, message: str | bytes, at: float) -> list[Event]:
        """Events for one WebSocket message; never raises for anything the peer sends."""
        if not isinstance(message, str):
            return _bad(at, "binary frame (Twilio sends JSON text)")
        if len(message) > self._max_message:
            return _bad(at, f"message too large ({len(message)} characters), not parsed")
        try:
            data = orjson.loads(message)
        except (ValueError, RecursionError):
            return _bad(at, "invalid JSON")
        if not isinstance(data, dict):
            return _bad(at, "JSON that is not an object")
        event = data.get("event")
        if event == "media":
            return self._media(data, at)
        if event == "mark":
            return self._mark(data, at)
        if event == "start":
            return self._start(data, at)
        if event == "dtmf":
            return self._dtmf(data, at)
        if event == "stop":
            return [CallEnded(at, "stop")]
        if event == "connected":
            return []
        if isinstance(event, str):
            shown = event if len(event) <= _EVENT_NAME_SHOWN else event[:_EVENT_NAME_SHOWN] + "..."
            return _bad(at, f"unknown event {shown!r}")
        return _bad(at, "no event name")

    def _media(self, data: dict[str, Any], at: float) -> list[Event]:
        if self.stream_id is None:
            return _bad(at, "media before start")
        media = data.get("media")
        if not isinstance(media, dict):
            return _bad(at, "media without a media object")
        sid = data.get("streamSid")
        if sid is not None and sid != self.stream_id:
            return _bad(at, "media for another stream")
        track = media.get("track", "inbound")
        if track != "inbound":
            return [] if isinstance(track, str) else _bad(at, "media track is not a string")
        payload = media.get("payload")
        if not isinstance(payload, str):
            return _bad(at, "media without a payload")
        if len(payload) > self._max_chars:
            return _bad(at, f"media payload too large ({len(payload)} base64 chars)")
        try:
            ulaw = binascii.a2b_base64(payload, strict_mode=True)
        except ValueError:  # binascii.Error, or non-ASCII text
            return _bad(at, "media payload is not valid base64")
        return [CallerAudio(at, ulaw_to_pcm(ulaw))] if ulaw else _bad(at, "empty media payload")

    def _start(self, data: dict[str, Any], at: float) -> list[Event]:
        if self.stream_id is not None:
            return _bad(at, "second start")
        start = data.get("start")
        if not isinstance(start, dict):
            return _bad(at, "start without a start object")
        sid = start.get("streamSid", data.get("streamSid"))
        if not isinstance(sid, str) or not sid or len(sid) > _MAX_NAME_CHARS:
            return _bad(at, "start without a streamSid")
        call_sid = start.get("callSid", "")
        custom = start.get("customParameters") or {}
        if not isinstance(custom, dict):
            return _bad(at, "start.customParameters is not an object")
        # Keep only string pairs: the parameters come from our TwiML, so anything else is noise.
        parameters = {k: v for k, v in custom.items() if isinstance(v, str)}
        self.stream_id = sid
        self._sid_field = json.dumps(sid)
        self._media_prefix = '{"event":"media","streamSid":' + self._sid_field + ',"media":{"payload":"'
        return [CallStarted(at, sid, call_sid if isinstance(call_sid, str) else "", parameters)]

    def _mark(self, data: dict[str, Any], at: float) -> list[Event]:
        mark = data.get("mark")
        name = mark.get("name") if isinstance(mark, dict) else None
        if not isinstance(name, str) or len(name) > _MAX_NAME_CHARS:
            return _bad(at, "mark without a name")
        return [MarkPlayed(at, name)]

    def _dtmf(self, data: dict[str, Any], at: float) -> list[Event]:
        dtmf = data.get("dtmf")
        digit = dtmf.get("digit") if isinstance(dtmf, dict) else None
        if not isinstance(digit, str) or len(digit) != 1:
            return _bad(at, "dtmf without a single digit")
        return [DtmfReceived(at, digit)]

    # ----------------------------------------------------------------- outbound

    def encode(self, action: SendMedia | SendMark | ClearPlayback) -> str:
        """The compact JSON text frame for one phone action (protocols.md §2.3).

        Raises RuntimeError before ``start``: with no streamSid, the core has a bug."""
        if self.stream_id is None:
            raise RuntimeError(f"{type(action).__name__} before the stream started")
        match action:
            case SendMedia():
                payload = binascii.b2a_base64(pcm_to_ulaw(action.pcm), newline=False).decode("ascii")
                return self._media_prefix + payload + '"}}'
            case SendMark():
                name = json.dumps(action.name)
                return '{"event":"mark","streamSid":' + self._sid_field + ',"mark":{"name":' + name + "}}"
            case ClearPlayback():
                return '{"event":"clear","streamSid":' + self._sid_field + "}"
            case _:
                assert_never(action)
