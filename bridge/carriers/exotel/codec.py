"""Exotel Voicebot (AgentStream, bidirectional), as data: JSON text frames to events, actions to JSON.

Protocol: Exotel, "WebSocket protocol" (https://developer.exotel.com/docs/agentstream/websocket-protocol)
and "Working with the Stream and Voicebot Applet"
(https://developer.exotel.com/docs/agentstream/stream-voicebot-applet,
https://support.exotel.com/support/solutions/articles/3000108630). Twilio's shape in snake_case:
``connected``, ``start`` (``stream_sid``; ``start.call_sid``, ``start.custom_parameters``,
``start.media_format`` ``{"encoding": "audio/x-raw", "sample_rate": "8000", "bit_rate": "16"}``),
``media`` (``media.payload``: base64 16-bit little-endian mono PCM, about every 100 ms), ``dtmf``
(``dtmf.digit``), ``mark`` (``mark.name``, when the audio sent before it has played) and ``stop``.
We send ``media`` (``stream_sid``, ``media.payload``), ``mark`` and ``clear``.

Exotel's rule for outbound audio: chunks of at least 3.2 kB, at most 100 kB, and a multiple of
320 bytes; anything else plays with gaps. (The page calls 3.2 kB "100 ms", which it is at 16 kHz;
at 8 kHz 16-bit it is 200 ms, and we meet the byte count.) The core hands us 20 ms frames, so this
codec holds them until it has a chunk, and asks (``min_lead_ms``) for the playout to keep two
chunks queued at Exotel, so that holding one back never starves the line. A mark (or the end of a
reply, which always sends one) sends what is held first, topped up with silence to a chunk, so the
mark still follows its audio; a clear drops it. The rate (``?sample-rate=`` on the applet URL:
8000, 16000 or 24000) is a parameter: inbound audio at another rate is resampled to the core's
8 kHz, outbound from it.
"""

from __future__ import annotations

import binascii
import json
from typing import Any, Final, assert_never

from bridge.carriers.base import (
    Frame,
    JsonStream,
    PhoneMessage,
    Upsampler,
    b64decode,
    bad,
    short,
    string_parameters,
    usable_name,
)
from bridge.core.actions import ClearPlayback, SendMark, SendMedia
from bridge.core.audio import PHONE, Resampler
from bridge.core.events import CallerAudio, Event

__all__ = ["MIN_CHUNK_BYTES", "RATES", "ExotelCodec"]

RATES: Final = (8000, 16000, 24000)
MIN_CHUNK_BYTES: Final = 3200


class ExotelCodec(JsonStream):
    """One Exotel Voicebot stream at ``rate`` Hz (the applet's sample rate)."""

    audio: Final = PHONE
    """The call runs at 8 kHz whatever the line's rate: this codec resamples both ways."""

    def __init__(self, *, rate: int = 8000, max_media_bytes: int = 64_000, max_message_bytes: int = 128 * 1024) -> None:
        if rate not in RATES:
            raise ValueError(f"Exotel streams at {RATES} Hz, not {rate}")
        super().__init__(max_media_bytes=max_media_bytes, max_message_bytes=max_message_bytes)
        self.rate: Final = rate
        self.frame_bytes: Final = rate // 50 * 2
        self.chunk_bytes: Final = max(MIN_CHUNK_BYTES, self.frame_bytes * 5) // self.frame_bytes * self.frame_bytes
        self.min_lead_ms: Final = 2 * self.chunk_bytes // self.frame_bytes * 20
        """The playout's lead this carrier needs: two chunks, one held here and one playing."""
        self._inbound = Resampler(rate)
        self._outbound = Upsampler(rate)
        self._held = bytearray()

    # ------------------------------------------------------------------ inbound

    def _start(self, data: dict[str, Any], at: float) -> list[Event]:
        start = data.get("start")
        sid = usable_name(start.get("stream_sid", data.get("stream_sid"))) if isinstance(start, dict) else None
        if not isinstance(start, dict) or sid is None:
            return bad(at, "start without a stream_sid")
        media_format = start.get("media_format")
        rate = str(media_format.get("sample_rate", self.rate)) if isinstance(media_format, dict) else str(self.rate)
        if rate != str(self.rate):
            return bad(at, f"start at {short(rate)} Hz, but this stream was set up for {self.rate} Hz")
        return self._started(at, sid, start.get("call_sid", ""), string_parameters(start, "custom_parameters"))

    def _media(self, data: dict[str, Any], at: float) -> list[Event]:
        media = data.get("media")
        if not isinstance(media, dict):
            return bad(at, "media without a media object")
        pcm = b64decode(media.get("payload"), self._max_chars)
        if not isinstance(pcm, bytes):
            return bad(at, pcm)
        pcm = self._inbound.process(pcm)
        return [CallerAudio(at, pcm)] if pcm else []

    # ----------------------------------------------------------------- outbound

    def encode(self, action: PhoneMessage) -> list[Frame]:
        """The JSON text frames for one phone action, possibly none yet (media held back)."""
        self._check_started(action)
        match action:
            case SendMedia():
                self._held += self._outbound.process(action.pcm)
                if len(self._held) < self.chunk_bytes:
                    return []
                return [self._media_frame()]
            case SendMark():
                out: list[Frame] = [self._media_frame()] if self._held else []
                return [*out, '{"event":"mark","stream_sid":' + self._sid + ',"mark":{"name":'
                        + json.dumps(action.name) + "}}"]
            case ClearPlayback():
                self._held.clear()
                self._outbound.reset()
                return ['{"event":"clear","stream_sid":' + self._sid + "}"]
            case _:
                assert_never(action)

    def _media_frame(self) -> str:
        """Everything held, in whole 20 ms frames, topped up with silence to a chunk if short."""
        frame = self.frame_bytes
        size = max(self.chunk_bytes, len(self._held) // frame * frame)
        chunk = bytes(self._held[:size]).ljust(size, b"\x00")
        del self._held[:size]
        payload = binascii.b2a_base64(chunk, newline=False).decode("ascii")
        return '{"event":"media","stream_sid":' + self._sid + ',"media":{"payload":"' + payload + '"}}'
