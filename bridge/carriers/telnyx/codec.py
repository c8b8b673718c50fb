"""Telnyx Media Streaming, as data: JSON text frames to events, phone actions to JSON text.

Protocol: Telnyx, "Stream call media over WebSocket" (AsyncAPI,
https://developers.telnyx.com/api-reference/websockets/stream-call-media-over-websocket) and the
TeXML ``<Stream>`` verb (https://developers.telnyx.com/docs/voice/programmable-voice/texml-verbs/stream).
Telnyx sends ``connected``, then ``start`` (top-level ``stream_id``; ``start.call_control_id``,
``start.media_format`` ``{"encoding": "PCMU", "sample_rate": 8000, "channels": 1}``,
``start.custom_parameters``), ``media`` (``media.track``/``chunk``/``timestamp``/``payload``, the
payload base64 RTP payload without headers), ``dtmf`` (``dtmf.digit``), ``mark`` (``mark.name``,
echoed when the audio before it has played, or at once after a ``clear``), ``error`` and ``stop``.
With ``bidirectionalMode="rtp"`` we send ``{"event": "media", "media": {"payload": ...}}`` (20 ms
to 30 s of audio in the stream's codec, PCMU 8 kHz here), ``{"event": "mark", "mark": {"name": ...}}``
and ``{"event": "clear"}``: no stream id on outbound frames.

The docs warn that frame order is not guaranteed; a late frame is still decoded where it arrives
(reordering would add delay to every frame for a rare case, and the VAD tolerates a swapped 20 ms).
"""

from __future__ import annotations

import binascii
import json
from typing import Any, Final, assert_never

from bridge.carriers.base import JsonStream, PhoneMessage, bad, inbound_ulaw, short, string_parameters, usable_name
from bridge.core.actions import ClearPlayback, SendMark, SendMedia
from bridge.core.audio import PHONE, pcm_to_ulaw
from bridge.core.events import Event

__all__ = ["TelnyxCodec"]

_CLEAR: Final = '{"event":"clear"}'


class TelnyxCodec(JsonStream):
    """One Telnyx media stream. It refuses media before ``start`` and any encoding but PCMU."""

    audio: Final = PHONE
    """PCMU at 8 kHz both ways: the call runs at 8 kHz."""

    def __init__(self, *, max_media_bytes: int = 16000, max_message_bytes: int = 64 * 1024) -> None:
        super().__init__(max_media_bytes=max_media_bytes, max_message_bytes=max_message_bytes)

    def _other(self, event: object, data: dict[str, Any], at: float) -> list[Event]:
        if event == "error":
            payload = data.get("payload")
            code = payload.get("code") if isinstance(payload, dict) else None
            return bad(at, f"Telnyx reported error {short(code)}")
        return super()._other(event, data, at)

    def _start(self, data: dict[str, Any], at: float) -> list[Event]:
        start = data.get("start")
        sid = usable_name(data.get("stream_id"))
        if not isinstance(start, dict) or sid is None:
            return bad(at, "start without a stream_id")
        media_format = start.get("media_format")
        encoding = media_format.get("encoding") if isinstance(media_format, dict) else "PCMU"
        if encoding != "PCMU":
            return bad(at, f"start with encoding {short(encoding)!r} (the TeXML asks for PCMU)")
        return self._started(at, sid, start.get("call_control_id", ""), string_parameters(start, "custom_parameters"))

    def _media(self, data: dict[str, Any], at: float) -> list[Event]:
        return inbound_ulaw(data, at, self._max_chars)

    def encode(self, action: PhoneMessage) -> str:
        """The JSON text frame for one phone action; RuntimeError before ``start`` (our bug)."""
        self._check_started(action)
        match action:
            case SendMedia():
                payload = binascii.b2a_base64(pcm_to_ulaw(action.pcm), newline=False).decode("ascii")
                return '{"event":"media","media":{"payload":"' + payload + '"}}'
            case SendMark():
                return '{"event":"mark","mark":{"name":' + json.dumps(action.name) + "}}"
            case ClearPlayback():
                return _CLEAR
            case _:
                assert_never(action)
