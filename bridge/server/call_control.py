"""What the agent decides about the call itself, and calls the bridge places: the Twilio side.

A media stream cannot hang up or transfer a call; the TwiML after it can. So every stream is
answered with ``<Connect action="…/twilio/after">``: when the session closes the stream, Twilio
requests that URL with the ``CallSid``, and `Outcomes` knows what the agent decided for that call
— ``<Hangup/>``, or ``<Dial>`` to a number, checked once more against the allow-list here, where
the dialling actually happens, so no agent (or prompt injection) can reach any other number.

Outbound calls (``POST /calls`` with the admin token, and ``bridge dial``) go through Twilio's REST
API with the voice webhook as their ``Url``, so an answered call runs the same agent. With machine
detection Twilio reports ``AnsweredBy``; a machine gets the voicemail message, once, then a hang-up.
Outbound calls ask for Twilio's *asynchronous* machine detection as well: the call is answered at
once (no silence while Twilio listens) and Twilio's verdict arrives later at ``POST /twilio/amd``
(``AsyncAmdStatusCallback``); a machine verdict for a live call switches that call to voicemail.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bridge.agents.tools import TransferPolicy
from bridge.carriers.twilio.rest import TwilioRest, TwilioRestError
from bridge.carriers.twilio.twiml import AFTER_PATH, VOICE_PATH, dial_twiml, hangup_twiml, public_base_url
from bridge.config import Settings
from bridge.server import guard
from bridge.server.records.access import admin_token, api_denied

__all__ = [
    "AMD_PATH", "MACHINE", "MACHINE_ENDED", "Outcome", "Outcomes", "answered_by_machine", "control_routes",
    "outbound_call",
]

log = logging.getLogger("bridge.server.call_control")

AMD_PATH = "/twilio/amd"
MACHINE_ENDED = ("machine_end_beep", "machine_end_silence", "machine_end_other")
"""Verdicts after which a message is recorded (the greeting is over): time to leave ours."""

MACHINE = ("machine_start", "machine_end_beep", "machine_end_silence", "machine_end_other", "fax")


@dataclass(frozen=True, slots=True)
class Outcome:
    """How the agent ended a call: ``hangup``, or ``transfer`` to ``to``."""

    kind: str
    to: str = ""


class Outcomes:
    """CallSid → what the agent decided, kept until Twilio asks (bounded, and forgotten after an hour)."""

    def __init__(self, policy: TransferPolicy, *, keep: int = 10_000, ttl_s: float = 3600.0) -> None:
        self.policy = policy
        self._items: OrderedDict[str, tuple[float, Outcome]] = OrderedDict()
        self._keep, self._ttl = keep, ttl_s

    def record(self, call_sid: str, outcome: Outcome) -> None:
        self._items[call_sid] = (time.monotonic(), outcome)
        self._items.move_to_end(call_sid)
        while len(self._items) > self._keep:
            self._items.popitem(last=False)

    def twiml(self, call_sid: str) -> str:
        """The TwiML for a stream that ended: a dial to an allowed number, else a hang-up."""
        at, outcome = self._items.pop(call_sid, (0.0, Outcome("hangup")))
        if outcome.kind == "transfer" and time.monotonic() - at < self._ttl:
            refusal = self.policy.refusal(outcome.to)
            if refusal is None:
                log.info("call %s: transferring to %s", call_sid, outcome.to)
                return dial_twiml(outcome.to)
            log.warning("call %s: refused to dial %s: not on the transfer allow-list", call_sid, outcome.to[:20])
        return hangup_twiml()


async def answered_by_machine(request: Request) -> bool:
    """Whether the webhook says a machine answered (``AnsweredBy``); a body that does not parse says no."""
    try:
        form = await request.form() if request.method == "POST" else request.query_params
    except Exception:
        return False
    return str(form.get("AnsweredBy", "")).strip().lower() in MACHINE


async def outbound_call(request: Request, rest: TwilioRest | None, from_number: str | None, webhook_url: str,
                        configured_token: str | None, amd_url: str | None = None) -> Response:
    """``POST /calls`` ``{"to": "+1…", "machine_detection": true}``: place a call; 201 with its SID."""
    if (denied := api_denied(request, admin_token(configured_token))) is not None:
        return denied
    if rest is None or not from_number:
        return JSONResponse({"error": "outbound calls need TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN and "
                                      "TWILIO_FROM_NUMBER"}, status_code=503)
    try:
        body = await request.json()
    except ValueError:
        body = None
    to = body.get("to") if isinstance(body, dict) else None
    if not isinstance(to, str):
        return JSONResponse({"error": "the body must be JSON with 'to' (E.164)"}, status_code=400)
    try:
        detect = bool(body.get("machine_detection"))
        placed = await rest.place_call(to, from_number, webhook_url, detect_machine=detect,
                                       amd_callback=amd_url if detect else None)
    except ValueError as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
    except TwilioRestError as exc:
        log.warning("outbound call to %s failed: %s", to[:20], exc)
        return JSONResponse({"error": str(exc)}, status_code=502)
    log.info("placed call %s to %s", placed.sid, placed.to)
    return JSONResponse({"sid": placed.sid, "status": placed.status, "to": placed.to}, status_code=201)


def control_routes(settings: Settings, outcomes: Outcomes, rest: TwilioRest | None = None, *,
                   voicemail: Callable[[str], bool] | None = None) -> list[Route]:
    """``POST /twilio/after`` (the ``<Connect action>``: hang up or transfer), ``POST /twilio/amd``
    (the late machine verdict: ``voicemail(call_sid)`` switches a live call) and ``POST /calls``."""
    server = settings.server
    if rest is None and server.twilio_account_sid and server.twilio_auth_token:
        rest = TwilioRest(server.twilio_account_sid, server.twilio_auth_token, base_url=server.twilio_api_base_url)

    async def after(request: Request) -> Response:
        if not await guard.voice_allowed(request, server.public_url, server.twilio_auth_token):
            return Response("Forbidden", status_code=403)
        form = await request.form()
        call_sid = str(form.get("CallSid", ""))
        return Response(outcomes.twiml(call_sid), media_type="text/xml")

    async def calls(request: Request) -> Response:
        try:
            base = public_base_url(server.public_url, request.headers, request.url.scheme, request.url.netloc)
        except ValueError:
            return JSONResponse({"error": "set PUBLIC_URL: Twilio needs a public URL for the call's webhook"},
                                status_code=503)
        return await outbound_call(request, rest, server.twilio_from_number, base + VOICE_PATH, server.admin_token,
                                   base + AMD_PATH)

    async def amd(request: Request) -> Response:
        if not await guard.voice_allowed(request, server.public_url, server.twilio_auth_token):
            return Response("Forbidden", status_code=403)
        form = await request.form()
        call_sid, answered_by = str(form.get("CallSid", "")), str(form.get("AnsweredBy", "")).strip().lower()
        if answered_by in MACHINE_ENDED:
            switched = voicemail is not None and voicemail(call_sid)
            log.info("call %s: answered by a machine (%s)%s", call_sid[:40], answered_by,
                     "; leaving the voicemail message" if switched else "; no live call")
        return Response(status_code=204)

    return [Route(AFTER_PATH, after, methods=["POST"]), Route(AMD_PATH, amd, methods=["POST"]),
            Route("/calls", calls, methods=["POST"])]
