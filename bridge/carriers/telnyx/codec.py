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

from bridge.carriers.base import PhoneMessage, b64decode, bad, load_json, short
from bridge.core.actions import ClearPlayback, SendMark, SendMedia
from bridge.core.audio import ulaw_to_pcm
from bridge.core.events import CallEnded, CallerAudio, CallStarted, DtmfReceived, Event, MarkPlayed

__all__ = ["TelnyxCodec"]

_MAX_NAME: Final = 256
_CLEAR: Final = '{"event":"clear"}'


class TelnyxCodec:
    """One Telnyx media stream. It refuses media before ``start`` and any encoding but PCMU."""

    def __init__(self, *, max_media_bytes: int = 16000, max_message_bytes: int = 64 * 1024) -> None:
        self.stream_id: str | None = None
        self._max_message = max_message_bytes
        self._max_chars = (max_media_bytes + 2) // 3 * 4

    def decode(self, message: str | bytes, at: float) -> list[Event]:
        data = load_json(message, at, self._max_message)
        if isinstance(data, list):
            return data
        event = data.get("event")
        if event == "media":
            return self._media(data, at)
        if event == "mark":
            mark = data.get("mark")
            name = mark.get("name") if isinstance(mark, dict) else None
            ok = isinstance(name, str) and len(name) <= _MAX_NAME
            return [MarkPlayed(at, name)] if ok and isinstance(name, str) else bad(at, "mark without a name")
        if event == "start":
            return self._start(data, at)
        if event == "dtmf":
            dtmf = data.get("dtmf")
            digit = dtmf.get("digit") if isinstance(dtmf, dict) else None
            ok = isinstance(digit, str) and len(digit) == 1
            return [DtmfReceived(at, digit)] if ok and isinstance(digit, str) else bad(at, "dtmf without a digit")
        if event == "stop":
            return [CallEnded(at, "stop")]
        if event == "connected":
            return []
        if event == "error":
            payload = data.get("payload")
            code = payload.get("code") if isinstance(payload, dict) else None
            return bad(at, f"Telnyx reported error {short(code)}")
        return bad(at, f"unknown event {short(event)!r}" if isinstance(event, str) else "no event name")

    def _start(self, data: dict[str, Any], at: float) -> list[Event]:
        if self.stream_id is not None:
            return bad(at, "second start")
        start = data.get("start")
        sid = data.get("stream_id")
        if not isinstance(start, dict) or not isinstance(sid, str) or not sid or len(sid) > _MAX_NAME:
            return bad(at, "start without a stream_id")
        media_format = start.get("media_format")
        encoding = media_format.get("encoding") if isinstance(media_format, dict) else "PCMU"
        if encoding != "PCMU":
            return bad(at, f"start with encoding {short(encoding)!r} (the TeXML asks for PCMU)")
        custom = start.get("custom_parameters")
        parameters = {k: v for k, v in custom.items() if isinstance(v, str)} if isinstance(custom, dict) else {}
        call = start.get("call_control_id", "")
        self.stream_id = sid
        return [CallStarted(at, sid, call if isinstance(call, str) else "", parameters)]

    def _media(self, data: dict[str, Any], at: float) -> list[Event]:
        if self.stream_id is None:
            return bad(at, "media before start")
        media = data.get("media")
        if not isinstance(media, dict):
            return bad(at, "media without a media object")
        track = media.get("track", "inbound")
        if track != "inbound":
            return [] if isinstance(track, str) else bad(at, "media track is not a string")
        ulaw = b64decode(media.get("payload"), self._max_chars)
        return [CallerAudio(at, ulaw_to_pcm(ulaw))] if isinstance(ulaw, bytes) else bad(at, ulaw)

    def encode(self, action: PhoneMessage) -> str:
        """The JSON text frame for one phone action; RuntimeError before ``start`` (our bug)."""
        if self.stream_id is None:
            raise RuntimeError(f"{type(action).__name__} before the stream started")
        match action:
            case SendMedia():
                payload = binascii.b2a_base64(action.ulaw, newline=False).decode("ascii")
                return '{"event":"media","media":{"payload":"' + payload + '"}}'
            case SendMark():
                return '{"event":"mark","mark":{"name":' + json.dumps(action.name) + "}}"
            case ClearPlayback():
                return _CLEAR
            case _:
                assert_never(action)
