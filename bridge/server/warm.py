"""TTS sockets opened when a carrier's webhook is answered, so a call's voice is up before its stream starts.

A carrier asks its voice webhook what to do with a call, then opens the media stream, whose
``start`` names the same call (Twilio's ``CallSid``; each codec's `CallStarted.call_id`). Opening
the TTS socket only once the stream is there puts the TLS and WebSocket handshakes (tens to
hundreds of ms to a cloud TTS) between the caller's "hello" and the greeting. So the worker that
answers the webhook starts opening a socket for that call at once (`WarmPool.warm`), and the call's
stream takes it (`CallTts`): already open, or still opening.

Rules, in `WarmTable` (pure, time passed in):

* an entry not claimed within ``ttl_s`` is closed: the carrier gave up on the call, or another
  worker got its stream. ``ttl_s`` stays well inside the TTS's inactivity timeout, after which the
  server drops an idle socket anyway (ElevenLabs: ``inactivity_timeout``, 20 s by default);
* at most ``size`` entries (the worker's ``max_calls``): a new one pushes out the oldest;
* a call whose id was not warmed here (another worker answered its webhook, or no webhook: the
  phone simulator, a test) opens its own socket, as it would without a pool. Only while this
  worker holds warm sockets for other calls does a call wait for its ``start`` before connecting,
  to learn whether one of them is its own.

A warm socket that failed to open, or was lost before its call came, is never handed over: the
call opens a fresh one (`CallTts.connect`), and its supervisor's retries and failover apply from
there as for any socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Callable

from starlette.requests import Request

from bridge.core.actions import TtsAction
from bridge.core.events import Event, TtsClosed, TtsConnected
from bridge.tts.base import Emit, TtsClient, TtsConnectError

__all__ = ["CallTts", "WarmPool", "WarmTable", "webhook_call_id"]

log = logging.getLogger("bridge.server.warm")

CALL_ID_FIELDS = {"plivo": "CallUUID", "vonage": "uuid"}
"""The webhook parameter that names the call, where it is not ``CallSid`` (Twilio, SignalWire, Telnyx
TeXML, Exotel): the same id the carrier's stream ``start`` carries."""


async def webhook_call_id(carrier: str, request: Request) -> str:
    """The call's id from its voice webhook (query or form), or "" when it has none."""
    name = CALL_ID_FIELDS.get(carrier, "CallSid")
    value: object = request.query_params.get(name)
    if not value and request.method == "POST":
        with contextlib.suppress(Exception):  # a body that does not parse: no warm socket, nothing else
            value = (await request.form()).get(name)
    return value[:128] if isinstance(value, str) else ""


class WarmTable:
    """Which calls have a warm socket waiting, and until when. No clock: ``now`` comes in."""

    def __init__(self, ttl_s: float, size: int) -> None:
        self.ttl_s = ttl_s
        self.size = max(1, size)
        self._until: OrderedDict[str, float] = OrderedDict()  # oldest first

    def __len__(self) -> int:
        return len(self._until)

    def add(self, key: str, now: float) -> list[str]:
        """Warm ``key`` until ``now + ttl_s``; returns the keys pushed out (to close). A key already
        waiting keeps its socket (a carrier retrying its webhook) and its deadline."""
        if key in self._until:
            return []
        self._until[key] = now + self.ttl_s
        evicted = []
        while len(self._until) > self.size:
            evicted.append(self._until.popitem(last=False)[0])
        return evicted

    def claim(self, key: str, now: float) -> bool:
        """The call's stream has started: its entry leaves the table; True when it was still fresh."""
        until = self._until.pop(key, None)
        return until is not None and now < until

    def expired(self, now: float) -> list[str]:
        """The keys whose time is up, removed."""
        gone = [key for key, until in self._until.items() if until <= now]
        for key in gone:
            del self._until[key]
        return gone

    def next_expiry(self) -> float | None:
        return min(self._until.values(), default=None)


