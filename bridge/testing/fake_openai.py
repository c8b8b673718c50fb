"""A local stand-in for an OpenAI-compatible API, faithful enough to test the openai agent against.

Real HTTP on 127.0.0.1 (uvicorn), the two endpoints the agent uses, with the wire formats of the
OpenAI API reference that Groq, Ollama, vLLM and llama.cpp servers copy:

* ``POST /v1/audio/transcriptions``: a multipart form with ``file`` (a WAV here) and ``model``;
  answers ``{"text": ...}``. What the text is comes from a ``transcribe(pcm, rate)`` callable, so a
  test can decide it from the audio it received (see `EnvelopeMatcher`).
* ``POST /v1/chat/completions``: with ``"stream": true`` it answers ``text/event-stream``: a
  ``chat.completion.chunk`` with the role, then one chunk per piece of text (about a token: up to
  four characters), a last chunk with ``finish_reason: "stop"``, and ``data: [DONE]``. Each reply
  can wait ``first_delay`` before its first piece and ``chunk_delay`` between pieces, so a test
  can tell "the first sentence was spoken before the model finished" and measure the bridge's own
  latency net of these delays. Without ``stream`` it answers one ``chat.completion`` object.
* A bad ``Authorization: Bearer`` (when ``api_key`` is set) gets 401 with OpenAI's error shape;
  a reply with ``status`` other than 200 gets that status and a ``server_error`` body.

Every request is recorded (`ChatRecord`, `TranscriptionRecord`) with monotonic times. The chat
endpoint watches the connection while it streams: when the client goes away mid-reply, the
stream stops and ``disconnected_at`` is set, which is how a test proves a barge-in really
aborted the upstream request rather than leaving it running.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import re
import time
import wave
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

__all__ = ["ChatRecord", "EnvelopeMatcher", "FakeOpenAI", "Reply", "TranscriptionRecord", "pieces"]

_PIECE = re.compile(r"\s*\S{1,4}")


def pieces(text: str) -> list[str]:
    """``text`` cut roughly as a tokenizer would: pieces of up to four characters, spaces leading."""
    return _PIECE.findall(text)


@dataclass(frozen=True)
class Reply:
    """How the fake answers one chat request."""

    text: str
    first_delay: float = 0.0
    chunk_delay: float = 0.0
    status: int = 200
    tool_calls: tuple[tuple[str, dict[str, Any]], ...] = ()  # (function name, arguments) after the text


@dataclass
class ChatRecord:
    body: dict[str, Any]
    headers: dict[str, str]
    reply: Reply
    received_at: float
    first_chunk_at: float | None = None
    finished_at: float | None = None  # the last piece and [DONE] were sent
    disconnected_at: float | None = None  # the client went away before the end
    chunks_sent: int = 0

    @property
    def messages(self) -> list[dict[str, Any]]:
        messages = self.body.get("messages")
        return messages if isinstance(messages, list) else []


@dataclass
class TranscriptionRecord:
    fields: dict[str, str]
    filename: str
    content_type: str
    sample_rate: int
    pcm: bytes
    text: str
    received_at: float  # the request arrived
    answered_at: float  # the answer was ready (after ``stt_delay`` and the transcribe callable)


Transcribe = Callable[[bytes, int], str]
Replies = Sequence[str | Reply] | Callable[[ChatRecord], str | Reply]


class FakeOpenAI:
    """``async with FakeOpenAI(replies=[...]) as api:`` then point the agent at ``api.base_url``."""

    def __init__(self, replies: Replies = ("Hello.",), *, transcribe: Transcribe | None = None,
                 api_key: str | None = None, first_delay: float = 0.0, chunk_delay: float = 0.0,
                 stt_delay: float = 0.0) -> None:
        self.replies = replies
        self.transcribe = transcribe or (lambda pcm, rate: "hello")
        self.api_key = api_key
        self.first_delay, self.chunk_delay, self.stt_delay = first_delay, chunk_delay, stt_delay
        self.chats: list[ChatRecord] = []
        self.transcriptions: list[TranscriptionRecord] = []
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def app(self) -> Starlette:
        return Starlette(routes=[
            Route("/v1/audio/transcriptions", self._transcription, methods=["POST"]),
            Route("/v1/chat/completions", _AsgiEndpoint(self._chat), methods=["POST"]),
        ])

    async def __aenter__(self) -> FakeOpenAI:
        config = uvicorn.Config(self.app(), host="127.0.0.1", port=0, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                await self._task
            await asyncio.sleep(0.01)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await asyncio.wait_for(self._task, 10)

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError("condition not met in time")
            await asyncio.sleep(0.01)

    # -- endpoints ------------------------------------------------------------------------------

    def _refused(self, headers: Mapping[str, str]) -> Response | None:
        if self.api_key is None or headers.get("authorization") == f"Bearer {self.api_key}":
            return None
        error = {"message": "Incorrect API key provided.", "type": "invalid_request_error",
                 "param": None, "code": "invalid_api_key"}
        return JSONResponse({"error": error}, status_code=401)

    async def _transcription(self, request: Request) -> Response:
        received_at = time.monotonic()
        if (refused := self._refused(request.headers)) is not None:
            return refused
        form = await request.form()
        upload, model = form.get("file"), form.get("model")
        if isinstance(upload, str) or upload is None or not isinstance(model, str) or not model:
            return _bad_request("'file' (a file) and 'model' are required")
        data = await upload.read()
        try:
            with wave.open(io.BytesIO(data), "rb") as w:
                if w.getsampwidth() != 2 or w.getnchannels() != 1:
                    return _bad_request("only 16-bit mono WAV is understood here")
                rate, pcm = w.getframerate(), w.readframes(w.getnframes())
        except (wave.Error, EOFError):
            return _bad_request("the file is not a WAV file")
        if self.stt_delay:
            await asyncio.sleep(self.stt_delay)
        text = self.transcribe(pcm, rate)
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        self.transcriptions.append(TranscriptionRecord(fields, upload.filename or "", upload.content_type or "",
                                                       rate, pcm, text, received_at, time.monotonic()))
        return JSONResponse({"text": text})

    def _next_reply(self, record: ChatRecord) -> Reply:
        if callable(self.replies):
            chosen = self.replies(record)
        else:
            chosen = self.replies[min(len(self.chats) - 1, len(self.replies) - 1)]
        return chosen if isinstance(chosen, Reply) else Reply(chosen, self.first_delay, self.chunk_delay)

    async def _chat(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        raw = await _read_body(receive)
        if (refused := self._refused(headers)) is not None:
            await refused(scope, receive, send)
            return
        try:
            body = json.loads(raw)
            assert isinstance(body, dict) and isinstance(body.get("messages"), list) and body.get("model")
        except (ValueError, AssertionError):
            await _bad_request("'model' and 'messages' are required")(scope, receive, send)
            return
        record = ChatRecord(body, headers, Reply(""), time.monotonic())
        self.chats.append(record)
        record.reply = self._next_reply(record)
        if record.reply.status != 200:
            error = {"message": "The server had an error.", "type": "server_error", "param": None, "code": None}
            await JSONResponse({"error": error}, status_code=record.reply.status)(scope, receive, send)
        elif body.get("stream"):
            await _stream_watching(record, send, receive)
        else:
            await JSONResponse(_completion(body, record.reply.text))(scope, receive, send)
            record.finished_at = time.monotonic()


class _AsgiEndpoint:
    """A raw ASGI endpoint: Starlette's `Route` serves an instance as is (no request wrapper)."""

    def __init__(self, handler: Callable[[Scope, Receive, Send], Any]) -> None:
        self.handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.handler(scope, receive, send)


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if message["type"] != "http.request" or not message.get("more_body"):
            return b"".join(chunks)


