"""A protocol-faithful stand-in for Twilio's REST API (the Calls resource), on 127.0.0.1.

``POST /2010-04-01/Accounts/{AccountSid}/Calls.json`` with HTTP Basic auth and a form body, as
https://www.twilio.com/docs/voice/api/call-resource documents it: 201 and the call as JSON
(``sid`` ``CA…``, ``status`` ``queued``); 401 with Twilio's error JSON (code 20003) for bad
credentials; 400 (code 21211 / 21212) for a bad ``To`` / ``From``. Each accepted call is recorded,
so a test can then play Twilio's part: fetch the ``Url`` webhook as Twilio would (with
``AnsweredBy`` when machine detection was asked for) and dial the media stream it names.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import re
from dataclasses import dataclass, field

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

__all__ = ["FakeTwilio", "PlacedRequest"]

_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")


@dataclass
class PlacedRequest:
    account_sid: str
    form: dict[str, str]
    sid: str


@dataclass
class FakeTwilio:
    """``async with FakeTwilio(sid, token) as api:`` then set ``TWILIO_API_BASE_URL=api.base_url``."""

    account_sid: str = "AC" + "0" * 32
    auth_token: str = "fake-auth-token"
    calls: list[PlacedRequest] = field(default_factory=list)
    port: int = 0
    _server: uvicorn.Server | None = None
    _task: asyncio.Task[None] | None = None
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/2010-04-01/Accounts/{account}/Calls.json", self._create, methods=["POST"])])

    async def __aenter__(self) -> FakeTwilio:
        config = uvicorn.Config(self.app(), host="127.0.0.1", port=0, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            await asyncio.sleep(0.01)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _authorised(self, request: Request, account: str) -> bool:
        expected = base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        return account == self.account_sid and request.headers.get("authorization") == f"Basic {expected}"

    async def _create(self, request: Request) -> JSONResponse:
        account = request.path_params["account"]
        if not self._authorised(request, account):
            return _error(401, 20003, "Authenticate")
        form = {k: str(v) for k, v in (await request.form()).items()}
        if not _E164.match(form.get("To", "")):
            return _error(400, 21211, f"Invalid 'To' Phone Number: {form.get('To', '')[:20]}")
        if not _E164.match(form.get("From", "")):
            return _error(400, 21212, "Invalid From Number (caller ID)")
        if not form.get("Url", "").startswith(("http://", "https://")):
            return _error(400, 21205, "Url parameter is required and must be a valid URL")
        sid = f"CA{next(self._ids):032x}"
        self.calls.append(PlacedRequest(account, form, sid))
        return JSONResponse({"sid": sid, "account_sid": account, "to": form["To"], "from": form["From"],
                             "status": "queued", "direction": "outbound-api", "api_version": "2010-04-01"},
                            status_code=201)


def _error(status: int, code: int, message: str) -> JSONResponse:
    return JSONResponse({"code": code, "message": message, "more_info": f"https://www.twilio.com/docs/errors/{code}",
                         "status": status}, status_code=status)
