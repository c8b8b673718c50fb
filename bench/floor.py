"""The I/O floor: what uvicorn and Starlette alone cost under the benchmark's load.

    python -m bench.load --quick --steps 50 --app bench.floor:app --no-docs
    python -m bench.transport --calls 100 --app bench.floor:echo_app   # both directions

``batch_app`` answers every fifth inbound frame with one 100 ms message instead (the same audio in a
fifth of the messages): what batching the bridge's outbound frames would save in the transport.
``echo_app`` also answers each inbound frame with one outbound 20 ms ``media`` message (a frame of
µ-law silence, built once), as the bridge does while the agent talks: the transport's cost in both
directions, with no call logic at all.

An app that accepts each media WebSocket and reads every message until the caller hangs up, doing
nothing with them. The generators' calls then "fail" (no greeting, no reply), but they stream
their caller audio for the whole call as a live call does, so the server's CPU per call-minute is
the share of the bridge's own figure that no code of ours can remove: the event loop, the
sockets, the WebSocket frames and the ASGI hand-off of 50 messages a second per call.
"""

from __future__ import annotations

from base64 import b64encode

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

__all__ = ["MEDIA_100MS", "app", "batch_app", "echo_app"]

def _media_message(ulaw: bytes) -> str:
    return '{"event":"media","streamSid":"MZfloor","media":{"payload":"' + b64encode(ulaw).decode() + '"}}'


_SILENCE = _media_message(b"\xff" * 160)
"""A 20 ms frame of µ-law silence (160 bytes of 0xFF) as the bridge sends it, built once."""
MEDIA_100MS = _media_message(b"\xff" * 800)
"""100 ms of µ-law silence in one message, as the bridge sends a refill (`playback.message_ms`)."""
BATCH = 5


async def _healthz(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


async def _media(websocket: WebSocket) -> None:
    await websocket.accept()
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return


async def _echo(websocket: WebSocket) -> None:
    await websocket.accept()
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        if '"media"' in (message.get("text") or "")[:20]:
            await websocket.send_text(_SILENCE)


async def _batch(websocket: WebSocket) -> None:
    await websocket.accept()
    media = 0
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        if '"media"' in (message.get("text") or "")[:20]:
            media += 1
            if media % BATCH == 0:
                await websocket.send_text(MEDIA_100MS)


app = Starlette(routes=[Route("/healthz", _healthz), WebSocketRoute("/twilio/media", _media)])
batch_app = Starlette(routes=[Route("/healthz", _healthz), WebSocketRoute("/twilio/media", _batch)])
echo_app = Starlette(routes=[Route("/healthz", _healthz), WebSocketRoute("/twilio/media", _echo)])
