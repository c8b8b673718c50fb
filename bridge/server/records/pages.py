"""The server-rendered pages: ``/calls`` (a table of calls) and ``/calls/{call_id}`` (one call's
timeline, turns and recording). Jinja2 templates in ``bridge/server/templates``; the small
stylesheet is inlined, so a page is one self-contained response that works offline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.templating import Jinja2Templates

from bridge.server.records.access import page_denied
from bridge.server.records.api import Records, call_summary, page_size
from bridge.server.records.model import mask_number
from bridge.server.records.store import decode_cursor, encode_cursor
from bridge.server.records.timeline import latency_bars, timeline

__all__ = ["audio_file", "call_page", "calls_page"]

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
_templates = Jinja2Templates(directory=str(TEMPLATES))
_CSS = (TEMPLATES / "records.css").read_text(encoding="utf-8")


def _render(request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
    response = _templates.TemplateResponse(request, name, {"css": _CSS, **context}, status_code=status)
    response.headers["Cache-Control"] = "no-store"
    response.headers["Content-Security-Policy"] = "default-src 'self'; style-src 'unsafe-inline'"
    return response


def _unavailable(request: Request) -> Response:
    return _render(request, "error.html", {"message": "The records database cannot be read right now."}, 503)


async def calls_page(records: Records, request: Request) -> Response:
    if (denied := page_denied(request, records.token)) is not None:
        return denied
    raw = request.query_params.get("cursor")
    cursor = decode_cursor(raw) if raw else None
    limit = page_size(request)
    try:
        rows = await records.store.list_calls(limit + 1, cursor)
    except Exception:
        return _unavailable(request)
    more = len(rows) > limit
    rows = rows[:limit]
    older = encode_cursor(rows[-1]["started_at"], rows[-1]["call_id"]) if more else None
    return _render(request, "calls.html", {"calls": [call_summary(r) for r in rows], "older": older})


async def call_page(records: Records, request: Request) -> Response:
    if (denied := page_denied(request, records.token)) is not None:
        return denied
    try:
        call = await records.store.get_call(request.path_params["call_id"])
    except Exception:
        return _unavailable(request)
    if call is None:
        return _render(request, "error.html", {"message": "No such call."}, 404)
    longest = max([t.get(k) or 0.0 for t in call["turns"] for k in
                   ("llm_first_token_ms", "tts_first_audio_ms", "first_audio_sent_ms", "end_of_turn_ms")] + [0.0])
    turns = [{**t, "bars": latency_bars(t, longest)} for t in call["turns"]]
    summary = call_summary(call) | {"from_masked": mask_number(call["from_number"])}
    return _render(request, "call.html", {"call": call, "summary": summary, "turns": turns,
                                          "timeline": timeline(call)})


async def audio_file(records: Records, request: Request) -> Response:
    if (denied := page_denied(request, records.token)) is not None:
        return denied
    try:
        call = await records.store.get_call(request.path_params["call_id"])
    except Exception:
        return PlainTextResponse("the records database is unavailable", status_code=503)
    path = Path(call["audio_path"]) if call is not None and call["audio_path"] else None
    if path is None or not path.is_file():
        return PlainTextResponse("no recording of this call", status_code=404)
    return FileResponse(path, media_type="audio/wav", headers={"Cache-Control": "no-store"})


