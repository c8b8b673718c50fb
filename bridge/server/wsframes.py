"""The phone socket's data frames, read and written without a parser object per frame.

A call's media socket carries 50 small messages a second each way for as long as the call lasts,
and almost all of them are the simplest frame WebSocket has: one whole text message, masked by
the client, unmasked from the server. uvicorn's ``websockets-sansio`` protocol hands every byte
to websockets' Sans-I/O parser, a generator that reads a frame in steps (header, length, mask,
payload), builds a `Frame` dataclass and an `Opcode` enum for it, and queues it as an event for
uvicorn to dispatch. That machinery, not the bytes, was about a tenth of the server's CPU at 50
short calls, and 0.12 of the 0.3 CPU s per call-minute the transport alone cost there
(docs/benchmarks.md, "The WebSocket frames").

`FrameProtocol` is uvicorn's protocol with a short way for exactly those frames and nothing else:

* inbound, once the socket is open, bytes are cut into whole frames; a final, masked text or
  binary frame with no extension bits, no larger than the size limit and not inside a fragmented
  message is unmasked (websockets' C helper) and queued for the app as uvicorn would queue it.
  Every other frame (ping, pong, close, fragments, anything malformed or oversized) is handed,
  whole, to websockets, which answers, closes or fails the connection as it always does; since it
  is only ever given whole frames, its parser is always at a frame's start when the short way
  resumes. Any state the short way was not written for (closing, compression negotiated, an
  unfinished frame already inside websockets' buffer) turns it off for the rest of the connection.
* outbound, a text or binary message on an open socket is written as one unmasked frame.

What the app sees is the same messages in the same order, and what the peer sees is the same
bytes; a test runs the same exchanges through both protocols (tests/shell/test_wsframes.py).

**Direct delivery.** uvicorn queues each message for the app's task, which wakes to read it: a
task switch per message, 50 a second per call, which was about a sixth of the transport's CPU
at the receive-only floor. An app that can take a message where it lands (the call's session
hands caller audio to the core synchronously) finds `DirectFeed` under the scope's extensions
(`DIRECT`) and attaches a *sink*: from then on every data message goes to the sink, in order,
from inside the read, and the queue carries only the disconnect. The sink answers whether it
wants more now; when it does not (its backlog is full), the rest of the read is held and reading
pauses until the app calls `DirectFeed.resume`: uvicorn's own flow control, one message at a
time, moved to where the app decides. A read hands over at most `PER_TURN` messages before the
rest waits for a turn of the loop. While `DirectFeed.ready`, the app may also write a message at
once (`DirectFeed.send`), from where it is, without awaiting ``send``.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from types import GeneratorType
from typing import Any, Final

from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import State

try:
    from websockets.speedups import apply_mask
except ImportError:  # websockets built without its C extension, as websockets.frames falls back
    from websockets.utils import apply_mask

__all__ = ["DIRECT", "PER_TURN", "DirectFeed", "FrameProtocol", "Sink"]

log = logging.getLogger("bridge.server.wsframes")

DIRECT: Final = "bridge.direct"
"""The key of `DirectFeed` among a WebSocket scope's ``extensions``, where `FrameProtocol` serves it."""

PER_TURN: Final = 16
"""Messages a read hands to the sink before the rest waits for a turn of the loop: a flood, or a
socket that fell behind, must not hold every other call's socket and timer for a whole read."""

Sink = Callable[[dict[str, Any]], bool]
"""Takes one ``websocket.receive`` message; answers whether it takes the next one now."""

_FIN_TEXT = 0x81  # FIN, no RSV bits, opcode 1
_FIN_BINARY = 0x82  # FIN, no RSV bits, opcode 2
_MASKED = 0x80


class DirectFeed:
    """What an app gets to take a socket's messages where they land (see the module docstring)."""

    __slots__ = ("_protocol",)

    def __init__(self, protocol: FrameProtocol) -> None:
        self._protocol = protocol

    def attach(self, sink: Sink) -> None:
        """Every data message from now on, and those queued and not yet received, goes to ``sink``
        in order; the app's ``receive`` then gets only the disconnect. Call it from the task that
        receives, between two reads."""
        self._protocol.attach(sink)

    def resume(self) -> None:
        """The sink wants messages again after it said no: the read held is delivered, then reading goes on."""
        self._protocol.resume_delivery()

    def ready(self) -> bool:
        """Whether `send` may write now: the socket open and its transport not asking to wait.
        Nothing between two of the app's awaits changes that but its own sends, which at worst
        fill the transport's buffer past its mark: more waits there, nothing is lost."""
        return self._protocol.ready()

    def send(self, data: str | bytes) -> None:
        """One message to the peer at once, as ``websocket.send`` would send it; only when `ready`."""
        self._protocol.write_message(data)


