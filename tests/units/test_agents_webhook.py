"""The webhook agent over real HTTP on 127.0.0.1: against the documented example webhook
(``bridge.testing.webhook_example``, the code docs/agents.md shows) and against a small NDJSON
webhook defined here that also notices when the bridge hangs up on it mid-reply."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from starlette.types import Receive, Scope, Send

from bridge.agents.base import AgentError, Message, Turn
from bridge.agents.webhook import WebhookAgent, turn_body, verify_signature
from bridge.testing import webhook_example

SECRET = "whsec-Zq9Xj7Wv3Kp2Lm8N"


@contextlib.asynccontextmanager
async def running(app: Any) -> AsyncIterator[str]:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


class NdjsonHook:
    """A webhook answering in NDJSON, one line every ``delay`` seconds, that records what it got."""

    def __init__(self, lines: list[Any], delay: float = 0.0) -> None:
        self.lines, self.delay = lines, delay
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.disconnected_at: float | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        body = b""
        while (message := await receive())["type"] == "http.request":
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.requests.append((headers, body))
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/x-ndjson")]})
        streaming = asyncio.create_task(self._stream(send))
        watching = asyncio.create_task(receive())  # the next message can only be http.disconnect
        await asyncio.wait({streaming, watching}, return_when=asyncio.FIRST_COMPLETED)
        if watching.done() and not streaming.done():
            self.disconnected_at = time.monotonic()
        for task in (streaming, watching):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await task

    async def _stream(self, send: Send) -> None:
        for line in self.lines:
            await asyncio.sleep(self.delay)
            await send({"type": "http.response.body", "body": json.dumps(line).encode() + b"\n", "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def text_of(agent: WebhookAgent, turn: Turn) -> str:
    return "".join([piece async for piece in agent.reply(turn)])


async def test_the_documented_example_answers_a_signed_turn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(webhook_example, "SECRET", SECRET.encode())
    async with running(webhook_example.app) as base:
        agent = WebhookAgent(f"{base}/agent", secret=SECRET)
        greeting = await text_of(agent, Turn(0))
        reply = await text_of(agent, Turn(1, transcript="Yes.", digits="12", history=(Message("user", "Yes."),)))
        unsigned = WebhookAgent(f"{base}/agent", secret="not-the-secret")
        with pytest.raises(AgentError, match="webhook: HTTP 401"):
            await text_of(unsigned, Turn(1))
        for a in (agent, unsigned):
            await a.aclose()
    assert greeting.strip() == "Hello! This is the webhook agent. How can I help?"
    assert " ".join(reply.split()) == "You said: Yes.. You pressed 1 2. What else can I do for you?"
    assert "\n" not in reply, "a newline between chunks is spoken as a space"


def test_a_16_khz_turns_audio_is_labelled_16000() -> None:
    audio = turn_body("c", Turn(1, b"\x01\x00" * 4, rate=16000), audio=True)["audio"]
    assert audio["sample_rate"] == 16000 and base64.b64decode(audio["base64"]) == b"\x01\x00" * 4


async def test_ndjson_reply_signed_body_and_audio() -> None:
    hook = NdjsonHook(["Sure. ", {"text": "Done."}, ""])
    turn = Turn(2, b"\x01\x00\x02\x00", "#", "book it", (Message("user", "book it"),))
    async with running(hook) as base:
        agent = WebhookAgent(f"{base}/hook", secret=SECRET, send_audio=True)
        assert await text_of(agent, turn) == "Sure. Done."
        await agent.aclose()
    [(headers, body)] = hook.requests
    assert verify_signature(SECRET, headers, body)
    assert headers["content-type"] == "application/json"
    sent = json.loads(body)
    assert sent["turn"] == 2 and sent["transcript"] == "book it" and sent["digits"] == "#"
    assert sent["history"] == [{"role": "user", "content": "book it"}]
    assert base64.b64decode(sent["audio"]["base64"]) == turn.utterance and sent["audio"]["sample_rate"] == 8000
    assert sent["conversation"] == agent.conversation


async def test_cancelling_the_reply_hangs_up_on_the_webhook() -> None:
    hook = NdjsonHook([f"Piece {n}. " for n in range(100)], delay=0.02)
    async with running(hook) as base:
        agent = WebhookAgent(f"{base}/hook")
        got: list[str] = []

        async def consume() -> None:
            async for piece in agent.reply(Turn(1)):
                got.append(piece)

        task = asyncio.create_task(consume())
        while len(got) < 3:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(100):
            if hook.disconnected_at is not None:
                break
            await asyncio.sleep(0.01)
        await agent.aclose()
    assert hook.disconnected_at is not None, "the webhook saw the request aborted"
    assert "x-bridge-signature" not in hook.requests[0][0], "no secret, no signature"


def test_docs_show_the_example_webhook_as_it_is_tested() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "agents.md").read_text(encoding="utf-8")
    source = Path(webhook_example.__file__).read_text(encoding="utf-8")
    code = source[source.index("import asyncio"):]
    assert code.strip() in docs
