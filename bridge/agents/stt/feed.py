"""The reading side shared by every stream: one queue of events, ended by exactly one `SttClosed`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from bridge.agents.stt.base import SttClosed, SttEvent, Transcript

__all__ = ["EventFeed"]


class EventFeed:
    """Producers ``put`` and ``close``; one consumer iterates ``events()`` or ``transcripts()``.

    Unbounded on purpose: a transcript is a few hundred bytes a second, and a bound would make the
    socket reader wait on a slow consumer, which is how keep-alives get missed.
    """

    def __init__(self) -> None:
        self._queue: asyncio.Queue[SttEvent] = asyncio.Queue()
        self.closed: SttClosed | None = None

    def put(self, event: SttEvent) -> None:
        if self.closed is None:
            self._queue.put_nowait(event)

    def close(self, event: SttClosed) -> None:
        """End the feed once; later closes (a second fault, a late ``finish``) are ignored."""
        if self.closed is None:
            self.closed = event
            self._queue.put_nowait(event)

    async def events(self) -> AsyncIterator[SttEvent]:
        while True:
            event = await self._queue.get()
            yield event
            if isinstance(event, SttClosed):
                return

    async def transcripts(self) -> AsyncIterator[Transcript]:
        async for event in self.events():
            if isinstance(event, Transcript):
                yield event