class FrameProtocol(WebSocketsSansIOProtocol):
    """uvicorn's ``websockets-sansio`` protocol, with whole data frames read and written directly."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._framing = False  # whole frames are cut here (else every byte goes to websockets)
        self._pending = b""  # the start of a frame not yet whole, or a read held for the sink
        self._limit: float = 0  # the largest frame websockets accepts, read once the short way starts
        self._sink: Sink | None = None  # the app's, once it attached one: data messages go there
        # Messages held back from the sink (`_backlog`, then the rest of a read in `_pending`; reading
        # paused): "app", until it calls `resume_delivery`; "turn", a read's share (`PER_TURN`) given,
        # until the loop has turned.
        self._held = ""
        self._backlog: deque[dict[str, Any]] = deque()  # messages read before the sink came, not yet given
        self._flushing = False  # the socket ended: everything held goes to the sink, no holding back

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        extensions: dict[str, Any] = self.scope["extensions"]
        extensions[DIRECT] = DirectFeed(self)

    # ------------------------------------------------------------ direct delivery

    def attach(self, sink: Sink) -> None:
        self._sink = sink
        rest: list[Any] = []
        while not self.queue.empty():  # read before the sink came: its first messages, in order
            message: Any = self.queue.get_nowait()
            (self._backlog if message["type"] == "websocket.receive" else rest).append(message)
        if rest:  # the socket is gone already: the app gets every message, then its end
            self._flush()
            for message in rest:
                self.queue.put_nowait(message)
        else:
            self._release()

    def resume_delivery(self) -> None:
        if self._held == "app":
            self._release()
        else:
            self._read_on()

    def connection_lost(self, exc: Exception | None) -> None:
        self._flush()  # what was read before the end reaches the app before the end, as uvicorn queues it
        super().connection_lost(exc)

    def _next_turn(self) -> None:
        if self._held == "turn":
            self._release()

    def _release(self) -> None:
        """Deliver what is held (messages, then the rest of a read) until done or held again; then read on."""
        self._held = ""
        given = 0
        backlog = self._backlog
        while backlog:
            given += 1
            if not self._deliver(backlog.popleft()):
                self._held = "app"
                return
            if given >= PER_TURN and (backlog or self._pending):
                self._hold_turn()
                return
        if self._pending:
            self.data_received(b"")
        self._read_on()

    def _hold_turn(self) -> None:
        """A read's share is given: the rest waits for the loop's other work."""
        self._held = "turn"
        self._pause_reading()
        self.loop.call_soon(self._next_turn)

    def _pause_reading(self) -> None:
        if not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    def _read_on(self) -> None:
        """Reading goes on, unless something is held or the socket is gone."""
        if not self._held and self.read_paused and not self.disconnected:
            self.read_paused = False
            self.transport.resume_reading()

    def _flush(self) -> None:
        """Everything held goes to the sink now, whatever it answers: the socket has ended."""
        if self._sink is None:
            return
        self._held, self._flushing = "", True
        try:
            while self._backlog:
                self._deliver(self._backlog.popleft())
            if self._pending:
                self.data_received(b"")
        finally:
            self._flushing = False

    def _deliver(self, message: dict[str, Any]) -> bool:
        """Queue ``message`` for the app's ``receive`` as uvicorn does, or hand it to the sink;
        False when reading is to pause (the sink asked, or uvicorn's one message at a time)."""
        sink = self._sink
        if sink is None:
            self.queue.put_nowait(message)  # type: ignore[arg-type]
            more = False
        else:
            try:
                more = sink(message)
            except Exception:  # the app's bug must not break the read loop: the message is lost, said loudly
                log.exception("the WebSocket app's sink failed on a message")
                more = True
        if not more and not self._flushing:
            self._pause_reading()
        return more

    def send_receive_event_to_app(self) -> None:
        """A message websockets read (fragmented, or after a hand-over), delivered as `_deliver` does."""
        data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
        self.frames = []
        if self.close_sent:
            return  # the app is past `websocket.close`: uvicorn discards what still comes
        if self.curr_msg_data_type == "text":
            try:
                message: dict[str, Any] = {"type": "websocket.receive", "text": data.decode()}
            except UnicodeDecodeError:
                self.logger.exception("Invalid UTF-8 sequence received from client.")
                self.conn.send_close(1007)
                self.handle_parser_exception()
                return
        else:
            message = {"type": "websocket.receive", "bytes": data}
        self._deliver(message)

    # ------------------------------------------------------------------ inbound

    def data_received(self, data: bytes) -> None:
        if not self._framing:
            if not self._at_frame_start():  # the handshake, or websockets inside a frame
                super().data_received(data)
                if self._at_frame_start():
                    self._framing, self._limit = True, self._largest()
                return
            self._framing, self._limit = True, self._largest()  # open since the app's accept: from the first frame
        if self._held:  # the sink is not taking messages now: the bytes wait with the rest held
            self._pending += data
            return
        buf = self._pending + data if self._pending else data
        self._pending = b""
        pos, size = 0, len(buf)
        conn, given = self.conn, 0
        while size - pos >= 2:
            first, second = buf[pos], buf[pos + 1]
            length, head = second & 0x7F, pos + 2
            if length == 126:
                if size - pos < 4:
                    break
                length, head = int.from_bytes(buf[pos + 2 : pos + 4], "big"), pos + 4
            elif length == 127:
                if size - pos < 10:
                    break
                length, head = int.from_bytes(buf[pos + 2 : pos + 10], "big"), pos + 10
            if not second & _MASKED or length > self._limit:
                self._hand_over(buf[pos:])  # websockets says what is wrong, and closes
                return
            end = head + 4 + length
            if end > size:
                break
            if first not in (_FIN_TEXT, _FIN_BINARY) or conn.current_size is not None:
                super().data_received(buf[pos:end])  # a control frame or a fragment: websockets' own
                pos = end
                if not self._open():
                    self._hand_over(buf[pos:])
                    return
                continue
            payload = apply_mask(buf[head + 4 : end], buf[head : head + 4])
            if first == _FIN_TEXT:
                try:
                    message: dict[str, Any] = {"type": "websocket.receive", "text": payload.decode()}
                except UnicodeDecodeError:
                    self._hand_over(buf[pos:])  # uvicorn closes with 1007, as for any invalid text
                    return
            else:
                message = {"type": "websocket.receive", "bytes": payload}
            pos = end
            if self.close_sent:
                continue  # the app is past `websocket.close`: uvicorn discards what still comes
            if self._sink is None or self._flushing:
                self._deliver(message)
                continue
            given += 1
            if not self._deliver(message):
                self._held = "app"  # the sink wants no more now: the rest waits, reading paused
                break
            if given >= PER_TURN and pos < size:  # a flood: the rest after the loop's other work
                self._hold_turn()
                break
        if pos < size:
            self._pending = buf[pos:]

    def _largest(self) -> float:
        """The largest frame websockets would accept here (uvicorn's ``ws_max_size``)."""
        conn = self.conn
        limits = [limit for limit in (conn.max_message_size, conn.max_fragment_size) if limit is not None]
        return min(limits) if limits else float("inf")

    def _hand_over(self, rest: bytes) -> None:
        """From here on websockets reads every byte, starting at a frame's first."""
        self._framing = False
        if rest:
            super().data_received(rest)

    def _open(self) -> bool:
        return self.conn.state is State.OPEN and not self.close_sent and not self.conn.extensions

    def _at_frame_start(self) -> bool:
        """Whether websockets, given everything so far, waits for the first byte of a new frame on
        an open socket: its buffer empty and its parser inside ``at_eof``, between two frames.
        Anything else (the handshake, half a frame, a state we do not know) says no, and the
        next read asks again."""
        conn = self.conn
        if not self._open() or self.conn.reader.buffer:
            return False
        parser: Any = conn.parser
        while isinstance(parser, GeneratorType) and parser.gi_yieldfrom is not None:
            parser = parser.gi_yieldfrom
        return isinstance(parser, GeneratorType) and parser.gi_code.co_name == "at_eof"

    # ----------------------------------------------------------------- outbound

    async def send(self, message: Any) -> None:
        if message["type"] != "websocket.send" or not self.handshake_complete or self.initial_response is not None:
            await super().send(message)
            return
        if not self.writable.is_set():  # the transport's buffer is full: wait, as uvicorn does
            await self.writable.wait()
        if self.disconnected:
            raise ClientDisconnected()
        if not self._open():
            await super().send(message)
            return
        data = message.get("bytes")
        if data is None:
            data = message.get("text")
            if data is None:
                return  # nothing to send: uvicorn sends nothing either
        self.write_message(data)

    def ready(self) -> bool:
        """`DirectFeed.ready`: `send` would write at once, on the short way."""
        return (self.handshake_complete and self.initial_response is None and self.writable.is_set()
                and not self.disconnected and self._open())

    def write_message(self, data: str | bytes) -> None:
        """A text (str) or binary message as one unmasked frame."""
        if isinstance(data, str):
            first, data = _FIN_TEXT, data.encode()
        else:
            first = _FIN_BINARY
        length = len(data)
        if length < 126:
            head = bytes((first, length))
        elif length < 65536:
            head = bytes((first, 126)) + length.to_bytes(2, "big")
        else:
            head = bytes((first, 127)) + length.to_bytes(8, "big")
        self.transport.write(head + data)
