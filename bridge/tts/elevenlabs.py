"""ElevenLabs multi-context TTS: a pure codec, and a thin asyncio client around it.

One WebSocket per call, authenticated with the ``xi-api-key`` header (never in the URL, so
the URL can be logged). Wire shapes follow ElevenLabs' multi-context guide and the
``elevenlabs-python`` SDK models (``initialise_context.py``, ``send_text_multi.py``,
``close_context.py``, ``keep_context_alive.py``, ``audio_output_multi.py``,
``final_output_multi.py``); see ``shared/protocols.md`` §1 for the evidence.

The server is inconsistent about casing (``contextId`` in the SDK schemas, ``context_id``
from newer voices, ``is_final`` in the guide's example), so the decoder reads both.
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlencode

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from bridge.core.actions import CloseContext, KeepAlive, OpenContext, SendText, TtsAction
from bridge.core.audio import SAMPLE_RATE, TtsDecoder
from bridge.core.events import Alignment, Event, TtsAudio, TtsClosed, TtsConnected, TtsError, TtsFinal
from bridge.tts.base import Emit, TtsConnectError

__all__ = ["FATAL_ERRORS", "ElevenLabsCodec", "ElevenLabsTts", "RedactingLogger", "quotes_secret", "stream_url"]

log = logging.getLogger("bridge.tts.elevenlabs")

MAX_MESSAGE_BYTES = 16 * 1024 * 1024  # what the official guide's example allows for audio frames
CLOSE_WAIT_S = 2.0

FATAL_ERRORS: dict[str, str] = {
    "invalid_api_key": "the API key was refused (check ELEVENLABS_API_KEY)",
    "unauthorized": "the API key was refused (check ELEVENLABS_API_KEY)",
    "quota_exceeded": "the account has no character quota left",
    "insufficient_quota": "the account has no character quota left",
    "payment_required": "the account needs a paid plan or a payment",
    "detected_unusual_activity": "the account was flagged for unusual activity",
}
"""Socket-level error codes that reconnecting cannot heal within a call (shared/protocols.md §1.5;
the key and quota codes are [U] there, so both spellings seen on other ElevenLabs products are
listed). Every other error (``max_active_conversations``, ``input_timeout_exceeded``, a server
fault) ends only the socket: the session reconnects and the call re-voices what was not heard."""
FATAL_HTTP = {401: "the API key was refused (check ELEVENLABS_API_KEY)", 403: "the server forbids this request "
              "(a bad key, or a model or voice the key may not use)"}


def quotes_secret(text: str, secret: str | None, piece: int = 8) -> bool:
    """Whether ``text`` holds ``secret`` or any ``piece``-character part of it (a log line may
    show a truncated frame, an error may quote half a key)."""
    if not secret:
        return False
    return any(secret[i : i + piece] in text for i in range(max(1, len(secret) - piece + 1)))


class RedactingLogger(logging.LoggerAdapter[logging.Logger]):
    """websockets' client logs, at DEBUG, every handshake header (``xi-api-key`` included) and
    every frame (an error frame may quote the key): this adapter, passed as its ``logger``,
    blanks any argument that quotes ``secret``, before anything is formatted or written."""

    def __init__(self, logger: logging.Logger, secret: str) -> None:
        super().__init__(logger, {})
        self._secret = secret

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if self.isEnabledFor(level):
            shown = tuple("[redacted]" if quotes_secret(str(arg), self._secret) else arg for arg in args)
            super().log(level, "[redacted]" if quotes_secret(str(msg), self._secret) else msg, *shown, **kwargs)


def stream_url(base_url: str, voice_id: str, query: Mapping[str, str | int | bool]) -> str:
    """The multi-stream-input URL; it carries no secret, so it may be logged."""
    params = {k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in query.items()}
    return f"{base_url.rstrip('/')}/v1/text-to-speech/{voice_id}/multi-stream-input?{urlencode(params)}"


class ElevenLabsCodec:
    """Actions to JSON text, and server frames to events, for one socket; audio is reported as
    PCM16 at the call's ``rate`` (``pcm_16000`` on a 16 kHz call passes through unconverted)."""

    def __init__(self, output_format: str, voice_settings: Mapping[str, Any] | None = None, *,
                 rate: int = SAMPLE_RATE) -> None:
        TtsDecoder(output_format, rate)  # a format the call's rate cannot take fails as the voice is built
        self.output_format = output_format
        self.rate = rate
        self.voice_settings = dict(voice_settings or {})
        self._decoders: dict[str, TtsDecoder] = {}

    def encode(self, action: TtsAction) -> str:
        message: dict[str, Any]
        match action:
            case OpenContext(context_id=cid):
                message = {"text": " ", "context_id": cid}
                if self.voice_settings:
                    message["voice_settings"] = self.voice_settings
            case SendText(context_id=cid, text=text, flush=flush):
                message = {"text": text, "context_id": cid}
                if flush:
                    message["flush"] = True
                    if not text:
                        del message["text"]  # an empty text alone would be a keep-alive
            case KeepAlive(context_id=cid):
                message = {"text": "", "context_id": cid}
            case CloseContext(context_id=cid):
                message = {"context_id": cid, "close_context": True}
        return json.dumps(message, separators=(",", ":"))

    def decode(self, raw: str | bytes, at: float) -> list[Event]:
        """One server frame to events; anything unusable becomes a `TtsError`, never an exception."""
        try:
            data = orjson.loads(raw)  # audio frames are large: orjson parses them several times faster
        except (ValueError, UnicodeDecodeError):
            return [TtsError(at, "malformed_message", "server sent a frame that is not JSON")]
        if not isinstance(data, dict):
            return [TtsError(at, "malformed_message", "server sent JSON that is not an object")]
        cid = data.get("contextId") or data.get("context_id")
        cid = cid if isinstance(cid, str) else None
        events: list[Event] = []
        if data.get("error") or (data.get("message") and "audio" not in data):
            code = str(data.get("error") or "error")
            events.append(TtsError(at, code, str(data.get("message", ""))[:300], cid))
            return events
        audio = data.get("audio")
        if audio and cid is not None:
            events.extend(self._audio(cid, audio, data, at))
        if (data.get("isFinal") or data.get("is_final")) and cid is not None:
            decoder = self._decoders.pop(cid, None)
            if decoder is not None:
                tail = decoder.flush()
                if tail:
                    events.append(TtsAudio(at, cid, tail))
            events.append(TtsFinal(at, cid))
        return events

    def _audio(self, cid: str, audio: Any, data: dict[str, Any], at: float) -> list[Event]:
        try:  # what base64.b64decode(audio, validate=True) calls, without its copy of the text as bytes
            raw = binascii.a2b_base64(audio, strict_mode=True)
        except (binascii.Error, ValueError, TypeError):
            return [TtsError(at, "malformed_audio", "audio is not valid base64", cid)]
        decoder = self._decoders.get(cid)
        if decoder is None:
            decoder = self._decoders[cid] = TtsDecoder(self.output_format, self.rate)
        pcm = decoder.decode(raw)
        return [TtsAudio(at, cid, pcm, _alignment(data.get("alignment")))] if pcm else []

    def forget(self) -> None:
        """The socket is gone: resampler state of its contexts means nothing any more."""
        self._decoders.clear()


