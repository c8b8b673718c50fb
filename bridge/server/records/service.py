"""Call records, assembled: the writer, the per-call recorder, and the routes.

The app makes one `Records` from the settings, gives every call session to `attach` (which
sets the session's observer hooks), starts and stops it with the server's lifespan, and mounts
`routes`. With ``record_calls = false`` nothing is recorded and no database is touched; the
routes still answer (401 without the token), showing what an earlier run recorded.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bridge.server.records import api, pages
from bridge.server.records.access import admin_token, redact_access_logs
from bridge.server.records.recorder import CallRecorder
from bridge.server.records.store import Store
from bridge.server.records.writer import RecordWriter

if TYPE_CHECKING:
    from bridge.config import Settings
    from bridge.server.session import CallSession

__all__ = ["Records"]

log = logging.getLogger("bridge.server.records")
_Handler = Callable[["Records", Request], Awaitable[Response]]


class Records:
    """Everything call records need for one app."""

    def __init__(self, settings: Settings) -> None:
        server = settings.server
        self.enabled = server.record_calls
        self.audio = server.record_audio
        self.token = admin_token(server.admin_token)
        self.token_configured = bool(server.admin_token)
        self.store = Store(server.database_url)
        self.writer = RecordWriter(self.store, retention_days=server.record_retention_days,
                                   recordings_dir=Path(server.recordings_dir))

    def attach(self, session: CallSession) -> None:
        """Record this call: the recorder watches what the session's core sees and does."""
        if not self.enabled:
            return
        core = session.call.settings
        recorder = CallRecorder(self.writer.submit, lambda: session.call.snapshot, end_of_turn_ms=core.vad.end_ms,
                                preroll_ms=core.preroll_ms, audio=self.audio, audio_format=core.audio)
        session.on_event = recorder.event
        session.on_action = recorder.action
        session.on_end = recorder.end

    async def caller(self, request: Request) -> dict[str, str]:
        """The webhook's From and To, passed as stream parameters so the record knows who called."""
        if not self.enabled:
            return {}
        try:
            form = await request.form() if request.method == "POST" else request.query_params
            return {key.lower(): str(form.get(key) or "")[:64] for key in ("From", "To") if form.get(key)}
        except Exception:  # a body that does not parse: the call goes on, its record without numbers
            return {}

    async def start(self) -> None:
        redact_access_logs()
        if not self.token_configured:
            log.warning("call records: no BRIDGE_ADMIN_TOKEN set; /calls and /api/calls take the token "
                        "made at start-up (`bridge serve` prints the link)")
        if self.enabled:
            await self.writer.start()
            where = self.store.dialect
            log.info("call records: kept in %s for %d days%s", where, self.writer.retention_days,
                     ", with audio recordings" if self.audio else "")

    async def stop(self) -> None:
        if self.enabled:
            await self.writer.stop()
        else:
            await self.store.aclose()

    def routes(self) -> list[Route]:
        def bound(handler: _Handler) -> Callable[[Request], Awaitable[Response]]:
            return partial(handler, self)

        return [
            Route("/api/calls", bound(api.list_calls), methods=["GET"]),
            Route("/api/calls/{call_id}", bound(api.get_call), methods=["GET"]),
            Route("/calls", bound(pages.calls_page), methods=["GET"]),
            Route("/calls/{call_id}", bound(pages.call_page), methods=["GET"]),
            Route("/calls/{call_id}/audio.wav", bound(pages.audio_file), methods=["GET"]),
        ]