async def _stream_watching(record: ChatRecord, send: Send, receive: Receive) -> None:
    """Stream the reply while listening for the client's disconnect; whichever ends first wins."""
    streaming = asyncio.create_task(_stream(record, send))
    async def watch() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
    watching = asyncio.create_task(watch())
    await asyncio.wait({streaming, watching}, return_when=asyncio.FIRST_COMPLETED)
    if watching.done() and not streaming.done():
        record.disconnected_at = time.monotonic()
    for task in (streaming, watching):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, OSError):
            await task


async def _stream(record: ChatRecord, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")]})
    model, reply = str(record.body.get("model")), record.reply
    async for event in _events(model, reply):
        await send({"type": "http.response.body", "body": event, "more_body": True})
        if record.first_chunk_at is None and b'"content":"' in event and b'"content":""' not in event:
            record.first_chunk_at = time.monotonic()
        record.chunks_sent += 1
    await send({"type": "http.response.body", "body": b"", "more_body": False})
    record.finished_at = time.monotonic()


async def _events(model: str, reply: Reply) -> AsyncIterator[bytes]:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        data = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()),
                "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"

    yield chunk({"role": "assistant", "content": ""})
    for n, piece in enumerate(pieces(reply.text)):
        await asyncio.sleep(reply.first_delay if n == 0 else reply.chunk_delay)
        yield chunk({"content": piece})
    for index, (name, arguments) in enumerate(reply.tool_calls):
        # As OpenAI streams a call: id, type and name first with empty arguments, then the JSON in pieces.
        head = {"index": index, "id": f"call_fake{index}", "type": "function",
                "function": {"name": name, "arguments": ""}}
        yield chunk({"tool_calls": [head]})
        encoded = json.dumps(arguments)
        for at in range(0, len(encoded), 7):
            yield chunk({"tool_calls": [{"index": index, "function": {"arguments": encoded[at : at + 7]}}]})
    yield chunk({}, "tool_calls" if reply.tool_calls else "stop")
    yield b"data: [DONE]\n\n"


