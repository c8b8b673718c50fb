"""What every carrier's media-stream codec offers the shell, the registry of carriers, and the
little each JSON codec shares.

A codec is pure (Sans-I/O, like `bridge.carriers.twilio.codec.TwilioCodec`): ``decode(raw, at)``
turns one WebSocket message into core events and never raises for what the peer sends;
``encode(action)`` turns one phone action into what goes on the wire. Carriers differ in what
that is: Twilio answers every action with one JSON text frame, Vonage with binary audio frames,
and Exotel holds short audio back until it has the 100 ms chunk its platform asks for. So
``encode`` returns a text frame, a binary frame, or a list of frames (possibly empty); the shell
sends them in order (`frames` flattens the three shapes).

A codec states the call's audio (``audio``: the rate and frame the core runs at, which
`call_settings_for` puts in the call's settings), and takes and gives PCM16 at that rate: the
caller's audio in `CallerAudio`, the agent's 20 ms frames in `SendMedia`. A linear-PCM line at
16 kHz (Vonage) runs the call at 16 kHz and converts nothing; a µ-law line (Twilio, Telnyx,
Plivo) runs at 8 kHz and encodes µ-law. A codec that keeps the call at 8 kHz on a line at
another rate (Exotel) converts at its edge: inbound with the core's filtered `Resampler`,
outbound with `Upsampler` here.
"""

from __future__ import annotations

import binascii
import importlib
import json
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, Final, Protocol

import numpy as np
import orjson
import soxr

from bridge.core.actions import ClearPlayback, SendMark, SendMedia
from bridge.core.audio import AudioFormat, ulaw_to_pcm
from bridge.core.call import CallSettings
from bridge.core.events import CallEnded, CallerAudio, CallStarted, DtmfReceived, Event, MarkPlayed, TelephonyMalformed

__all__ = [
    "CARRIERS",
    "MAX_NAME",
    "CarrierCodec",
    "Frame",
    "JsonStream",
    "Outbound",
    "PhoneMessage",
    "Upsampler",
    "b64decode",
    "bad",
    "call_settings_for",
    "dtmf_pressed",
    "frames",
    "inbound_ulaw",
    "load_json",
    "make_codec",
    "mark_played",
    "nested",
    "short",
    "string_parameters",
    "usable_name",
]

Frame = str | bytes
"""One WebSocket message: text or binary."""
Outbound = str | bytes | list[str | bytes]
"""What ``encode`` returns: one frame, or any number of them in order."""
PhoneMessage = SendMedia | SendMark | ClearPlayback

CARRIERS: Final = ("twilio", "signalwire", "telnyx", "plivo", "vonage", "exotel")
"""Every carrier bridge speaks to, in the order the docs list them."""

_CODECS: Final = {
    "twilio": "bridge.carriers.twilio.codec:TwilioCodec",
    "signalwire": "bridge.carriers.signalwire.codec:SignalWireCodec",
    "telnyx": "bridge.carriers.telnyx.codec:TelnyxCodec",
    "plivo": "bridge.carriers.plivo.codec:PlivoCodec",
    "vonage": "bridge.carriers.vonage.codec:VonageCodec",
    "exotel": "bridge.carriers.exotel.codec:ExotelCodec",
}
_NAME_SHOWN: Final = 32
MAX_NAME: Final = 256
"""Mark and stream names are ours or short ids: a longer one is not the carrier talking."""


class CarrierCodec(Protocol):
    """One media stream's codec; one instance per call."""

    @property
    def audio(self) -> AudioFormat:
        """The call's audio: PCM16 at this rate, in these frames, both ways through the codec."""

    def decode(self, message: str | bytes, at: float) -> list[Event]: ...

    def encode(self, action: PhoneMessage) -> Outbound: ...


def call_settings_for(settings: CallSettings, codec: CarrierCodec) -> CallSettings:
    """The call's settings for this carrier: its audio as the codec states it (16 kHz end to end on
    a wideband line), and the playout lead the codec needs (``min_lead_ms``) if it needs more.

    Exotel holds audio back until it has a whole chunk; with a lead shorter than two chunks the line
    would run dry while it waits. The low-water mark keeps its distance below the lead."""
    settings = settings if settings.audio == codec.audio else replace(settings, audio=codec.audio)
    floor = int(getattr(codec, "min_lead_ms", 0))
    if floor <= settings.lead_ms:
        return settings
    return replace(settings, lead_ms=floor, low_ms=floor - (settings.lead_ms - settings.low_ms))


