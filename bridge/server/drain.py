"""Graceful drain: on SIGTERM stop taking calls, let live calls finish, then end the rest cleanly.

A deploy sends SIGTERM. Left to itself, uvicorn would then close its listening socket at once (a
load balancer polling ``/healthz`` would see refused connections, not "draining"), send close 1012
to every WebSocket (every caller cut off mid-sentence) and only then wait, up to
``timeout_graceful_shutdown``, for what is left. So the app takes SIGTERM itself:

1. ``draining``: ``/healthz`` answers 503 ``{"status": "draining"}``, the webhook answers the
   polite busy TwiML, media upgrades get HTTP 503; the listening socket stays open for all that;
2. live calls go on until they end, for at most ``server.drain_timeout_s``;
3. at that deadline every call still live *winds down* (``bridge.core.control``): the agent stops,
   its reply stops at the end of the word being played (never mid-word), the caller hears
   ``server.drain_goodbye``, and the bridge hangs up within ``goodbye_s`` (1 s) of the deadline,
   the goodbye itself stopping at a word end if it is longer than that: keep it short;
4. calls still live then are ended the way a hang-up ends them (``close_socket`` to the TTS, the
   Twilio socket closed with 1000), and we wait a little for their teardown;
5. uvicorn is asked to exit as its own handler would, by setting ``should_exit`` on its server,
   so the process exits 0 (uvicorn's handler would also re-raise SIGTERM at exit).

uvicorn installs its handlers before the lifespan starts and restores the originals when it
stops, so installing ours in lifespan startup replaces exactly uvicorn's, and only for the life of
the server. A second SIGTERM skips the rest of the wait (the calls are still ended cleanly).
SIGINT (Ctrl-C) keeps uvicorn's own behaviour. Under a server that is not uvicorn the previous
handler is called once the drain is over. The platform's kill timeout must exceed
``drain_timeout_s`` plus a few seconds, or the drain is cut short by SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Collection
from types import FrameType
from typing import Any, Protocol

__all__ = ["Drainer", "Endable"]

log = logging.getLogger("bridge.server.drain")

_Handler = Callable[[int, FrameType | None], Any] | int | None


class Endable(Protocol):
    def end(self, reason: str = ...) -> None: ...

    def wind_down(self, text: str, within_s: float) -> None: ...


class _Calls(Protocol):
    draining: bool

    @property
    def calls(self) -> Collection[Endable]: ...


class Drainer:
    """Owns SIGTERM for the life of the app (see the module's docstring for why)."""

    def __init__(self, bridge: _Calls, timeout_s: float, *, teardown_s: float = 5.0, poll_s: float = 0.05,
                 goodbye: str = "", goodbye_s: float = 1.0) -> None:
        """``goodbye`` (empty: none) is said at ``timeout_s`` to every call still live, each ended
        within ``goodbye_s`` after."""
        self._bridge = bridge
        self.timeout_s = timeout_s
        self.goodbye = goodbye.strip()
        self.goodbye_s = goodbye_s
        self._teardown_s = teardown_s
        self._poll_s = poll_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._previous: _Handler = None
        self._task: asyncio.Task[None] | None = None
        self._hurry = asyncio.Event()

    def install(self) -> None:
        """Take SIGTERM (main thread only: elsewhere Python cannot install handlers)."""
        if threading.current_thread() is not threading.main_thread():
            return
        self._loop = asyncio.get_running_loop()
        self._previous = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, self._on_sigterm)

    def uninstall(self) -> None:
        if self._loop is not None and signal.getsignal(signal.SIGTERM) == self._on_sigterm:
            signal.signal(signal.SIGTERM, self._previous if self._previous is not None else signal.SIG_DFL)
        if self._task is not None and not self._task.done():
            self._task.cancel()

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._begin)

    def _begin(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._drain_then_exit(), name="drain")
        else:
            log.warning("second SIGTERM: ending the remaining calls now")
            self._hurry.set()

    async def _drain_then_exit(self) -> None:
        try:
            await self.drain()
        finally:
            self._stop_server()

    async def drain(self) -> None:
        """Stop taking calls, wait for the live ones up to the timeout, then end the rest."""
        bridge = self._bridge
        bridge.draining = True
        log.warning("draining: taking no new calls; waiting up to %g s for %d live call(s) to end",
                    self.timeout_s, len(bridge.calls))
        await self._wait_for_no_calls(self.timeout_s)
        if bridge.calls:
            log.warning("drain timeout: ending %d call(s) now", len(bridge.calls))
            if self.goodbye and not self._hurry.is_set():
                for session in list(bridge.calls):
                    session.wind_down(self.goodbye, self.goodbye_s)
                await self._wait_for_no_calls(self.goodbye_s)
            for session in list(bridge.calls):
                session.end("shutdown")
            self._hurry.clear()
            await self._wait_for_no_calls(self._teardown_s)
        log.info("drained: %d call(s) left", len(bridge.calls))

    async def _wait_for_no_calls(self, limit: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(limit):
                while self._bridge.calls and not self._hurry.is_set():
                    await asyncio.sleep(self._poll_s)

    def _stop_server(self) -> None:
        """Ask the server to exit; uvicorn's handler is a bound method of its ``Server``."""
        previous = self._previous
        server = getattr(previous, "__self__", None)
        if server is not None and hasattr(server, "should_exit"):
            server.should_exit = True
        elif callable(previous):
            previous(signal.SIGTERM, None)
        elif previous in (signal.SIG_DFL, None):
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.raise_signal(signal.SIGTERM)