def _completion(body: Mapping[str, Any], text: str) -> dict[str, Any]:
    return {"id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()), "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]}


def _bad_request(message: str) -> JSONResponse:
    error = {"message": message, "type": "invalid_request_error", "param": None, "code": None}
    return JSONResponse({"error": error}, status_code=400)


@dataclass
class EnvelopeMatcher:
    """A transcriber for tests: names which known recording an utterance is, by its loudness envelope.

    The bridge sends what the VAD cut from the phone line (µ-law, with some silence around it);
    comparing 20 ms energy envelopes over every alignment finds the recording it came from, so a
    test can check that the transcript the agent got belongs to the speech the caller made.
    """

    known: dict[str, bytes]  # transcript -> 8 kHz PCM16 recording
    min_score: float = 0.6
    scores: list[dict[str, float]] = field(default_factory=list)

    def __call__(self, pcm: bytes, rate: int) -> str:
        heard = _envelope(pcm, rate)
        scores = {text: _best_match(heard, _envelope(ref, 8000)) for text, ref in self.known.items()}
        self.scores.append(scores)
        best = max(scores, key=lambda t: scores[t], default="")
        return best if best and scores[best] >= self.min_score else ""


def _envelope(pcm: bytes, rate: int) -> np.ndarray:
    x = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").astype(np.float64)
    step = rate // 50
    frames = x[: len(x) // step * step].reshape(-1, step)
    return np.log10(np.mean(frames**2, axis=1) + 1.0) if len(frames) else np.zeros(0)


def _best_match(heard: np.ndarray, ref: np.ndarray) -> float:
    """The best correlation of ``ref`` against any window of ``heard`` (0 when it does not fit)."""
    if len(ref) < 5 or len(heard) < len(ref) * 0.9:
        return 0.0
    if len(heard) < len(ref):
        ref = ref[: len(heard)]
    best = 0.0
    for start in range(len(heard) - len(ref) + 1):
        window = heard[start : start + len(ref)]
        if np.std(window) > 0 and np.std(ref) > 0:
            best = max(best, float(np.corrcoef(window, ref)[0, 1]))
    return best
