"""A webhook agent in a dozen lines (docs/agents.md shows this file): run it with
``WEBHOOK_SECRET=… uvicorn bridge.testing.webhook_example:app --port 9000`` and start the bridge
with ``BRIDGE_AGENT=webhook BRIDGE_AGENT_WEBHOOK_URL=http://127.0.0.1:9000/agent
BRIDGE_AGENT_WEBHOOK_SECRET=…``. It needs nothing of the bridge: only Starlette and the stdlib.
"""

__all__ = ["app"]

import asyncio
import hashlib
import hmac
import json
import os
import time
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

SECRET = os.environ.get("WEBHOOK_SECRET", "change-me").encode()


async def agent(request: Request) -> Response:
    body, ts = await request.body(), request.headers.get("x-bridge-timestamp", "0")
    expected = "sha256=" + hmac.new(SECRET, ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, request.headers.get("x-bridge-signature", "")) \
            or abs(time.time() - int(ts)) > 300:
        return Response("bad signature", status_code=401)
    turn = json.loads(body)

    async def reply() -> AsyncIterator[str]:
        if turn["turn"] == 0:
            yield "Hello! This is the webhook agent. How can I help?\n"
            return
        yield f"You said: {turn['transcript'] or 'nothing I could hear'}.\n"
        if turn["digits"]:
            yield f"You pressed {' '.join(turn['digits'])}.\n"
        await asyncio.sleep(0.05)  # a real agent would be thinking here
        yield "What else can I do for you?\n"

    return StreamingResponse(reply(), media_type="text/plain")


app = Starlette(routes=[Route("/agent", agent, methods=["POST"])])
