"""The media stream's own ASGI channel, kept for the call's hot path.

A call sends up to 50 messages a second to the phone and reads 50. Through Starlette each of
them passes ``WebSocket.send``'s state checks and, for sends, the two exception-handler wrappers
Starlette puts around ``send`` (``starlette._exception_handler``), which can do nothing for a
WebSocket already accepted. `KeepAsgiChannel`, outermost in the app, notes the server's own
``receive`` and ``send`` in the scope; the call's session uses them once the socket is accepted
(and Starlette's ``WebSocket`` for the handshake and the close). The server's protections stay
where they are: the largest message it accepts (``--ws-max-size``) is the server's, not
Starlette's. Measured in docs/benchmarks.md ("Optimisations, before and after").
"""

from __future__ import annotations

from typing import Final

from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["CHANNEL", "KeepAsgiChannel"]

CHANNEL: Final = "bridge.asgi_channel"
"""The scope key under which a WebSocket's raw ``(receive, send)`` are kept."""


class KeepAsgiChannel:
    """Pure ASGI middleware: every WebSocket scope carries the server's ``(receive, send)``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            scope[CHANNEL] = (receive, send)
        await self.app(scope, receive, send)
