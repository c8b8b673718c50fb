"""Plivo Audio Streams (bidirectional), as data: JSON text frames to events, actions to JSON text.

Protocol: Plivo, "Stream XML element" (https://www.plivo.com/docs/voice/xml/the-stream-element),
"Audio streaming" (https://plivo.com/docs/voice/audio-streaming/audio-streaming) and "checkpoint
event" (https://plivo.com/docs/voice/xml/the-stream-element/checkpoint-event). Plivo sends ``start``
(``start.streamId``, ``start.callId``, ``start.mediaFormat`` ``{"encoding": "audio/x-mulaw",
"sampleRate": 8000}`` for our ``contentType``; ``sequenceNumber`` is a number), ``media``
(``media.payload``, base64), ``dtmf`` (``dtmf.digit``), ``playedStream`` (a checkpoint's audio has
played), ``clearedAudio`` (the buffer is empty) and ``stop``. We send ``playAudio`` (``media``:
``contentType``, ``sampleRate``, ``payload``), ``checkpoint`` (``streamId``, ``name``) and
``clearAudio`` (``streamId``).

Unlike a Twilio mark, a checkpoint pending at ``clearAudio`` is never acknowledged; the core
already treats every mark sent before a clear as settled, so nothing waits for it.
"""

from __future__ import annotations

import binascii
import json
from typing import Any, Final, assert_never

from bridge.carriers.base import (
    MAX_NAME,
    PhoneMessage,
    bad,
    dtmf_pressed,
    inbound_ulaw,
    load_json,
    mark_played,
    nested,
    short,
)
from bridge.core.actions import ClearPlayback, SendMark, SendMedia
from bridge.core.audio import PHONE, pcm_to_ulaw
from bridge.core.events import CallEnded, CallStarted, Event

__all__ = ["CONTENT_TYPE", "PlivoCodec"]

CONTENT_TYPE: Final = "audio/x-mulaw;rate=8000"
"""What our ``<Stream contentType>`` asks for, both ways: the core's own format, no conversion."""


class PlivoCodec:
    """One Plivo stream; it remembers ``streamId`` from ``start`` for every outbound event."""

    audio: Final = PHONE
    """``audio/x-mulaw;rate=8000`` both ways: the call runs at 8 kHz."""

    def __init__(self, *, max_media_bytes: int = 16000, max_message_bytes: int = 64 * 1024) -> None:
        self.stream_id: str | None = None
        self._max_message = max_message_bytes
        self._max_chars = (max_media_bytes + 2) // 3 * 4
        self._sid = ""

    def decode(self, message: str | bytes, at: float) -> list[Event]:
        data = load_json(message, at, self._max_message)
        if isinstance(data, list):
            return data
        event = data.get("event")
        if event == "media":
            return self._media(data, at)
        if event == "playedStream":
            return mark_played(data.get("name"), at, "playedStream without a name")
        if event == "start":
            return self._start(data, at)
        if event == "dtmf":
            return dtmf_pressed(nested(data, "dtmf", "digit"), at)
        if event == "stop":
            return [CallEnded(at, "stop")]
        if event == "clearedAudio":
            return []
        return bad(at, f"unknown event {short(event)!r}" if isinstance(event, str) else "no event name")

    def _start(self, data: dict[str, Any], at: float) -> list[Event]:
        if self.stream_id is not None:
            return bad(at, "second start")
        start = data.get("start")
        sid = start.get("streamId", data.get("streamId")) if isinstance(start, dict) else None
        if not isinstance(start, dict) or not isinstance(sid, str) or not sid or len(sid) > MAX_NAME:
            return bad(at, "start without a streamId")
        media_format = start.get("mediaFormat")
        encoding = media_format.get("encoding") if isinstance(media_format, dict) else "audio/x-mulaw"
        if encoding != "audio/x-mulaw":
            return bad(at, f"start with encoding {short(encoding)!r} (the XML asks for audio/x-mulaw)")
        call = start.get("callId", "")
        self.stream_id = sid
        self._sid = json.dumps(sid)
        return [CallStarted(at, sid, call if isinstance(call, str) else "", {})]

    def _media(self, data: dict[str, Any], at: float) -> list[Event]:
        if self.stream_id is None:
            return bad(at, "media before start")
        return inbound_ulaw(data, at, self._max_chars)

    def encode(self, action: PhoneMessage) -> str:
        """The JSON text frame for one phone action; RuntimeError before ``start`` (our bug)."""
        if self.stream_id is None:
            raise RuntimeError(f"{type(action).__name__} before the stream started")
        match action:
            case SendMedia():
                payload = binascii.b2a_base64(pcm_to_ulaw(action.pcm), newline=False).decode("ascii")
                return ('{"event":"playAudio","streamId":' + self._sid + ',"media":{"contentType":"audio/x-mulaw",'
                        '"sampleRate":8000,"payload":"' + payload + '"}}')
            case SendMark():
                return '{"event":"checkpoint","streamId":' + self._sid + ',"name":' + json.dumps(action.name) + "}"
            case ClearPlayback():
                return '{"event":"clearAudio","streamId":' + self._sid + "}"
            case _:
                assert_never(action)
