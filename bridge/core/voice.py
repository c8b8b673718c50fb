"""The call's side of its one TTS connection: which contexts exist, and what goes into them.

The rules of the service (shared/protocols.md §1.6, kept in DESIGN.md) are enforced here, by
construction rather than by care at each call site:

* a context is opened only when a reply has text to speak, and only while the socket is up
  and a slot is free (OPEN + CLOSING < 5; a sixth makes the server drop the whole socket);
* text and keep-alives go only to a context we opened and have not closed;
* a closed context keeps its slot until its ``isFinal``, or until ``drain_timeout_s`` says the
  server has let it go.

When to *close* a reply's context (once its first audio is here and the agent is done) is the
reply lifecycle's decision (``bridge.core.reply``); this module only carries it out.
"""

from __future__ import annotations

from bridge.core.actions import Action, CloseContext, KeepAlive, OpenContext, SendText
from bridge.core.contexts import ContextTable
from bridge.core.reply import Reply

__all__ = ["Voice"]


class Voice:
    """The TTS contexts of one call, and the socket's state as the events tell it."""

    __slots__ = ("_contexts", "_drain_timeout", "_keepalive", "opened", "up")

    def __init__(self, max_contexts: int, keepalive_s: float, drain_timeout_s: float) -> None:
        self._contexts = ContextTable(max_slots=max_contexts)
        self._keepalive = keepalive_s
        self._drain_timeout = drain_timeout_s
        self.up = False  # the socket is open (TtsConnected, until TtsClosed)
        self.opened = 0  # contexts opened over the call

    @property
    def slots_in_use(self) -> int:
        return self._contexts.slots_in_use

    @property
    def peak_slots(self) -> int:
        return self._contexts.peak_slots

    def send(self, reply: Reply, at: float, out: list[Action]) -> None:
        """Send the reply's waiting text, opening its context first if it has none yet."""
        if not reply.outbox or not self.up:
            return
        if reply.context_id is None:
            if not self._contexts.can_open():
                return  # wait for a draining context's isFinal
            reply.context_id = self._contexts.open(at)
            self.opened += 1
            out.append(OpenContext(reply.context_id))
        for text, flush in reply.take_outbox():
            out.append(SendText(reply.context_id, text, flush))
        self._contexts.note_sent(reply.context_id, at)

    def close(self, context_id: str | None, at: float, out: list[Action]) -> None:
        """Close ``context_id`` gracefully, if it is open."""
        if context_id is not None and self._contexts.close(context_id, at):
            out.append(CloseContext(context_id))

    def close_all(self, at: float, out: list[Action]) -> None:
        for context_id in self._contexts.open_ids():
            self.close(context_id, at, out)

    def final(self, context_id: str) -> None:
        """The server is done with ``context_id`` (or we stopped waiting for it): its slot is free."""
        self._contexts.final(context_id)

    def forget_final(self) -> None:
        self._contexts.forget_final()

    def connected(self) -> None:
        self.up = True

    def lost(self) -> None:
        """The socket is gone, and every context with it."""
        self.up = False
        self._contexts.lose_all()
        self._contexts.forget_final()

    def keep_alive(self, at: float, out: list[Action]) -> None:
        """A keep-alive to every open context the server would otherwise time out."""
        for context_id in self._contexts.keepalive_due(at, self._keepalive):
            out.append(KeepAlive(context_id))
            self._contexts.note_sent(context_id, at)

    def expired(self, at: float) -> list[str]:
        """Closed contexts whose ``isFinal`` is overdue: the server has let them go (now final)."""
        return self._contexts.drain_expired(at, self._drain_timeout)

    def deadlines(self) -> tuple[float | None, float | None]:
        """When the next keep-alive is due, and when the next drain times out."""
        return self._contexts.deadlines(self._keepalive, self._drain_timeout)