def make_codec(carrier: str, **options: Any) -> CarrierCodec:
    """A fresh codec for ``carrier`` (a name from `CARRIERS`); ``options`` go to its constructor.

    Imported on demand, so a deployment pays only for the carriers it uses."""
    module, _, name = _CODECS[carrier].partition(":")
    factory: Callable[..., CarrierCodec] = getattr(importlib.import_module(module), name)
    return factory(**options)


def frames(out: Outbound) -> Sequence[Frame]:
    """The frames of one ``encode`` result, in sending order."""
    return (out,) if isinstance(out, str | bytes) else out


def bad(at: float, reason: str) -> list[Event]:
    return [TelephonyMalformed(at, reason)]


def short(value: object) -> str:
    """A peer-chosen name, cut so that a log line stays a line."""
    text = str(value)
    return text if len(text) <= _NAME_SHOWN else text[:_NAME_SHOWN] + "..."


def load_json(message: str | bytes, at: float, max_chars: int) -> dict[str, Any] | list[Event]:
    """The JSON object in a text frame, or the `TelephonyMalformed` saying why there is none."""
    if not isinstance(message, str):
        return bad(at, "binary frame (this carrier sends JSON text)")
    if len(message) > max_chars:
        return bad(at, f"message too large ({len(message)} characters), not parsed")
    try:
        data = orjson.loads(message)
    except (ValueError, RecursionError):
        return bad(at, "invalid JSON")
    return data if isinstance(data, dict) else bad(at, "JSON that is not an object")


def b64decode(payload: object, max_chars: int) -> bytes | str:
    """Strict base64 to bytes, or a short reason why not (as text)."""
    if not isinstance(payload, str):
        return "media without a payload"
    if len(payload) > max_chars:
        return f"media payload too large ({len(payload)} base64 chars)"
    try:
        data = binascii.a2b_base64(payload, strict_mode=True)
    except ValueError:
        return "media payload is not valid base64"
    return data or "empty media payload"


def nested(data: dict[str, Any], key: str, field: str) -> object:
    """``data[key][field]``, or None when ``data[key]`` is not an object."""
    inner = data.get(key)
    return inner.get(field) if isinstance(inner, dict) else None


def mark_played(name: object, at: float, missing: str) -> list[Event]:
    """The carrier played up to our mark ``name``, or the `TelephonyMalformed` ``missing`` says why not."""
    return [MarkPlayed(at, name)] if isinstance(name, str) and len(name) <= MAX_NAME else bad(at, missing)


def dtmf_pressed(digit: object, at: float) -> list[Event]:
    """The caller pressed ``digit`` (one character), or why that message is no key press."""
    return [DtmfReceived(at, digit)] if isinstance(digit, str) and len(digit) == 1 else bad(at, "dtmf without a digit")


def usable_name(value: object) -> str | None:
    """A peer-chosen name we can keep and send back (a stream id): a non-empty string of at most
    `MAX_NAME` characters, or None."""
    return value if isinstance(value, str) and value and len(value) <= MAX_NAME else None


def string_parameters(start: dict[str, Any], key: str) -> dict[str, str]:
    """The custom parameters a stream's ``start`` carries under ``key``: string values only."""
    custom = start.get(key)
    return {k: v for k, v in custom.items() if isinstance(v, str)} if isinstance(custom, dict) else {}


