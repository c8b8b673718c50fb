"""The fault suite: every fault is injected on loopback, each test is bounded in time and ends itself.

Everything runs for real: the app under uvicorn on 127.0.0.1 (``tests.e2e.conftest.serve``), the
Twilio-faithful phone simulator, and ``bridge.testing.fake_elevenlabs``, the protocol-faithful local
stand-in for ElevenLabs (the cloud API is not reachable from tests), with its fault hooks. A TCP
reset is made by `ResetProxy`, a loopback TCP relay that can abort both sides with RST.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from bridge.testing.fake_elevenlabs import FakeElevenLabs
from tests.e2e.conftest import RunningBridge, fake_tts, script  # noqa: F401  (fixtures, re-exported)

__all__ = ["LogLines", "ResetProxy", "live_tasks", "no_leaks", "wait_for"]


async def wait_for(predicate: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    """Poll until ``predicate()`` holds; fail the test (never hang) after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"{what}: not met within {timeout} s")
        await asyncio.sleep(0.02)


def live_tasks() -> set[asyncio.Task[object]]:
    return {t for t in asyncio.all_tasks() if not t.done()}


@contextlib.asynccontextmanager
async def no_leaks(bridge: RunningBridge, *fakes: FakeElevenLabs, timeout: float = 6.0) -> AsyncIterator[None]:
    """After the block: no live call, no TTS socket, and no task the block started, still running."""
    before = live_tasks()
    yield
    await wait_for(lambda: bridge.live_calls == 0, timeout, "live calls back to 0")
    await wait_for(lambda: all(f.live_connections == 0 for f in fakes), timeout, "TTS sockets back to 0")
    current = asyncio.current_task()
    await wait_for(lambda: not (live_tasks() - before - {current}), timeout, "tasks back to where they were")


class LogLines(logging.Handler):
    """Every record of the ``bridge`` loggers (which do not propagate to the root)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def lines(self, min_level: int = logging.WARNING, name: str = "bridge") -> list[str]:
        return [r.getMessage() for r in self.records if r.levelno >= min_level and r.name.startswith(name)]

    def matching(self, *words: str, min_level: int = logging.WARNING) -> list[str]:
        return [line for line in self.lines(min_level) if all(w in line for w in words)]


@pytest.fixture
def bridge_log() -> Iterator[LogLines]:
    handler = LogLines()
    logger = logging.getLogger("bridge")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


class ResetProxy:
    """A loopback TCP relay to ``port`` whose `reset_all` kills every relayed connection with RST,
    as a dying NAT or load balancer does: no close frame, no FIN, only a reset on both sides."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._pairs: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> ResetProxy:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.reset_all()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    @property
    def base_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target)
        self._pairs.append((client_w, server_w))
        pumps = [asyncio.create_task(_pump(client_r, server_w)), asyncio.create_task(_pump(server_r, client_w))]
        self._tasks.update(pumps)
        await asyncio.gather(*pumps, return_exceptions=True)

    def reset_all(self) -> None:
        for pair in self._pairs:
            for writer in pair:
                sock = writer.get_extra_info("socket")
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
        self._pairs.clear()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()
