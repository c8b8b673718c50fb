"""A local stand-in for Deepgram's live transcription WebSocket, faithful enough to test a client.

A real ``websockets`` server on 127.0.0.1 speaking ``/v1/listen`` as Deepgram documents it
(developers.deepgram.com: interim-results, endpointing, utterance-end, speech-started,
audio-keep-alive, finalize, close-stream; the handshake's ``dg-error`` header from the
2022-11-08 changelog):

* ``Authorization: Token <key>`` is checked at the handshake: a wrong or missing key gets HTTP 401
  with a ``dg-error`` header, and no WebSocket.
* Binary frames are audio in the query's ``encoding`` (``linear16`` or ``mulaw``) and
  ``sample_rate``. Text frames are ``KeepAlive``, ``Finalize`` and ``CloseStream``.
* While speech goes on it sends interim ``Results`` (``is_final: false``) every
  ``interim_every_s`` of audio, each showing one more word; after ``endpointing`` ms of silence a
  final ``Results`` with ``speech_final: true``; after ``utterance_end_ms`` of silence past the last
  finalised word, ``UtteranceEnd``; at the onset of speech, ``SpeechStarted`` (``vad_events``).
  ``Finalize`` turns what is pending into a final result marked ``from_finalize``. ``CloseStream``
  finalises, sends ``Metadata``, and closes with 1000. With neither audio nor ``KeepAlive`` for
  ``inactivity_timeout_s`` (Deepgram: 10 s) it closes with 1011 and a ``NET-0001`` reason.
* Time is the audio's own time (seconds of audio received), as in Deepgram's ``start``,
  ``duration``, ``timestamp`` and ``last_word_end``; results go out as soon as the audio that
  triggers them arrives.

**It cannot recognise speech.** It detects utterances (an energy gate plus webrtcvad on 20 ms
frames) and answers each new utterance with the next text of its ``script``: the test decides
what the caller "said", in order; once the script runs out, utterances get an empty transcript.
A pause shorter than ``endpointing`` stays inside one utterance; a longer one ends it, so a script
must have one entry per utterance as the fake will cut them. Everything sent and received is
recorded per connection (`ConnectionRecord`) for the test to assert on; ``first_messages`` are
sent as they are when a connection opens, to see how a client takes a message it cannot read.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import webrtcvad
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from bridge.core.audio import ulaw_to_pcm

__all__ = ["ConnectionRecord", "FakeDeepgram"]

FRAME_S = 0.02
SPEECH_DBFS = -45.0  # quieter frames are silence whatever webrtcvad says (it flags noise when warming up)
# websockets logs handshake headers (the key among them) at DEBUG: this logger stays above that.
socket_log = logging.getLogger("bridge.testing.fake_deepgram.socket")
socket_log.setLevel(logging.INFO)
NET_0001 = "NET-0001: no audio data or text message within the timeout window"


@dataclass
class ConnectionRecord:
    """One connection as the fake saw it."""

    query: dict[str, str]
    authorization: str
    audio_bytes: int = 0
    keepalives: int = 0
    finalizes: int = 0
    close_streams: int = 0
    unknown_text: list[str] = field(default_factory=list)
    sent: list[dict[str, Any]] = field(default_factory=list)
    close_code: int | None = None

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.sent if m.get("type") == kind]


class FakeDeepgram:
    """``async with FakeDeepgram(api_key=..., script=[...]) as dg:`` then use ``dg.base_url``."""

    def __init__(self, *, api_key: str = "dg-test-key", script: Sequence[str] = (),
                 interim_every_s: float = 0.3, inactivity_timeout_s: float = 10.0, vad_mode: int = 3,
                 first_messages: Sequence[str] = ()) -> None:
        self.api_key = api_key
        self.first_messages = list(first_messages)  # raw text frames sent on connect, e.g. a garbled one
        self.script = list(script)
        self.interim_every_s = interim_every_s
        self.inactivity_timeout_s = inactivity_timeout_s
        self.vad_mode = vad_mode
        self.connections: list[ConnectionRecord] = []
        self.refused: list[str] = []  # the Authorization headers of refused handshakes
        self.port = 0
        self._server: Server | None = None

    @property
    def base_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def __aenter__(self) -> FakeDeepgram:
        self._server = await serve(self._session, "127.0.0.1", 0, process_request=self._check_key,
                                   process_response=self._request_id, logger=socket_log)
        self.port = next(iter(self._server.sockets)).getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def next_text(self) -> str:
        return self.script.pop(0) if self.script else ""

    def _check_key(self, connection: ServerConnection, request: Request) -> Response | None:
        given = request.headers.get("Authorization", "")
        if urlsplit(request.path).path != "/v1/listen":
            return connection.respond(HTTPStatus.NOT_FOUND, "Not Found\n")
        if given == f"Token {self.api_key}":
            return None
        self.refused.append(given)
        response = connection.respond(HTTPStatus.UNAUTHORIZED, "")
        body = {"err_code": "INVALID_AUTH", "err_msg": "Invalid credentials.", "request_id": str(uuid.uuid4())}
        response.headers["dg-error"] = json.dumps(body)
        response.headers["dg-request-id"] = body["request_id"]
        return response

    def _request_id(self, connection: ServerConnection, request: Request, response: Response) -> None:
        if "dg-request-id" not in response.headers:
            response.headers["dg-request-id"] = str(uuid.uuid4())

    async def _session(self, ws: ServerConnection) -> None:
        query = {k: v[-1] for k, v in parse_qs(urlsplit(ws.request.path if ws.request else "").query).items()}
        record = ConnectionRecord(query=query, authorization=ws.request.headers.get("Authorization", "")
                                  if ws.request else "")
        self.connections.append(record)
        for text in self.first_messages:
            await ws.send(text)
        await _Session(self, ws, record).run()


class _Session:
    """One connection: cuts the audio into 20 ms frames and runs the documented message schedule."""

    def __init__(self, fake: FakeDeepgram, ws: ServerConnection, record: ConnectionRecord) -> None:
        self.fake, self.ws, self.record = fake, ws, record
        q = record.query
        self.rate = int(q.get("sample_rate", "16000"))
        self.mulaw = q.get("encoding") == "mulaw"
        self.interim = q.get("interim_results") == "true"
        self.vad_events = q.get("vad_events") == "true"
        self.endpointing = _ms(q.get("endpointing", "10"))
        self.utterance_end = _ms(q.get("utterance_end_ms", "")) if self.interim else None
        self.vad = webrtcvad.Vad(fake.vad_mode) if self.rate in (8000, 16000, 32000, 48000) else None
        self.frame_bytes = int(self.rate * FRAME_S) * 2
        self.pending = b""
        self.t = 0.0  # seconds of audio received and framed
        self.request_id = str(uuid.uuid4())
        self.words: list[str] | None = None  # the utterance in progress, if any
        self.utt_start = self.voice_end = self.seg_start = self.last_interim = 0.0
        self.silence = 0.0
        self.word_end: float | None = None  # end of the last finalised word, awaiting UtteranceEnd

    async def run(self) -> None:
        watchdog = asyncio.create_task(self._inactivity())
        try:
            async for message in self.ws:
                watchdog.cancel()
                if isinstance(message, bytes):
                    await self._audio(message)
                elif await self._text(message):
                    break
                watchdog = asyncio.create_task(self._inactivity())
        except ConnectionClosed:
            pass
        finally:
            watchdog.cancel()
            self.record.close_code = self.ws.close_code

    async def _inactivity(self) -> None:
        await asyncio.sleep(self.fake.inactivity_timeout_s)
        await self.ws.close(1011, NET_0001)

    async def _text(self, text: str) -> bool:
        """Handle a control message; True when the stream is over."""
        try:
            kind = json.loads(text).get("type")
        except (ValueError, AttributeError):
            kind = None
        if kind == "KeepAlive":
            self.record.keepalives += 1
        elif kind == "Finalize":
            self.record.finalizes += 1
            await self._finalise(speech_final=False, from_finalize=True)
        elif kind == "CloseStream":
            self.record.close_streams += 1
            await self._finalise(speech_final=False, from_finalize=True)
            await self._send({"type": "Metadata", "transaction_key": "deprecated", "request_id": self.request_id,
                              "sha256": "0" * 64, "created": "2026-01-01T00:00:00.000Z",
                              "duration": round(self.t, 3), "channels": 1})
            await self.ws.close(1000)
            return True
        else:
            self.record.unknown_text.append(text[:200])
        return False

    async def _audio(self, data: bytes) -> None:
        self.record.audio_bytes += len(data)
        self.pending += ulaw_to_pcm(data) if self.mulaw else data
        while len(self.pending) >= self.frame_bytes:
            frame, self.pending = self.pending[: self.frame_bytes], self.pending[self.frame_bytes :]
            self.t += FRAME_S
            await (self._voiced() if self._is_speech(frame) else self._silent())

    def _is_speech(self, frame: bytes) -> bool:
        samples = np.frombuffer(frame, dtype="<i2").astype(np.float64)
        rms = math.sqrt(float(np.mean(samples * samples))) if samples.size else 0.0
        if rms == 0.0 or 20 * math.log10(rms / 32768.0) < SPEECH_DBFS:
            return False
        return self.vad is None or self.vad.is_speech(frame, self.rate)

    async def _voiced(self) -> None:
        start = self.t - FRAME_S
        if self.words is None:
            self.words = self.fake.next_text().split()
            self.utt_start = self.last_interim = start
            if self.vad_events:
                await self._send({"type": "SpeechStarted", "channel": [0], "timestamp": round(start, 3)})
        self.silence, self.voice_end, self.word_end = 0.0, self.t, None
        if self.interim and self.t - self.last_interim >= self.fake.interim_every_s:
            self.last_interim = self.t
            shown = min(len(self.words), round((self.t - self.utt_start) / self.fake.interim_every_s))
            await self._results(self.words[:shown], is_final=False, speech_final=False)

    async def _silent(self) -> None:
        self.silence += FRAME_S
        if self.words is not None and self.endpointing is not None and self.silence * 1000 >= self.endpointing - 1e-6:
            await self._finalise(speech_final=True, from_finalize=False)
        if (self.utterance_end is not None and self.word_end is not None
                and (self.t - self.word_end) * 1000 >= self.utterance_end - 1e-6):
            await self._send({"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": round(self.word_end, 3)})
            self.word_end = None

    async def _finalise(self, *, speech_final: bool, from_finalize: bool) -> None:
        if self.words is None:
            return
        await self._results(self.words, is_final=True, speech_final=speech_final, from_finalize=from_finalize)
        self.words, self.word_end, self.seg_start = None, self.voice_end, self.t

    async def _results(self, words: list[str], *, is_final: bool, speech_final: bool,
                       from_finalize: bool = False) -> None:
        step = (self.voice_end - self.utt_start) / max(1, len(words))
        timed = [{"word": w.strip(".,?!").lower(), "start": round(self.utt_start + i * step, 3),
                  "end": round(self.utt_start + (i + 1) * step, 3), "confidence": 0.99, "punctuated_word": w}
                 for i, w in enumerate(words)]
        await self._send({
            "type": "Results", "channel_index": [0, 1], "duration": round(self.t - self.seg_start, 3),
            "start": round(self.seg_start, 3), "is_final": is_final, "speech_final": speech_final,
            "channel": {"alternatives": [{"transcript": " ".join(words), "confidence": 0.99, "words": timed}]},
            "metadata": {"request_id": self.request_id, "model_info": {"name": "fake", "version": "0", "arch": "fake"},
                         "model_uuid": "00000000-0000-0000-0000-000000000000"},
            "from_finalize": from_finalize,
        })

    async def _send(self, message: dict[str, Any]) -> None:
        self.record.sent.append(message)
        with contextlib.suppress(ConnectionClosed):
            await self.ws.send(json.dumps(message))


def _ms(value: str) -> float | None:
    """``endpointing`` / ``utterance_end_ms``: milliseconds, or None for ``false`` or absent."""
    try:
        return float(value)
    except ValueError:
        return None
