"""HTTP plumbing shared by the agents that call out: one client per call, errors without secrets.

Each call gets its own `httpx.AsyncClient`, so a call's requests reuse one connection (the TLS
handshake is paid once per call, not per turn) and closing the call closes everything it opened.
Cancelling the task that reads a streamed response closes that response's connection: the
upstream server sees the request aborted, which is what a barge-in must do.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import httpx

from bridge.agents.base import AgentError

__all__ = ["USER_AGENT", "check_response", "json_value", "new_client"]

USER_AGENT = "bridge-voice-agent/0.1"


def new_client(timeout_s: float = 60.0) -> httpx.AsyncClient:
    """A client for one call: connect quickly or fail, then let the session's own timeout rule."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout_s, connect=min(10.0, timeout_s)), headers={"User-Agent": USER_AGENT}
    )


async def check_response(response: httpx.Response, what: str) -> None:
    """Raise `AgentError` for a non-2xx answer, naming the status and the API's error code.

    Only the error's ``type``/``code`` fields are quoted, never its message: APIs echo a masked
    form of a bad key in the message, and a key, even masked, does not belong in a log line.
    """
    if response.is_success:
        return
    body = await response.aread()
    detail = ""
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    error = parsed.get("error") if isinstance(parsed, Mapping) else None
    if isinstance(error, Mapping):
        codes = [str(error[k]) for k in ("type", "code") if isinstance(error.get(k), str | int)]
        detail = f" ({', '.join(codes)[:80]})" if codes else ""
    raise AgentError(f"{what}: HTTP {response.status_code}{detail}")


def json_value(text: str, what: str) -> Any:
    """One JSON value of a streamed reply (a server-sent ``data:`` chunk, an NDJSON line). Text that
    is not JSON is the server's fault, so it becomes an `AgentError` naming ``what``, never a crash."""
    try:
        return json.loads(text)
    except ValueError:
        raise AgentError(f"{what} that is not JSON") from None
