"""Who may use the bridge: each carrier's request signature on its webhooks and its media upgrade.

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

import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Mapping
from typing import Any

from starlette.requests import HTTPConnection, Request
from starlette.responses import PlainTextResponse
from starlette.websockets import WebSocket

from bridge.carriers.exotel import signature as exotel_signature
from bridge.carriers.plivo import signature as plivo_signature
from bridge.carriers.signalwire import signature as signalwire_signature
from bridge.carriers.telnyx import signature as telnyx_signature
from bridge.carriers.twilio.signature import SIGNATURE_HEADER, is_valid_signature
from bridge.carriers.twilio.twiml import public_base_url
from bridge.carriers.vonage import signature as vonage_signature
from bridge.config import CarrierSettings, Settings

__all__ = [
    "MEDIA_TOKEN_TTL_S",
    "carrier_media_allowed",
    "carrier_webhook_allowed",
    "media_allowed",
    "media_token",
    "refuse_upgrade",
    "voice_allowed",
    "warn_carriers_unsigned",
    "warn_if_unsigned",
]

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


# --------------------------------------------------------------- the other carriers
#
# Each carrier signs its webhooks its own way (bridge/carriers/<name>/signature.py); the check runs
# only when that carrier's secret is set. None of them signs its media upgrade the way Twilio does,
# so when a carrier's secret is set, the answer document names a stream URL with a short-lived
# token in its path (`media_token`), an HMAC that only this deployment can make, and the upgrade
# must bring it back. Exotel may also reach a static wss:// URL with Basic auth, as it documents.

MEDIA_TOKEN_TTL_S = 600
_PROCESS_KEY = secrets.token_bytes(32)


def warn_carriers_unsigned(carriers: CarrierSettings) -> None:
    """One line naming the carriers whose requests are not checked (their routes still answer)."""
    unsigned = [name for name in ("signalwire", "telnyx", "plivo", "vonage", "exotel") if not carriers.secret(name)]
    if unsigned:
        log.info("carriers without a signature secret (their webhooks and media sockets are not checked): %s",
                 ", ".join(unsigned))


def _token_key(settings: Settings, carrier: str) -> bytes:
    """Key material every worker of a deployment shares: the carrier's own shared secret, else
    another secret of the deployment, else (single process only) a random one. Telnyx's setting
    is a public key, so it is never used as a key."""
    c = settings.carriers
    for secret in (None if carrier == "telnyx" else c.secret(carrier), c.plivo_auth_token, c.vonage_signature_secret,
                   c.signalwire_signing_key, c.exotel_api_token, settings.server.twilio_auth_token,
                   settings.elevenlabs.api_key):
        if secret:
            return hashlib.sha256(b"bridge media token\0" + secret.encode()).digest()
    return _PROCESS_KEY


def media_token(settings: Settings, carrier: str, now: float) -> str:
    """``<expiry>.<mac>``: lets one media upgrade in for `MEDIA_TOKEN_TTL_S` seconds."""
    expires = int(now) + MEDIA_TOKEN_TTL_S
    mac = hmac.new(_token_key(settings, carrier), f"{carrier}:{expires}".encode(), hashlib.sha256).hexdigest()
    return f"{expires}.{mac[:32]}"


def _token_ok(settings: Settings, carrier: str, token: str | None, now: float) -> bool:
    expires, _, mac = (token or "").partition(".")
    if not expires.isdigit() or int(expires) < now or int(expires) > now + MEDIA_TOKEN_TTL_S + 60:
        return False
    good = hmac.new(_token_key(settings, carrier), f"{carrier}:{expires}".encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(good[:32].encode(), mac.encode("utf-8", "replace"))


def _refused(conn: HTTPConnection, carrier: str, why: str) -> bool:
    client = conn.client.host if conn.client else "unknown client"
    log.warning("refused %s from %s: %s (%s)", conn.url.path, client, why, carrier)
    return False


def _exotel_ok(conn: HTTPConnection, c: CarrierSettings) -> str | None:
    """Why Exotel's request fails its configured checks, or None if it passes them all."""
    if c.exotel_api_token and not exotel_signature.is_valid_basic(
            conn.headers.get("authorization"), c.exotel_api_key or "", c.exotel_api_token):
        return "no valid Basic auth"
    networks = exotel_signature.parse_networks(c.exotel_allowed_ips or "")
    if networks and not exotel_signature.ip_allowed(conn.client.host if conn.client else None, networks):
        return "address not in exotel_allowed_ips"
    return None


async def carrier_webhook_allowed(carrier: str, request: Request, settings: Settings) -> bool:
    """Whether a webhook request is the carrier's, by its own signature scheme (no secret: yes)."""
    c = settings.carriers
    secret = c.secret(carrier)
    if not secret:
        return True
    if carrier == "exotel":
        why = _exotel_ok(request, c)
        return True if why is None else _refused(request, carrier, why)
    body = await request.body()
    url = _signed_url(request, settings.server.public_url, websocket=False)
    headers = request.headers
    ok = False
    if carrier == "telnyx":
        ok = telnyx_signature.is_valid_signature(telnyx_signature.public_key(secret), headers, body, time.time())
    elif carrier == "vonage":
        ok = vonage_signature.is_valid_token(secret, headers.get("authorization"), body or None)
    elif url is not None and carrier == "plivo":
        params = await _form(request) if request.method == "POST" else None
        ok = plivo_signature.is_valid_signature(secret, request.method, url, params,
                                                headers.get(plivo_signature.NONCE_HEADER),
                                                headers.get(plivo_signature.SIGNATURE_HEADER))
    elif url is not None and carrier == "signalwire":
        given = headers.get(signalwire_signature.SIGNATURE_HEADER, "")
        if headers.get("content-type", "").startswith("application/json"):
            ok = signalwire_signature.is_valid_json_signature(secret, url, body, given)
        else:
            ok = signalwire_signature.is_valid_signature(secret, url, await _form(request), given)
    return ok or _refused(request, carrier, "no valid signature" if url or carrier in ("telnyx", "vonage")
                          else "no public URL (set PUBLIC_URL)")


async def _form(request: Request) -> Mapping[str, Any]:
    try:
        return await request.form()
    except Exception:  # a body that does not parse is not the carrier's
        return {"": "unparsable body"}


def carrier_media_allowed(carrier: str, websocket: WebSocket, settings: Settings) -> bool:
    """Whether a media upgrade may open a call: the answer's token, or Exotel's own checks."""
    c = settings.carriers
    if not c.secret(carrier):
        return True
    if _token_ok(settings, carrier, websocket.path_params.get("token"), time.time()):
        return True
    if carrier == "exotel" and c.exotel_api_token and _exotel_ok(websocket, c) is None:
        return True
    return _refused(websocket, carrier, "no valid media token")
