"""The I/O floor: what uvicorn and Starlette alone cost under the benchmark's load.

    python -m bench.load --quick --steps 50 --app bench.floor:app --no-docs

An app that accepts each media WebSocket and reads every message until the caller hangs up, doing
nothing with them. The generators' calls then "fail" (no greeting, no reply), but they stream
their caller audio for the whole call as a live call does, so the server's CPU per call-minute is
the share of the bridge's own figure that no code of ours can remove: the event loop, the
sockets, the WebSocket frames and the ASGI hand-off of 50 messages a second per call.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

__all__ = ["app"]


async def _healthz(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


async def _media(websocket: WebSocket) -> None:
    await websocket.accept()
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return


app = Starlette(routes=[Route("/healthz", _healthz), WebSocketRoute("/twilio/media", _media)])