class JsonStream:
    """What the JSON-text streams of Plivo, Telnyx and Exotel share: one stream, named by its
    ``start``, whose messages are told apart by their ``event`` field.

    The five events every one of them sends are handled here, in the same order of likelihood
    (``media`` 50 times a second first): ``media`` (refused before ``start``), ``start`` (refused
    a second time), ``dtmf`` (``dtmf.digit``), ``stop``, and the played-mark event the subclass
    names in ``MARK_EVENT`` (its name at ``MARK_NAME``, a path of one or two keys). Events in
    ``IGNORED`` are known and carry nothing for the call; anything else goes to `_other`, which
    reports it as unknown unless the subclass knows better. A subclass writes `_start` (validate,
    `usable_name`, then `_started`), `_media` and ``encode``; ``encode`` asks `_check_started` first.
    """

    MARK_EVENT = "mark"
    MARK_NAME: tuple[str, ...] = ("mark", "name")
    IGNORED: frozenset[str] = frozenset({"connected"})

    def __init__(self, *, max_media_bytes: int, max_message_bytes: int) -> None:
        self.stream_id: str | None = None
        self._max_message = max_message_bytes
        self._max_chars = (max_media_bytes + 2) // 3 * 4
        self._sid = ""  # the stream id as a JSON string, for the messages we send

    def decode(self, message: str | bytes, at: float) -> list[Event]:
        data = load_json(message, at, self._max_message)
        if isinstance(data, list):
            return data
        event = data.get("event")
        if event == "media":
            return self._media(data, at) if self.stream_id is not None else bad(at, "media before start")
        if event == self.MARK_EVENT:
            path = self.MARK_NAME
            name = data.get(path[0]) if len(path) == 1 else nested(data, path[0], path[-1])
            return mark_played(name, at, f"{self.MARK_EVENT} without a name")
        if event == "start":
            return self._start(data, at) if self.stream_id is None else bad(at, "second start")
        if event == "dtmf":
            return dtmf_pressed(nested(data, "dtmf", "digit"), at)
        if event == "stop":
            return [CallEnded(at, "stop")]
        if event in self.IGNORED:
            return []
        return self._other(event, data, at)

    def _other(self, event: object, data: dict[str, Any], at: float) -> list[Event]:
        return bad(at, f"unknown event {short(event)!r}" if isinstance(event, str) else "no event name")

    def _start(self, data: dict[str, Any], at: float) -> list[Event]:
        raise NotImplementedError

    def _media(self, data: dict[str, Any], at: float) -> list[Event]:
        raise NotImplementedError

    def _started(self, at: float, sid: str, call: object = "", parameters: dict[str, str] | None = None) -> list[Event]:
        """The stream starts as ``sid`` (a `usable_name`); ``call``: the carrier's call id."""
        self.stream_id = sid
        self._sid = json.dumps(sid)
        return [CallStarted(at, sid, call if isinstance(call, str) else "", parameters or {})]

    def _check_started(self, action: PhoneMessage) -> None:
        """``encode`` before ``start`` is our bug, not the peer's: it raises."""
        if self.stream_id is None:
            raise RuntimeError(f"{type(action).__name__} before the stream started")


def inbound_ulaw(data: dict[str, Any], at: float, max_chars: int) -> list[Event]:
    """A ``media`` message of the caller's µ-law (``media.track`` inbound, ``media.payload`` base64),
    as Twilio's dialect carries it and Plivo and Telnyx copy; other tracks are skipped."""
    media = data.get("media")
    if not isinstance(media, dict):
        return bad(at, "media without a media object")
    track = media.get("track", "inbound")
    if track != "inbound":
        return [] if isinstance(track, str) else bad(at, "media track is not a string")
    ulaw = b64decode(media.get("payload"), max_chars)
    return [CallerAudio(at, ulaw_to_pcm(ulaw))] if isinstance(ulaw, bytes) else bad(at, ulaw)


class Upsampler:
    """8 kHz PCM16 to a carrier's higher rate, streaming, with a steady 20 ms in, 20 ms out.

    libsoxr's filtering presets hand their output back in 60-90 ms bursts (measured: "MQ" holds
    up to 75 ms at 8 to 16 kHz), which would break the playout's pacing and the marks' timing.
    The "QQ" preset interpolates (cubic) with a 4-sample delay and returns audio as it comes; an
    8 kHz source has nothing above 4 kHz to alias, so interpolation costs only some faint images
    above 4 kHz. The first output after a reset is topped up with leading silence to a whole
    number of samples per 20 ms, so every frame the codec cuts afterwards is sample-exact.
    """

    __slots__ = ("_fresh", "_stream", "rate")

    def __init__(self, rate: int) -> None:
        self.rate: Final = rate
        self._stream = None if rate == 8000 else soxr.ResampleStream(8000, rate, 1, dtype="int16", quality="QQ")
        self._fresh = True

    def process(self, pcm: bytes) -> bytes:
        if self._stream is None:
            return pcm
        out: np.ndarray = self._stream.resample_chunk(np.frombuffer(pcm, dtype=np.int16, count=len(pcm) // 2))
        data = out.tobytes()
        if self._fresh and data:
            self._fresh = False
            frame = self.rate // 50 * 2
            data = b"\x00" * (-len(data) % frame) + data
        return data

    def reset(self) -> None:
        """Barge-in: what the filter holds belongs to audio that will never play."""
        if self._stream is not None:
            self._stream.clear()
        self._fresh = True
