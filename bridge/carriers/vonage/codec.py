"""Vonage Voice API WebSocket, as data: binary linear PCM and JSON text to events, and back.

Protocol: Vonage, "WebSockets in the Vonage Voice API"
(https://developer.vonage.com/en/voice/voice-api/concepts/websockets), the NCCO reference
(https://developer.vonage.com/en/voice/voice-api/ncco-reference) and the "Play audio into a
WebSocket" tutorial. The first message is text, ``{"event": "websocket:connected",
"content-type": "audio/l16;rate=16000", ...}`` with the NCCO endpoint's ``headers`` at its top
level; every message after it is either a binary frame of 16-bit signed little-endian mono PCM,
20 ms long (640 bytes at 16 kHz, 320 at 8 kHz), or a text event: ``websocket:dtmf`` (``digit``),
``websocket:notify`` (our ``notify`` payload, once the audio queued before it has played) or
``websocket:cleared``. We send binary frames of exactly 20 ms (Vonage buffers up to 3072 of them
and plays them in order), ``{"action": "notify", "payload": {...}}`` and ``{"action": "clear"}``.

The call runs at the line's rate (``audio/l16;rate=16000`` by default, or 8000; this codec's
parameter), end to end: `audio` states it, `bridge.carriers.base.call_settings_for` gives it to
the call, and the core's outbound frames (`SendMedia`) already are 20 ms of PCM16 at that rate.
So nothing is converted here: a binary frame in is the caller's audio as it came, and every
`SendMedia` goes out as one binary frame, unchanged. A wideband call never passes through 8 kHz.
"""

from __future__ import annotations

import json
from typing import Any, Final, assert_never

from bridge.carriers.base import (
    MAX_NAME,
    Outbound,
    PhoneMessage,
    bad,
    dtmf_pressed,
    load_json,
    mark_played,
    nested,
    short,
)
from bridge.core.actions import ClearPlayback, SendMark, SendMedia
from bridge.core.audio import AudioFormat
from bridge.core.events import CallerAudio, CallStarted, Event

__all__ = ["CALL_HEADER", "RATES", "VonageCodec", "content_type"]

RATES: Final = (8000, 16000)
CALL_HEADER: Final = "call_uuid"
"""The NCCO ``headers`` key that carries the call's uuid into ``websocket:connected``."""
_CLEAR: Final = '{"action":"clear"}'


def content_type(rate: int) -> str:
    """The NCCO endpoint's ``content-type`` for a line at ``rate`` Hz."""
    return f"audio/l16;rate={rate}"


class VonageCodec:
    """One Vonage WebSocket leg at ``rate`` Hz; one socket per leg, so no stream id on the wire."""

    def __init__(self, *, rate: int = 16000, max_message_bytes: int = 64 * 1024) -> None:
        if rate not in RATES:
            raise ValueError(f"Vonage streams L16 at {RATES} Hz, not {rate}")
        self.rate: Final = rate
        self.audio: Final = AudioFormat(rate, 20)
        """The call's audio is the line's: 16-bit PCM at ``rate`` in 20 ms frames, both ways."""
        self.frame_bytes: Final = self.audio.pcm_frame_bytes
        self.stream_id: str | None = None
        self._max_message = max_message_bytes

    # ------------------------------------------------------------------ inbound

    def decode(self, message: str | bytes, at: float) -> list[Event]:
        if isinstance(message, bytes | bytearray):
            return self._audio(bytes(message), at)
        data = load_json(message, at, self._max_message)
        if isinstance(data, list):
            return data
        event = data.get("event")
        if event == "websocket:connected":
            return self._connected(data, at)
        if event == "websocket:notify":
            return mark_played(nested(data, "payload", "name"), at, "notify without our name")
        if event == "websocket:dtmf":
            dtmf = data.get("dtmf")
            return dtmf_pressed(dtmf.get("digit") if isinstance(dtmf, dict) else data.get("digit"), at)
        if event == "websocket:cleared":
            return []
        return bad(at, f"unknown event {short(event)!r}" if isinstance(event, str) else "no event name")

    def _connected(self, data: dict[str, Any], at: float) -> list[Event]:
        if self.stream_id is not None:
            return bad(at, "second websocket:connected")
        kind = data.get("content-type", content_type(self.rate))
        if kind != content_type(self.rate):
            return bad(at, f"connected with {short(kind)!r}, but the NCCO asked for {content_type(self.rate)}")
        headers = {k: v for k, v in data.items() if isinstance(v, str) and k not in ("event", "content-type")}
        call = headers.get(CALL_HEADER, "")[:MAX_NAME]
        self.stream_id = call or "vonage"
        return [CallStarted(at, self.stream_id, call, headers)]

    def _audio(self, pcm: bytes, at: float) -> list[Event]:
        if self.stream_id is None:
            return bad(at, "audio before websocket:connected")
        if not pcm:
            return bad(at, "empty binary frame")
        if len(pcm) > self._max_message:
            return bad(at, f"binary frame too large ({len(pcm)} bytes)")
        if len(pcm) % 2:
            return bad(at, f"binary frame of {len(pcm)} bytes (16-bit samples come in pairs of bytes)")
        return [CallerAudio(at, pcm)]

    # ----------------------------------------------------------------- outbound

    def encode(self, action: PhoneMessage) -> Outbound:
        """Binary 20 ms frames for media (the core's PCM as it is, one frame per message, as Vonage
        asks), text for notify and clear."""
        if self.stream_id is None:
            raise RuntimeError(f"{type(action).__name__} before the stream started")
        match action:
            case SendMedia():
                pcm, size = action.pcm, self.frame_bytes
                return pcm if len(pcm) <= size else [pcm[i : i + size] for i in range(0, len(pcm), size)]
            case SendMark():
                return '{"action":"notify","payload":{"name":' + json.dumps(action.name) + "}}"
            case ClearPlayback():
                return _CLEAR
            case _:
                assert_never(action)
