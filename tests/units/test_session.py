"""The asyncio shell of one call (``bridge.server.session``), in-process, with stand-ins for its three peers.

The session only moves bytes and time; what it must get right is *who* it blames. A socket read
that fails is the caller dropping; anything of ours that raises is a bug, and must be reported
as one (at ERROR, with its traceback), never disguised as a hang-up. And the timeouts the core
now keeps (the carrier's ``start``, the agent's silence) must still reach the wire.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bridge.agents.base import Turn
from bridge.core.actions import SendText, TtsAction
from bridge.core.call import CallSettings
from bridge.core.events import AgentText, CallerAudio, Event, TtsConnected
from bridge.server.session import CallSession

START = {"event": "start", "start": {"streamSid": "MZ1", "callSid": "CA1"}}
MEDIA = {"event": "media", "media": {"payload": base64.b64encode(b"\xff" * 160).decode()}}


class Phone:
    """The carrier's end of the media socket, as far as the session uses it."""

    def __init__(self) -> None:
        self.incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.sent: list[dict[str, Any]] = []
        self.closed: int | None = None

    def says(self, *messages: dict[str, Any]) -> None:
        for message in messages:
            self.incoming.put_nowait({"type": "websocket.receive", "text": json.dumps(message)})

    def hangs_up(self) -> None:
        self.incoming.put_nowait({"type": "websocket.disconnect", "code": 1000})

    async def receive(self) -> dict[str, Any]:
        return await self.incoming.get()

    async def send_text(self, text: str) -> None:
        self.sent.append(json.loads(text))

    async def close(self, code: int = 1000) -> None:
        self.closed = code


class Tts:
    def __init__(self) -> None:
        self.connects = 0
        self.closed = False
        self.sent: list[TtsAction] = []

    async def connect(self, emit: Any) -> None:
        self.connects += 1
        emit(TtsConnected(asyncio.get_running_loop().time()))

    async def send(self, action: TtsAction) -> None:
        self.sent.append(action)

    async def aclose(self) -> None:
        self.closed = True


class Agent:
    """Says ``words``, or (``words`` None) thinks forever."""

    def __init__(self, words: str | None = "Hello. ") -> None:
        self.words = words
        self.closed = 0

    async def reply(self, turn: Turn) -> AsyncIterator[str]:
        try:
            if self.words is None:
                await asyncio.Event().wait()
            yield self.words or ""
        finally:
            self.closed += 1

    def heard(self, turn: int, text: str, interrupted: bool) -> None:
        pass


async def run(session: CallSession, limit: float = 5.0) -> None:
    async with asyncio.timeout(limit):
        await session.run()


@pytest.mark.parametrize("breaks_on", [CallerAudio, AgentText], ids=["phone fast path", "call loop"])
async def test_a_core_that_raises_is_reported_as_a_bug_not_as_the_caller_hanging_up(caplog, breaks_on):
    phone = Phone()
    session = CallSession(phone, settings=CallSettings(), tts=Tts(), agent=Agent())  # type: ignore[arg-type]
    handle = session.call.handle

    def broken(event: Event) -> list[Any]:
        if isinstance(event, breaks_on):
            raise RuntimeError("the core lost track of a context")  # RuntimeError: what a failed read raises too
        return handle(event)

    session.call.handle = broken  # type: ignore[method-assign]
    phone.says(START, MEDIA)
    with caplog.at_level(logging.INFO, logger="bridge"):
        await run(session)
    [bug] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "bug" in bug.getMessage() and breaks_on.__name__ in bug.getMessage()
    assert bug.exc_info is not None and "lost track of a context" in str(bug.exc_info[1]), "with its traceback"
    assert session.end_reason == "error" and phone.closed == 1000, "not 'dropped': the caller did nothing wrong"
    assert any("ended (error)" in r.getMessage() for r in caplog.records)


async def test_a_phone_read_that_fails_is_the_caller_dropping(caplog):
    phone = Phone()

    async def dead() -> dict[str, Any]:
        raise OSError("connection reset")

    phone.receive = dead  # type: ignore[method-assign]
    session = CallSession(phone, settings=CallSettings(), tts=Tts(), agent=Agent())  # type: ignore[arg-type]
    with caplog.at_level(logging.INFO, logger="bridge"):
        await run(session)
    assert session.end_reason == "dropped"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_stream_that_never_starts_is_closed_by_the_cores_timeout_and_its_tts_with_it(caplog):
    phone, tts = Phone(), Tts()
    session = CallSession(phone, settings=CallSettings(), tts=tts, agent=Agent(), start_timeout_s=0.2)  # type: ignore[arg-type]
    began = asyncio.get_running_loop().time()
    with caplog.at_level(logging.INFO, logger="bridge"):
        await run(session)
    assert 0.15 < asyncio.get_running_loop().time() - began < 2.0
    assert phone.closed == 1000
    assert tts.connects == 1 and tts.closed, "the TTS connects at the accept, and goes with the call"
    assert any("no 'start' within 0.2 s" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


async def test_an_agent_that_falls_silent_is_stopped_and_the_caller_hears_the_apology(caplog):
    phone, tts, agent = Phone(), Tts(), Agent(words=None)
    settings = CallSettings(agent_timeout_s=0.2, apology="Sorry, one moment.")
    session = CallSession(phone, settings=settings, tts=tts, agent=agent)  # type: ignore[arg-type]
    phone.says(START)
    task = asyncio.create_task(run(session))
    async with asyncio.timeout(3.0):
        while not [a for a in tts.sent if isinstance(a, SendText)]:
            await asyncio.sleep(0.01)
    phone.hangs_up()
    await task
    assert [a.text for a in tts.sent if isinstance(a, SendText)] == ["Sorry, one moment. "]
    assert agent.closed == 1, "the silent agent's stream was closed"
    assert any("no text for 0.2 s" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert session.end_reason == "hangup"
