"""Webhooks and media sockets for the carriers beside Twilio (docs/carriers.md).

Per carrier: the webhook its console points at answers the document that connects the call to
our media WebSocket, and that socket runs the call with the carrier's codec. Everything past the
codec (the core, the TTS, the agent) is the same call on every carrier.

| carrier | webhook | answer | media socket |
| --- | --- | --- | --- |
| SignalWire | POST /signalwire/voice | cXML ``<Connect><Stream>`` | /signalwire/media |
| Telnyx | POST /telnyx/voice | TeXML ``<Connect><Stream bidirectionalMode="rtp">`` | /telnyx/media |
| Plivo | POST /plivo/voice | ``<Stream bidirectional="true">`` | /plivo/media |
| Vonage | GET/POST /vonage/answer, POST /vonage/events | NCCO ``connect`` → ``websocket`` | /vonage/media |
| Exotel | GET /exotel/voice | ``{"url": "wss://..."}`` | /exotel/media |

With a carrier's secret set, its webhooks must carry its signature and the stream URL gets a
short-lived token path segment (`bridge.server.guard.media_token`) that the upgrade must bring back.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket

from bridge.carriers.base import CarrierCodec, make_codec
from bridge.carriers.exotel.answer import stream_url_json
from bridge.carriers.plivo.answer import busy_xml, stream_xml
from bridge.carriers.signalwire.answer import busy_cxml, stream_cxml
from bridge.carriers.telnyx.answer import busy_texml, stream_texml
from bridge.carriers.twilio.twiml import public_base_url
from bridge.carriers.vonage.answer import busy_ncco, connect_ncco
from bridge.config import Settings
from bridge.server import guard
from bridge.server.warm import WarmPool, webhook_call_id

__all__ = ["OTHER_CARRIERS", "carrier_routes", "stream_url"]


OTHER_CARRIERS: Final = ("signalwire", "telnyx", "plivo", "vonage", "exotel")
BUSY_MESSAGE: Final = "Sorry, all our lines are busy right now. Please call again in a few minutes."
_XML: Final = "application/xml"

ServeCall = Callable[[WebSocket, CarrierCodec | None], Awaitable[None]]


def stream_url(settings: Settings, request: Request, carrier: str) -> str:
    """The ``wss://`` media URL for ``carrier``, as the carrier must reach it (with a token when signed)."""
    base = public_base_url(settings.server.public_url, request.headers, request.url.scheme, request.url.netloc)
    url = "wss://" + base.split("://", 1)[1] + f"/{carrier}/media"
    if settings.carriers.secret(carrier):
        url += "/" + guard.media_token(settings, carrier, time.time())
    return url


def _answer(carrier: str, settings: Settings, request: Request, full: bool) -> Response:
    """The carrier's answer document, or its polite "busy" when the bridge turns calls away."""
    url = "" if full else stream_url(settings, request, carrier)
    c = settings.carriers
    match carrier:
        case "signalwire":
            return Response(busy_cxml(BUSY_MESSAGE) if full else stream_cxml(url), media_type=_XML)
        case "telnyx":
            return Response(busy_texml(BUSY_MESSAGE) if full else stream_texml(url), media_type=_XML)
        case "plivo":
            return Response(busy_xml(BUSY_MESSAGE) if full else stream_xml(url), media_type=_XML)
        case "vonage":
            uuid = request.query_params.get("uuid", "")
            return JSONResponse(busy_ncco(BUSY_MESSAGE) if full else connect_ncco(url, c.vonage_rate, uuid))
        case _:
            if full:
                return Response("busy", status_code=503, headers={"Retry-After": "10"})
            return JSONResponse(stream_url_json(url, c.exotel_rate))


def carrier_routes(settings: Settings, turns_away: Callable[[str], bool], serve_call: ServeCall,
                   pool: WarmPool | None = None) -> list[BaseRoute]:
    """Every carrier's webhook and media routes; ``turns_away`` says whether a new call hears "busy"
    (and logs and counts it), ``serve_call`` runs an allowed call (see app.py), and ``pool`` opens the
    TTS socket of each call answered (`bridge.server.warm`)."""

    def webhook(carrier: str) -> Callable[[Request], Awaitable[Response]]:
        async def answer(request: Request) -> Response:
            if not await guard.carrier_webhook_allowed(carrier, request, settings):
                return Response("Forbidden", status_code=403)
            if carrier == "vonage" and request.method == "POST":
                request = await _vonage_post_as_query(request)
            busy = turns_away(f"a {carrier} call")
            if pool is not None and not busy:
                rate = _codec(carrier, settings, request.query_params).audio.rate  # the call's, as its stream will be
                pool.warm(await webhook_call_id(carrier, request), rate)
            return _answer(carrier, settings, request, busy)
        return answer

    async def vonage_events(request: Request) -> Response:
        if not await guard.carrier_webhook_allowed("vonage", request, settings):
            return Response("Forbidden", status_code=403)
        return Response(status_code=204)

    def media(carrier: str) -> Callable[[WebSocket], Awaitable[None]]:
        async def stream(websocket: WebSocket) -> None:
            if not guard.carrier_media_allowed(carrier, websocket, settings):
                await websocket.close(code=1008)  # before accept: refused with HTTP 403
                return
            await serve_call(websocket, _codec(carrier, settings, websocket.query_params))
        return stream

    methods = {"signalwire": ["POST"], "telnyx": ["POST"], "plivo": ["POST", "GET"], "vonage": ["GET", "POST"],
               "exotel": ["GET"]}
    paths = {"vonage": "/vonage/answer"}
    routes: list[BaseRoute] = [Route("/vonage/events", vonage_events, methods=["POST"])]
    for name in OTHER_CARRIERS:
        routes.append(Route(paths.get(name, f"/{name}/voice"), webhook(name), methods=methods[name]))
        routes.append(WebSocketRoute(f"/{name}/media", media(name)))
        routes.append(WebSocketRoute(f"/{name}/media/{{token}}", media(name)))
    return routes


def _codec(carrier: str, settings: Settings, query: Mapping[str, str]) -> CarrierCodec:
    """The carrier's codec for one stream (``query``: the stream URL's parameters, which may ask Exotel
    for a rate); the webhook builds one too, to learn the rate the call will run at."""
    limit = settings.server.max_message_bytes
    if carrier == "vonage":
        return make_codec(carrier, rate=settings.carriers.vonage_rate, max_message_bytes=limit)
    if carrier == "exotel":
        asked = query.get("sample-rate", "")
        rate = int(asked) if asked in ("8000", "16000", "24000") else settings.carriers.exotel_rate
        return make_codec(carrier, rate=rate, max_message_bytes=max(limit, 128 * 1024))
    return make_codec(carrier, max_message_bytes=limit)


async def _vonage_post_as_query(request: Request) -> Request:
    """Vonage's answer URL may be POSTed with a JSON body; only its ``uuid`` matters here."""
    try:
        body: Any = json.loads(await request.body() or b"{}")
    except ValueError:
        body = {}
    uuid = body.get("uuid") if isinstance(body, dict) else None
    if not isinstance(uuid, str) or not uuid:
        return request
    scope = dict(request.scope)
    scope["query_string"] = urlencode({"uuid": uuid[:128]}).encode()
    return Request(scope)
