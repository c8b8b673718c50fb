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
"""

from __future__ import annotations

from types import GeneratorType
from typing import Any

from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import State

try:
    from websockets.speedups import apply_mask
except ImportError:  # websockets built without its C extension, as websockets.frames falls back
    from websockets.utils import apply_mask

__all__ = ["FrameProtocol"]

_FIN_TEXT = 0x81  # FIN, no RSV bits, opcode 1
_FIN_BINARY = 0x82  # FIN, no RSV bits, opcode 2
_MASKED = 0x80


class FrameProtocol(WebSocketsSansIOProtocol):
    """uvicorn's ``websockets-sansio`` protocol, with whole data frames read and written directly."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._framing = False  # whole frames are cut here (else every byte goes to websockets)
        self._pending = b""  # the start of a frame not yet whole
        self._limit: float = 0  # the largest frame websockets accepts, read once the short way starts

    # ------------------------------------------------------------------ inbound

    def data_received(self, data: bytes) -> None:
        if not self._framing:
            super().data_received(data)
            if self._at_frame_start():
                self._framing, self._limit = True, self._largest()
            return
        buf = self._pending + data if self._pending else data
        self._pending = b""
        pos, size = 0, len(buf)
        conn, queue = self.conn, self.queue
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
            queue.put_nowait(message)  # type: ignore[arg-type]
            if not self.read_paused:
                self.read_paused = True
                self.transport.pause_reading()
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
        text = message.get("text")
        data = message.get("bytes")
        if data is not None:
            first = _FIN_BINARY
        elif text is not None:
            first, data = _FIN_TEXT, text.encode()
        else:
            return  # nothing to send: uvicorn sends nothing either
        length = len(data)
        if length < 126:
            head = bytes((first, length))
        elif length < 65536:
            head = bytes((first, 126)) + length.to_bytes(2, "big")
        else:
            head = bytes((first, 127)) + length.to_bytes(8, "big")
        self.transport.write(head + data)