class _Warm:
    """One warm socket: its client, connecting from creation; its events held back until a call takes it."""

    def __init__(self, client: TtsClient, rate: int, clock: Callable[[], float]) -> None:
        self.client = client
        self.rate = rate  # the sample rate its audio comes at: a call at another rate cannot use it
        self._clock = clock
        self._emit: Emit | None = None
        self.lost = False
        self.task = asyncio.create_task(self._connect(), name="tts-warm-connect")

    async def _connect(self) -> bool:
        try:
            await self.client.connect(self._forward)
        except TtsConnectError as exc:
            log.warning("warm TTS socket: %s; the call will open its own", exc)
            return False
        return True

    def _forward(self, event: Event) -> None:
        """The client's events: the call's, once it has taken the socket; until then only a loss matters."""
        if self._emit is not None:
            self._emit(event)
        elif isinstance(event, TtsClosed) and not event.expected:
            self.lost = True

    async def take(self, emit: Emit) -> bool:
        """Hand the socket to a call (waiting for it to open): True when it is up and reports to ``emit``."""
        if not await self.task or self.lost:
            return False
        self._emit = emit
        emit(TtsConnected(self._clock()))  # its own came before any call listened
        return True

    async def aclose(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.task
        with contextlib.suppress(Exception):
            await self.client.aclose()


class WarmPool:
    """One worker's warm sockets, by call id. ``make`` builds a call's TTS client for a sample rate
    (`factories.make_tts`)."""

    def __init__(self, make: Callable[[int], TtsClient], *, ttl_s: float, size: int,
                 clock: Callable[[], float]) -> None:
        self._make = make
        self._clock = clock
        self.table = WarmTable(ttl_s, size)
        self._entries: dict[str, _Warm] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self.opened = 0  # warm sockets started over the worker's life
        self.claimed = 0  # of which taken by their call

    @property
    def pending(self) -> bool:
        """Whether any warm socket waits for its call here."""
        return bool(self._entries)

    def warm(self, call_id: str, rate: int) -> None:
        """The webhook for ``call_id`` was answered here: start opening its socket, for audio at ``rate``."""
        if not call_id or self.table.ttl_s <= 0 or call_id in self._entries:
            return
        for key in self.table.add(call_id, self._clock()):
            self._drop(key)
        self._entries[call_id] = _Warm(self._make(rate), rate, self._clock)
        self.opened += 1
        self._arm()

    def claim(self, call_id: str, rate: int) -> _Warm | None:
        """The stream of ``call_id`` started: its warm socket, if it has one still in time and at the
        call's ``rate`` (a stream may settle on another rate than its webhook foresaw)."""
        fresh = self.table.claim(call_id, self._clock())
        entry = self._entries.pop(call_id, None)
        if entry is not None and (not fresh or entry.rate != rate):
            self._close(entry)
            entry = None
        if entry is not None:
            self.claimed += 1
        self._arm()
        return entry

    async def aclose(self) -> None:
        """The worker stops: close every socket no call took."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for key in list(self._entries):
            self._drop(key)
        await asyncio.gather(*self._closing, return_exceptions=True)

    def _expire(self) -> None:
        self._timer = None
        for key in self.table.expired(self._clock()):
            log.info("warm TTS socket for call %s closed: its stream did not come in %.0f s", key, self.table.ttl_s)
            self._drop(key)
        self._arm()

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        at = self.table.next_expiry()
        self._timer = asyncio.get_running_loop().call_at(at, self._expire) if at is not None else None

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._close(entry)

    def _close(self, entry: _Warm) -> None:
        task = asyncio.create_task(entry.aclose(), name="tts-warm-close")
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)


class CallTts:
    """A call's `TtsClient`: the socket warmed for this call when this worker has one, else its own.

    The session tells it the call's id (`started`) when the stream's ``start`` arrives. The first
    `connect` takes the warm socket; every later one (a reconnect) goes to the same client.
    """

    def __init__(self, make: Callable[[], TtsClient], pool: WarmPool | None, rate: int) -> None:
        self._make = make
        self._pool = pool
        self._rate = rate
        self._client: TtsClient | None = None
        self._call_id: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.warm = False  # this call took a warm socket

    @property
    def current(self) -> str | None:
        """The voice now serving, when the client has several (`FallbackTts`)."""
        current = getattr(self._client, "current", None)
        return current if isinstance(current, str) else None

    def started(self, call_id: str) -> None:
        if not self._call_id.done():
            self._call_id.set_result(call_id)

    async def connect(self, emit: Emit) -> None:
        if self._client is None:
            warm = await self._claim()
            if warm is not None:
                self._client = warm.client  # the call's from here: closed with it, whatever happens next
                if await warm.take(emit):
                    self.warm = True
                    return
                await warm.aclose()
            self._client = self._make()
        await self._client.connect(emit)

    async def _claim(self) -> _Warm | None:
        pool = self._pool
        if pool is None or not pool.pending:
            return None  # nothing warm here: connect now, as without a pool
        return pool.claim(await self._call_id, self._rate)

    async def send(self, action: TtsAction) -> None:
        if self._client is not None:
            await self._client.send(action)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
