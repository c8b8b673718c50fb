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

from bridge.carriers.base import JsonStream, PhoneMessage, bad, inbound_ulaw, short, usable_name
from bridge.core.actions import ClearPlayback, SendMark, SendMedia
from bridge.core.audio import PHONE, pcm_to_ulaw
from bridge.core.events import Event

__all__ = ["CONTENT_TYPE", "PlivoCodec"]

CONTENT_TYPE: Final = "audio/x-mulaw;rate=8000"
"""What our ``<Stream contentType>`` asks for, both ways: the core's own format, no conversion."""


class PlivoCodec(JsonStream):
    """One Plivo stream; it remembers ``streamId`` from ``start`` for every outbound event."""

    audio: Final = PHONE
    """``audio/x-mulaw;rate=8000`` both ways: the call runs at 8 kHz."""
    MARK_EVENT = "playedStream"
    MARK_NAME = ("name",)
    IGNORED = frozenset({"clearedAudio"})

    def __init__(self, *, max_media_bytes: int = 16000, max_message_bytes: int = 64 * 1024) -> None:
        super().__init__(max_media_bytes=max_media_bytes, max_message_bytes=max_message_bytes)

    def _start(self, data: dict[str, Any], at: float) -> list[Event]:
        start = data.get("start")
        sid = usable_name(start.get("streamId", data.get("streamId"))) if isinstance(start, dict) else None
        if not isinstance(start, dict) or sid is None:
            return bad(at, "start without a streamId")
        media_format = start.get("mediaFormat")
        encoding = media_format.get("encoding") if isinstance(media_format, dict) else "audio/x-mulaw"
        if encoding != "audio/x-mulaw":
            return bad(at, f"start with encoding {short(encoding)!r} (the XML asks for audio/x-mulaw)")
        return self._started(at, sid, start.get("callId", ""))

    def _media(self, data: dict[str, Any], at: float) -> list[Event]:
        return inbound_ulaw(data, at, self._max_chars)

    def encode(self, action: PhoneMessage) -> str:
        """The JSON text frame for one phone action; RuntimeError before ``start`` (our bug)."""
        self._check_started(action)
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
