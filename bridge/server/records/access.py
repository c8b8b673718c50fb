"""Who may read the records: whoever holds ``BRIDGE_ADMIN_TOKEN``.

The API takes it as ``Authorization: Bearer <token>``. The pages take it once as ``?token=``
(the link ``bridge serve`` prints, as Jupyter does), answer with a Secure, HttpOnly,
SameSite=Strict cookie, and send the browser on to the same page without the token in its
address. Tokens are compared in constant time and never logged. Without a configured token the
process makes one at random (`admin_token`), which only the person who started it is shown.
"""

from __future__ import annotations

import hmac
import logging
import re
import secrets
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response

__all__ = ["COOKIE", "RedactToken", "admin_token", "api_denied", "page_denied", "redact_access_logs"]

COOKIE = "bridge_admin"
_generated: str | None = None


def admin_token(configured: str | None) -> str:
    """The token in force: the configured one, else one made for this process (the same every call)."""
    global _generated
    if configured:
        return configured
    if _generated is None:
        _generated = secrets.token_urlsafe(24)
    return _generated


def _matches(offered: str | None, token: str) -> bool:
    return offered is not None and hmac.compare_digest(offered.encode(), token.encode())


def api_denied(request: Request, token: str) -> Response | None:
    """None when the request carries the token as a Bearer header, else the 401 to send."""
    scheme, _, offered = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and _matches(offered.strip(), token):
        return None
    return JSONResponse({"error": "unauthorized"}, status_code=401, headers={"WWW-Authenticate": "Bearer"})


def page_denied(request: Request, token: str) -> Response | None:
    """None when the cookie holds the token; a redirect that sets it when ``?token=`` does; else 401."""
    if _matches(request.cookies.get(COOKIE), token):
        return None
    offered = request.query_params.get("token")
    if _matches(offered, token):
        rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
        target = request.url.path + ("?" + urlencode(rest) if rest else "")
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(COOKIE, token, httponly=True, secure=True, samesite="strict", path="/")
        return response
    return PlainTextResponse("401 Unauthorized: open the link with ?token= that `bridge serve` printed, "
                             "or the one made from BRIDGE_ADMIN_TOKEN", status_code=401)


class RedactToken(logging.Filter):
    """Keeps ``?token=`` out of access logs (uvicorn logs each request's path and query at info)."""

    _TOKEN = re.compile(r"([?&]token=)[^&\s\"]*")

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(self._TOKEN.sub(r"\1[redacted]", a) if isinstance(a, str) else a
                                for a in record.args)
        if isinstance(record.msg, str) and "token=" in record.msg:
            record.msg = self._TOKEN.sub(r"\1[redacted]", record.msg)
        return True


def redact_access_logs() -> None:
    """Install `RedactToken` on the access logger once per process."""
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactToken) for f in access.filters):
        access.addFilter(RedactToken())