def _alignment(value: Any) -> Alignment | None:
    if not isinstance(value, dict):
        return None
    chars = value.get("chars")
    starts = value.get("charStartTimesMs") or value.get("char_start_times_ms") or ()
    if not isinstance(chars, list):
        return None
    try:  # map, not a generator: one alignment per audio chunk, a few dozen characters each
        return Alignment("".join(map(str, chars)), tuple(map(int, starts)))
    except (TypeError, ValueError):
        return Alignment("".join(map(str, chars)))


class ElevenLabsTts:
    """The call's one multi-context socket. Reports everything through ``emit``."""

    def __init__(
        self,
        *,
        url: str,
        api_key: str,
        codec: ElevenLabsCodec,
        clock: Callable[[], float],
        open_timeout: float = 5.0,
    ) -> None:
        self._url = url
        self._api_key = api_key
        self._codec = codec
        self._clock = clock
        self._open_timeout = open_timeout
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._closing = False
        self._refused: str | None = None  # why the server will never serve this key (FATAL_ERRORS)
        self._ws_log = RedactingLogger(logging.getLogger("websockets.client"), api_key)

    def __repr__(self) -> str:
        return f"ElevenLabsTts(url={self._url!r})"  # never the key

    async def connect(self, emit: Emit) -> None:
        """Open the socket; a refusal that retrying cannot heal raises a permanent error."""
        if self._refused is not None:
            raise TtsConnectError(self._refused, permanent=True)
        try:
            ws = await connect(
                self._url,
                additional_headers={"xi-api-key": self._api_key},
                max_size=MAX_MESSAGE_BYTES,
                open_timeout=self._open_timeout,
                ping_interval=20,
                close_timeout=CLOSE_WAIT_S,
                logger=self._ws_log,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            why = FATAL_HTTP.get(status)
            message = f"the TTS refused the connection (HTTP {status})" + (f": {why}" if why else "")
            raise TtsConnectError(message, permanent=why is not None) from None
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            raise TtsConnectError(f"cannot reach the TTS ({type(exc).__name__}: {exc})") from None
        self._ws = ws
        self._codec.forget()
        self._closing = False
        self._reader = asyncio.create_task(self._read(ws, emit), name="tts-reader")
        emit(TtsConnected(self._clock()))

    async def _read(self, ws: ClientConnection, emit: Emit) -> None:
        code: int | None = None
        reason = ""
        try:
            async for raw in ws:
                for event in self._codec.decode(raw, self._clock()):
                    emit(self._screen(event))
        except ConnectionClosed:
            pass
        finally:
            if ws.close_code is not None:
                code, reason = ws.close_code, ws.close_reason or ""
            if reason in FATAL_ERRORS and self._refused is None:  # the code may come as the close reason only
                self._refused = f"{FATAL_ERRORS[reason]} ({reason})"
            emit(TtsClosed(self._clock(), code, self._hide_key(reason), expected=self._closing))

    def _screen(self, event: Event) -> Event:
        """Remember a socket-level error that cannot heal; never pass the key on in a message."""
        if not isinstance(event, TtsError):
            return event
        if event.context_id is None and event.code in FATAL_ERRORS:
            self._refused = f"{FATAL_ERRORS[event.code]} ({event.code})"
        message = self._hide_key(event.message)
        return event if message == event.message else TtsError(event.at, event.code, message, event.context_id)

    def _hide_key(self, text: str) -> str:
        return "[redacted: it quoted the API key]" if quotes_secret(text, self._api_key) else text

    async def send(self, action: TtsAction) -> None:
        ws = self._ws
        if ws is None:
            return  # not connected: the core re-sends once it hears TtsConnected
        with contextlib.suppress(ConnectionClosed):
            await ws.send(self._codec.encode(action))

    async def aclose(self) -> None:
        ws, reader = self._ws, self._reader
        self._ws = None
        if ws is None:
            return
        self._closing = True
        with contextlib.suppress(ConnectionClosed):
            await ws.send('{"close_socket":true}')
        if reader is not None:
            # Flushed contexts finish first, then the server closes; don't race it into a 1006.
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(reader), CLOSE_WAIT_S)
        await ws.close()
        if reader is not None and not reader.done():
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
