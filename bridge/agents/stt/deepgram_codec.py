"""Deepgram's live transcription protocol (``/v1/listen`` over WebSocket), as pure functions.

From Deepgram's documentation (developers.deepgram.com):

* Connect to ``wss://api.deepgram.com/v1/listen?...`` with ``Authorization: Token <key>``
  (docs/authenticating). Query: ``encoding`` (``linear16``, ``mulaw``), ``sample_rate``,
  ``channels``, ``model``, ``interim_results`` (docs/interim-results), ``endpointing`` (ms of
  silence before ``speech_final``, or ``false``; docs/endpointing), ``utterance_end_ms``
  (needs ``interim_results``; docs/utterance-end), ``vad_events`` (``SpeechStarted``;
  docs/speech-started). A refused handshake is an HTTP error (401 for a bad key) carrying
  ``dg-error`` and ``dg-request-id`` headers (changelog 2022-11-08).
* Audio goes up as binary frames; control messages as text: ``{"type": "KeepAlive"}`` at least
  every 10 s of no audio, or the server closes with ``NET-0001`` (docs/audio-keep-alive; "every
  3-5 seconds"), ``{"type": "Finalize"}`` to flush held audio as final results marked
  ``from_finalize`` (docs/finalize), ``{"type": "CloseStream"}`` to flush, receive a ``Metadata``
  summary and have the server close (docs/close-stream).
* Down come text frames: ``Results`` (``channel.alternatives[0].transcript``, ``is_final``,
  ``speech_final``, ``start``, ``duration``; the JS SDK's ``LiveTranscriptionEvent``),
  ``UtteranceEnd`` (``channel``, ``last_word_end``), ``SpeechStarted`` (``channel``,
  ``timestamp``), ``Metadata`` (``request_id``, ``duration``, ``channels``...).

``decode`` never raises: what it cannot read becomes `Malformed`, which the client logs and skips.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlencode, urlsplit, urlunsplit

from bridge.agents.stt.base import SpeechStarted, Transcript, UtteranceEnd

__all__ = [
    "CLOSE_STREAM",
    "DEFAULT_BASE_URL",
    "FINALIZE",
    "KEEP_ALIVE",
    "DeepgramMetadata",
    "DeepgramOptions",
    "Encoding",
    "Malformed",
    "ServerError",
    "decode",
    "listen_url",
]

DEFAULT_BASE_URL = "wss://api.deepgram.com"
KEEP_ALIVE = '{"type": "KeepAlive"}'
FINALIZE = '{"type": "Finalize"}'
CLOSE_STREAM = '{"type": "CloseStream"}'

Encoding = Literal["linear16", "mulaw"]


@dataclass(frozen=True, slots=True)
class DeepgramOptions:
    """The query of one ``/v1/listen`` connection. ``None`` for ``endpointing`` sends ``false``."""

    model: str = "nova-3"
    encoding: Encoding = "linear16"
    sample_rate: int = 8000
    language: str | None = None
    interim_results: bool = True
    endpointing_ms: int | None = 300
    utterance_end_ms: int | None = 1000
    vad_events: bool = True
    punctuate: bool = True

    def query(self) -> dict[str, str]:
        q = {"model": self.model, "encoding": self.encoding, "sample_rate": str(self.sample_rate),
             "channels": "1", "interim_results": _flag(self.interim_results),
             "endpointing": "false" if self.endpointing_ms is None else str(self.endpointing_ms),
             "vad_events": _flag(self.vad_events), "punctuate": _flag(self.punctuate)}
        if self.utterance_end_ms is not None:
            q["utterance_end_ms"] = str(self.utterance_end_ms)
        if self.language:
            q["language"] = self.language
        return q


@dataclass(frozen=True, slots=True)
class DeepgramMetadata:
    """The summary the server sends after ``CloseStream``."""

    at: float
    request_id: str
    duration: float


@dataclass(frozen=True, slots=True)
class ServerError:
    """An error the server reported in a text message (before it closes the socket)."""

    at: float
    description: str


@dataclass(frozen=True, slots=True)
class Malformed:
    """A message that is not what the protocol promises; logged and skipped."""

    at: float
    reason: str


Decoded = Transcript | SpeechStarted | UtteranceEnd | DeepgramMetadata | ServerError | Malformed | None


def _flag(value: bool) -> str:
    return "true" if value else "false"


def listen_url(base_url: str, options: DeepgramOptions) -> str:
    """``{base}/v1/listen?{query}``; ``http(s)`` bases become ``ws(s)``. The key is never in it."""
    parts = urlsplit(base_url.rstrip("/"))
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    path = parts.path if parts.path.endswith("/v1/listen") else f"{parts.path}/v1/listen"
    return urlunsplit((scheme, parts.netloc, path, urlencode(options.query()), ""))


def decode(raw: str | bytes, at: float) -> Decoded:
    """One server text frame as an event; ``None`` for a message the client has no use for."""
    try:
        message = json.loads(raw)
    except ValueError:
        return Malformed(at, "a message that is not JSON")
    if not isinstance(message, Mapping):
        return Malformed(at, "a message that is not a JSON object")
    kind = message.get("type")
    if kind == "Results":
        return _results(message, at)
    if kind == "UtteranceEnd":
        return UtteranceEnd(at=at, last_word_end=_number(message.get("last_word_end")))
    if kind == "SpeechStarted":
        return SpeechStarted(at=at, timestamp=_number(message.get("timestamp")))
    if kind == "Metadata":
        request_id = message.get("request_id")
        return DeepgramMetadata(at, request_id if isinstance(request_id, str) else "",
                                _number(message.get("duration")))
    if kind == "Error" or "err_code" in message:
        detail = message.get("description") or message.get("err_msg") or message.get("variant") or "error"
        return ServerError(at, str(detail)[:200])
    return None


def _results(message: Mapping[str, Any], at: float) -> Transcript | Malformed:
    channel = message.get("channel")
    alternatives = channel.get("alternatives") if isinstance(channel, Mapping) else None
    first = alternatives[0] if isinstance(alternatives, list) and alternatives else None
    text = first.get("transcript") if isinstance(first, Mapping) else None
    if not isinstance(text, str):
        return Malformed(at, "Results without channel.alternatives[0].transcript")
    return Transcript(text=text, is_final=message.get("is_final") is True,
                      speech_final=message.get("speech_final") is True, at=at,
                      start=_number(message.get("start")), duration=_number(message.get("duration")))


def _number(value: object) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0
