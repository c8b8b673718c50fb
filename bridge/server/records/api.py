"""``GET /api/calls`` (newest first, cursor paging) and ``GET /api/calls/{call_id}``, as JSON.

Lists mask the caller's and the callee's numbers; one call's full record shows them. Every
route answers 401 without the Bearer token, 503 while the database cannot be read.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bridge.server.records.access import api_denied
from bridge.server.records.model import mask_number
from bridge.server.records.store import Store, decode_cursor, encode_cursor


class Records(Protocol):
    """What the API and the pages read of the records service: its store and the token in force."""

    store: Store
    token: str

__all__ = ["Records", "call_json", "call_summary", "get_call", "list_calls", "page_size"]

log = logging.getLogger("bridge.server.records")
MAX_PAGE = 200


def page_size(request: Request, default: int = 50) -> int:
    try:
        return max(1, min(MAX_PAGE, int(request.query_params.get("limit", default))))
    except ValueError:
        return default


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def call_summary(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "call_id": row["call_id"], "carrier": row["carrier"],
        "from": mask_number(row["from_number"]), "to": mask_number(row["to_number"]),
        "started_at": _iso(row["started_at"]), "ended_at": _iso(row["ended_at"]), "duration_s": row["duration_s"],
        "ended_how": row["ended_how"], "turns": row["turns"], "barge_ins": row["barge_ins"],
        "tts_reconnects": row["tts_reconnects"], "median_reply_ms": row["median_reply_ms"],
        "recording": bool(row["audio_path"]), "aec_refused": row["aec_refused"],
    }


def call_json(call: dict[str, Any]) -> dict[str, Any]:
    """The whole record: the summary with full numbers; ``turns``, ``barge_ins`` and ``tts_reconnects`` are
    lists here (counts in the list), ``timeline`` the spans the page draws."""
    out = call_summary(call) | {"from": call["from_number"], "to": call["to_number"], "stream_id": call["stream_id"],
                                "end_detail": call["end_detail"]}
    def rows(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in item.items() if k != "call_id"} for item in items]

    out["turns"], out["barge_ins"] = rows(call["turns"]), rows(call["barge_ins"])
    out["timeline"] = rows(call["segments"])
    out["tts_reconnects"] = [
        r | {"downtime_ms": None if r["lost_s"] is None else round((r["connected_s"] - r["lost_s"]) * 1000, 1)}
        for r in rows(call["tts_reconnects"])]
    out["recording_url"] = f"/calls/{call['call_id']}/audio.wav" if call["audio_path"] else None
    return out


def _unavailable(exc: Exception) -> Response:
    log.warning("call records: cannot read the database (%s)", type(exc).__name__)
    return JSONResponse({"error": "the records database is unavailable"}, status_code=503)


async def list_calls(records: Records, request: Request) -> Response:
    if (denied := api_denied(request, records.token)) is not None:
        return denied
    raw = request.query_params.get("cursor")
    cursor = decode_cursor(raw) if raw else None
    if raw and cursor is None:
        return JSONResponse({"error": "bad cursor"}, status_code=400)
    limit = page_size(request)
    try:
        rows = await records.store.list_calls(limit + 1, cursor)
    except Exception as exc:
        return _unavailable(exc)
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_cursor(rows[-1]["started_at"], rows[-1]["call_id"]) if more else None
    return JSONResponse({"calls": [call_summary(r) for r in rows], "next_cursor": next_cursor})


async def get_call(records: Records, request: Request) -> Response:
    if (denied := api_denied(request, records.token)) is not None:
        return denied
    try:
        call = await records.store.get_call(request.path_params["call_id"])
    except Exception as exc:
        return _unavailable(exc)
    if call is None:
        return JSONResponse({"error": "no such call"}, status_code=404)
    return JSONResponse(call_json(call))
