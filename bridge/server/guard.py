"""Who may use the bridge: Twilio's ``X-Twilio-Signature`` on the voice webhook and the media upgrade.

Every media stream opens a paid TTS session, so with ``TWILIO_AUTH_TOKEN`` set nothing is served
to a request Twilio did not sign. The signature covers the URL *Twilio* requested, which behind
ngrok or a proxy is not the one this server sees: it is rebuilt from ``PUBLIC_URL``, else the
``X-Forwarded-Proto`` / ``X-Forwarded-Host`` headers, else the request itself (the same rule
that writes the ``<Stream url>`` into our TwiML, so the two always agree). The media URL is the
``wss://`` one Twilio was given. The upgrade is checked *before* it is accepted: a refused one
costs one HTTP 403 and nothing else.

A refusal is logged with the client's address and the URL checked, never with the signature or
the token. The algorithm itself is `bridge.carriers.twilio.signature` (checked against twilio-python's
``RequestValidator``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from starlette.requests import HTTPConnection, Request
from starlette.responses import PlainTextResponse
from starlette.websockets import WebSocket

from bridge.carriers.twilio.signature import SIGNATURE_HEADER, is_valid_signature
from bridge.carriers.twilio.twiml import public_base_url

__all__ = ["media_allowed", "refuse_upgrade", "voice_allowed", "warn_if_unsigned"]

log = logging.getLogger("bridge.server.guard")


def warn_if_unsigned(auth_token: str | None) -> None:
    """One loud line at start-up when nothing is checked."""
    if not auth_token:
        log.warning("TWILIO_AUTH_TOKEN is not set: /twilio/voice and /twilio/media accept UNSIGNED requests, "
                    "so anyone who finds this server can open calls on your TTS account; set it for any "
                    "public deployment")


def _signed_url(conn: HTTPConnection, public_url: str | None, websocket: bool) -> str | None:
    """The URL Twilio signed for this request, or None when no public host can be made out."""
    try:
        base = public_base_url(public_url, conn.headers, conn.url.scheme, conn.url.netloc)
    except ValueError:
        return None
    if websocket:  # Twilio streams only to wss://, whatever scheme reached us (as in our TwiML)
        base = "wss://" + base.split("://", 1)[1]
    query = conn.url.query
    return base + conn.url.path + (f"?{query}" if query else "")


def _check(conn: HTTPConnection, token: str, url: str | None, params: Mapping[str, Any] | None) -> bool:
    signature = conn.headers.get(SIGNATURE_HEADER)
    if signature is not None and url is not None and is_valid_signature(token, url, params, signature):
        return True
    client = conn.client.host if conn.client else "unknown client"
    what = "no" if signature is None else "an invalid"
    checked = url.split("?", 1)[0] if url else "no public URL (set PUBLIC_URL)"
    log.warning("refused %s from %s: %s %s (checked against %s)", conn.url.path, client, what, SIGNATURE_HEADER,
                checked)
    return False


async def voice_allowed(request: Request, public_url: str | None, auth_token: str | None) -> bool:
    """Whether the webhook request is Twilio's: URL plus form parameters, signed with the token."""
    if not auth_token:
        return True
    params: Mapping[str, Any] | None = None
    if request.method == "POST":
        try:
            params = await request.form()
        except Exception:  # a body that does not parse is not Twilio's
            params = {"": "unparsable body"}
    return _check(request, auth_token, _signed_url(request, public_url, websocket=False), params)


def media_allowed(websocket: WebSocket, public_url: str | None, auth_token: str | None) -> bool:
    """Whether the media upgrade is Twilio's: its ``wss://`` URL, no parameters, signed."""
    if not auth_token:
        return True
    return _check(websocket, auth_token, _signed_url(websocket, public_url, websocket=True), None)


async def refuse_upgrade(websocket: WebSocket, status: int, text: str) -> None:
    """Answer an upgrade with a plain HTTP error instead of a WebSocket (the server must support
    the ASGI denial-response extension, as uvicorn does; otherwise a close before accept, which
    servers turn into HTTP 403)."""
    headers = {"Retry-After": "10"} if status == 503 else None
    try:
        await websocket.send_denial_response(PlainTextResponse(text, status_code=status, headers=headers))
    except RuntimeError:
        await websocket.close(code=1013 if status == 503 else 1008)
