"""The Starlette app: Twilio's routes, the other carriers' (`carrier_routes`), and the lifespan.

``bridge.server.app:app`` needs no arguments: settings come from the environment and
``config/bridge.toml``; an invalid setting stops start-up with one line naming it.
``create_app(settings)`` builds one for tests and tools.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from bridge.agents.base import Agent
from bridge.agents.tools import TransferPolicy
from bridge.carriers.base import CarrierCodec, call_settings_for
from bridge.carriers.twilio.twiml import AFTER_PATH, busy_twiml, media_stream_url, public_base_url, stream_twiml
from bridge.config import ConfigError, Settings, load_settings
from bridge.core.audio import PHONE
from bridge.core.budget import AecBudget
from bridge.server import factories, guard, metrics
from bridge.server.asgi import KeepAsgiChannel
from bridge.server.call_control import Outcome, Outcomes, answered_by_machine, control_routes
from bridge.server.carrier_routes import carrier_routes
from bridge.server.drain import Drainer
from bridge.server.records import Records
from bridge.server.session import CallSession
from bridge.server.warm import CallTts, webhook_call_id

__all__ = ["WS_MAX_SIZE", "create_app"]

log = logging.getLogger("bridge.server.app")

WS_MAX_SIZE = 1 << 20
"""The WebSocket layer's own limit: bigger frames are refused before they are read into memory.
Between ``server.max_message_bytes`` and this, a message is read but ignored unparsed."""

BUSY_MESSAGE = "Sorry, all our lines are busy right now. Please call again in a few minutes."


@dataclass
class Bridge:
    """What the app holds across requests: settings and the calls now live."""

    settings: Settings
    make_tts: factories.MakeTts
    make_agent: Callable[[Settings], Agent]
    outcomes: Outcomes  # what each call's agent decided (hang up, transfer), for Twilio's <Connect action>
    calls: set[CallSession] = field(default_factory=set)
    draining: bool = False
    load: float = 0.0  # the share of a core this worker's process used over the last second (`_watch_busy`)

    @property
    def full(self) -> bool:
        """No call at all may start here: draining, or ``max_calls`` live. A media stream is refused too."""
        return self.draining or len(self.calls) >= self.settings.server.max_calls

    def refusal(self) -> str:
        """Why new calls hear "busy" at the webhook now ("" while they do not): full, or the worker
        is over ``server.max_load``. A stream whose call was answered (here, or by another worker
        behind the same balancer) is still taken while the worker is not full: refusing it would
        fail a call already promised."""
        server = self.settings.server
        if self.draining:
            return "draining"
        if len(self.calls) >= server.max_calls:
            return f"{len(self.calls)} calls live (max_calls {server.max_calls})"
        if self.overloaded:
            return f"worker busy (load {self.load:.2f}, max_load {server.max_load:.2f})"
        return ""

    def turns_away(self, what: str) -> bool:
        """Whether a new call (``what``, for the log) hears "busy" at its webhook; if so, logged and counted."""
        refusal = self.refusal()
        if refusal:
            log.warning("turning %s away: %s", what, refusal)
            metrics.CALLS_REJECTED.inc()
        return bool(refusal)

    @property
    def overloaded(self) -> bool:
        """The last second used more than ``server.max_load`` of a core (when that is set)."""
        return 0.0 < self.settings.server.max_load <= self.load


def create_app(
    settings: Settings,
    *,
    make_tts: factories.MakeTts = factories.make_tts,
    make_agent: Callable[[Settings], Agent] = factories.make_agent,
) -> Starlette:
    transfers = TransferPolicy.parse(settings.agent.transfer_numbers or "")
    bridge = Bridge(settings, make_tts, make_agent, Outcomes(transfers))
    drainer = Drainer(bridge, settings.server.drain_timeout_s, goodbye=settings.server.drain_goodbye)
    records = Records(settings)
    aec_budget = AecBudget(settings.aec.max_engaged)  # this worker's echo cancellers, shared by its calls

    def busy(at: float, share: float) -> None:
        """The process's share of a core over the last second (`_watch_busy`): near a full core the
        worker takes on no echo canceller (`AecBudget.busy`), over ``server.max_load`` no new call."""
        bridge.load = share
        aec_budget.busy(at, share)

    engine, warning = factories.tts_engine(settings), factories.voice_warning(settings)
    pool = factories.make_warm_pool(settings, lambda rate: bridge.make_tts(settings, _loop_clock(), rate))

    async def healthz(request: Request) -> JSONResponse:
        """503 while this worker drains or is over ``server.max_load``, so that a load balancer or a
        readiness probe sends new calls to another; else 200. (At ``max_calls`` it stays 200: the
        count frees as calls end, and the webhook's busy message covers the moment.)"""
        status = "draining" if bridge.draining else "busy" if bridge.overloaded else "ok"
        body: dict[str, object] = {"status": status, "calls": len(bridge.calls), "voice": engine, "warning": warning}
        if status == "busy":
            body["load"] = round(bridge.load, 2)
        return JSONResponse(body, status_code=200 if status == "ok" else 503)

    async def voice(request: Request) -> Response:
        if not await guard.voice_allowed(request, settings.server.public_url, settings.server.twilio_auth_token):
            return Response("Forbidden", status_code=403)
        base = public_base_url(
            settings.server.public_url, request.headers, request.url.scheme, request.url.netloc
        )
        if bridge.turns_away("a call"):
            return Response(busy_twiml(BUSY_MESSAGE), media_type="text/xml")
        # Twilio streams only to wss://, whatever scheme reached us (ngrok and proxies end TLS).
        stream_url = "wss://" + media_stream_url(base).split("://", 1)[1]
        caller = await records.caller(request)  # From/To come back in the stream's `start` for the record
        if pool is not None:  # the call's TTS socket opens now, while Twilio connects the stream
            pool.warm(await webhook_call_id("twilio", request), PHONE.rate)
        machine = await answered_by_machine(request)  # an outbound call's answering-machine detection
        parameters = {**(caller or {}), **({"mode": "voicemail"} if machine else {})}
        return Response(stream_twiml(stream_url, parameters, action=base + AFTER_PATH), media_type="text/xml")

    async def media(websocket: WebSocket) -> None:
        if not guard.media_allowed(websocket, settings.server.public_url, settings.server.twilio_auth_token):
            await websocket.close(code=1008)  # before accept: the upgrade is refused with HTTP 403
            return
        await serve_call(websocket, None)

    async def serve_call(websocket: WebSocket, codec: CarrierCodec | None) -> None:
        """Run one call on an allowed media upgrade, with the carrier's codec (None: Twilio's)."""
        if bridge.full:
            log.warning("refused a media stream: %s", bridge.refusal())
            metrics.CALLS_REJECTED.inc()
            await guard.refuse_upgrade(websocket, 503, "busy")
            return
        terms = factories.call_settings(settings, aec_budget)
        terms = terms if codec is None else call_settings_for(terms, codec)  # the carrier's rate, 16 kHz on Vonage
        session = CallSession(
            websocket,
            settings=terms,
            tts=CallTts(lambda: bridge.make_tts(settings, _loop_clock(), terms.audio.rate), pool, terms.audio.rate),
            agent=bridge.make_agent(settings),
            start_timeout_s=settings.server.start_timeout_s,
            max_message_bytes=settings.server.max_message_bytes,
            codec=codec,
            judge=factories.make_judge(settings),
            stt=factories.make_stt(settings),
            transfers=transfers,
            on_outcome=lambda sid, kind, to: bridge.outcomes.record(sid, Outcome(kind, to)),
        )
        records.attach(session)
        bridge.calls.add(session)  # before any await, so simultaneous upgrades cannot pass max_calls
        try:
            await websocket.accept()
            await session.run()
        except Exception:
            log.exception("call %s failed; other calls are unaffected", session.call_id)
        finally:
            bridge.calls.discard(session)

    def switch_to_voicemail(call_sid: str) -> bool:
        """The carrier's late machine verdict for a live call: that call leaves its voicemail message."""
        for session in bridge.calls:
            if call_sid and session.call_sid == call_sid:
                session.voicemail()
                return True
        return False

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        _configure_logging(settings.server.log_level)
        for line in settings.describe():
            log.info("%s", line)
        log.info("voice engine: %s", engine)
        if warning:
            log.warning("%s", warning)
        guard.warn_if_unsigned(settings.server.twilio_auth_token)
        guard.warn_carriers_unsigned(settings.carriers)
        drainer.install()  # SIGTERM drains live calls first: see bridge.server.drain
        await records.start()
        watching = asyncio.create_task(_watch_busy(busy))
        yield
        watching.cancel()
        drainer.uninstall()
        bridge.draining = True
        if pool is not None:
            await pool.aclose()
        await records.stop()

    app = Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/metrics", metrics.metrics_endpoint, methods=["GET"]),
            Route("/twilio/voice", voice, methods=["POST", "GET"]),
            WebSocketRoute("/twilio/media", media),
            *control_routes(settings, bridge.outcomes, voicemail=switch_to_voicemail),
            *carrier_routes(settings, bridge.turns_away, serve_call, pool),
            *records.routes(),
        ],
        lifespan=lifespan,
        middleware=[Middleware(KeepAsgiChannel)],  # the calls' media skip Starlette's wrappers (bridge.server.asgi)
    )
    app.state.bridge = bridge
    app.state.drainer = drainer
    app.state.records = records
    return app


def _loop_clock() -> Callable[[], float]:
    import asyncio

    return asyncio.get_running_loop().time


def _configure_logging(level: str) -> None:
    logger = logging.getLogger("bridge")
    logger.setLevel(level.upper())
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False


_app: Starlette | None = None


def __getattr__(name: str) -> Any:
    """``bridge.server.app:app`` is built on first use, so importing this module never reads settings."""
    global _app
    if name != "app":
        raise AttributeError(name)
    if _app is None:
        try:
            _app = create_app(load_settings())
        except ConfigError as exc:
            print(f"bridge: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
    return _app


async def _watch_busy(report: Callable[[float, float], None], every_s: float = 1.0) -> None:
    """``report(at, share)`` how busy this process is, once a second: the share of a core it used
    since the last report."""
    loop = asyncio.get_running_loop()
    cpu, wall = time.process_time(), loop.time()
    while True:
        await asyncio.sleep(every_s)
        now_cpu, now = time.process_time(), loop.time()
        report(now, (now_cpu - cpu) / max(now - wall, 1e-3))
        cpu, wall = now_cpu, now
