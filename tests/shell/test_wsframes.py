"""`FrameProtocol` against uvicorn's own ``websockets-sansio`` protocol, byte for byte.

Each exchange is run twice through a real uvicorn server on 127.0.0.1, once per protocol, from
a raw socket that writes frames exactly as given (masked as a client must, or not, split at
any byte): what the app receives and every byte the client gets back must be the same. The
exchanges cover what a carrier sends (whole text frames, one or many per read, or cut anywhere)
and what only a broken or hostile peer would (fragments, pings, bad UTF-8, unmasked or oversized
frames, reserved bits and opcodes, data after a close).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import Frame

from bridge.server.wsframes import DIRECT, PER_TURN, FrameProtocol

MAX_SIZE = 100_000


def frame(payload: bytes, opcode: int = 1, *, fin: bool = True, rsv: int = 0, masked: bool = True,
          length: int | None = None) -> bytes:
    """One client frame, as a client writes it (masked) unless told otherwise."""
    n = len(payload) if length is None else length
    first = (0x80 if fin else 0) | rsv | opcode
    mask_bit = 0x80 if masked else 0
    if n < 126:
        head = bytes((first, mask_bit | n))
    elif n < 65536:
        head = bytes((first, mask_bit | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((first, mask_bit | 127)) + n.to_bytes(8, "big")
    if not masked:
        return head + payload
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def text(s: str) -> bytes:
    return frame(s.encode())


CLOSE = frame((1000).to_bytes(2, "big") + b"bye", 8)


def pieces(data: bytes, sizes: tuple[int, ...]) -> Iterator[bytes]:
    """``data`` cut into pieces of the given sizes, in turn."""
    pos, k = 0, 0
    while pos < len(data):
        yield data[pos : pos + sizes[k % len(sizes)]]
        pos += sizes[k % len(sizes)]
        k += 1


class Echo:
    """The app: records what it receives, echoes text and bytes; "close" makes it close first."""

    def __init__(self) -> None:
        self.received: list[Any] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "websocket"
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            self.note(message)
            if message["type"] == "websocket.disconnect":
                return
            await self.answer(message, send)

    def note(self, message: dict[str, Any]) -> None:
        self.received.append({k: v for k, v in message.items() if k != "type"} | {"type": message["type"]})

    @staticmethod
    async def answer(message: dict[str, Any], send: Any) -> None:
        """The echo of a text or binary message; "close" closes instead."""
        if message.get("text") == "close":
            await send({"type": "websocket.close", "code": 1000, "reason": "done"})
        elif message.get("text") is not None:
            await send({"type": "websocket.send", "text": "echo " + message["text"]})
        else:
            await send({"type": "websocket.send", "bytes": message["bytes"]})


class DirectEcho(Echo):
    """`Echo` taking its messages from `DirectFeed` as they are read (its replies sent by a task of
    their own, in order); ``hold``: the sink says no at these messages (1-based), and the app
    resumes the feed ``resume_s`` later; ``count_turns``: the turns of the event loop are counted
    (a callback that re-schedules itself, so the loop spins while the app runs)."""

    def __init__(self, hold: tuple[int, ...] = (), resume_s: float = 0.0, fail_at: int = 0,
                 count_turns: bool = False) -> None:
        super().__init__()
        self.hold, self.resume_s, self.fail_at, self.count_turns = hold, resume_s, fail_at, count_turns
        self.turns = 0  # turns of the event loop, if counted
        self.taken: list[tuple[float, int]] = []  # per message the sink took: when, and on which turn

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        loop = asyncio.get_running_loop()
        outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        feed = scope["extensions"][DIRECT]

        def turn() -> None:
            self.turns += 1
            ticker[0] = loop.call_soon(turn)

        ticker = [loop.call_soon(turn)] if self.count_turns else []

        def sink(message: dict[str, Any]) -> bool:
            self.note(message)
            self.taken.append((loop.time(), self.turns))
            if len(self.received) == self.fail_at:
                raise RuntimeError("a bug in the sink")
            outbox.put_nowait(message)
            if len(self.received) in self.hold:
                loop.call_later(self.resume_s, feed.resume)
                return False
            return True

        async def reply() -> None:
            while True:
                await self.answer(await outbox.get(), send)

        replier = asyncio.create_task(reply())
        feed.attach(sink)
        try:
            message = await receive()  # the sink takes every data message: only the end comes here
            while not outbox.empty() and not replier.done():
                await asyncio.sleep(0.001)
            self.note(message)
        finally:
            for handle in ticker:
                handle.cancel()
            replier.cancel()


async def exchange(protocol: type[WebSocketsSansIOProtocol], chunks: list[bytes], *, replies: int = 0,
                   then: tuple[bytes, ...] = (), app: Echo | None = None) -> tuple[list[Any], bytes]:
    """Serve `Echo` (or ``app``) with ``protocol``; write ``chunks`` one read apart (and, once
    ``replies`` frames came back, ``then``); return what the app received and every byte the
    client got after the handshake, up to the server closing."""
    app = Echo() if app is None else app
    config = uvicorn.Config(app, host="127.0.0.1", port=0, ws=protocol, ws_max_size=MAX_SIZE,
                            log_level="critical", lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write((f"GET /media HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        got = b""
        for k, chunk in enumerate(chunks + list(then)):
            if k == len(chunks):
                while len(server_frames(got, whole=True)) < replies:
                    got += await asyncio.wait_for(reader.read(65536), 10)
            writer.write(chunk)
            await writer.drain()
            await asyncio.sleep(0.002)  # one read each, as a carrier's 20 ms frames arrive
        got += await asyncio.wait_for(reader.read(), 10)  # until the server closes the socket
        writer.close()
        for _ in range(500):  # until the app is done with all it was given
            if not server.server_state.tasks:
                break
            await asyncio.sleep(0.01)
        return app.received, got
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task


def server_frames(data: bytes, whole: bool = False) -> list[tuple[int, bytes]]:
    """The server's frames (unmasked): (first byte, payload) each; ``whole``: only those complete."""
    out: list[tuple[int, bytes]] = []
    pos = 0
    while pos + 2 <= len(data):
        first, n = data[pos], data[pos + 1] & 0x7F
        pos += 2
        if n == 126:
            n, pos = int.from_bytes(data[pos : pos + 2], "big"), pos + 2
        elif n == 127:
            n, pos = int.from_bytes(data[pos : pos + 8], "big"), pos + 8
        if whole and pos + n > len(data):
            break
        out.append((first, data[pos : pos + n]))
        pos += n
    return out


MEDIA_TEXTS = ['{"event":"media","media":{"payload":"' + "A" * size + '"}}' for size in (0, 80, 160, 300)]
MEDIA = [text(t) for t in MEDIA_TEXTS]
BIG_TEXTS = ["x" * 120, "x" * 121, "y" * 65530, "y" * 65531, "z" * 70_000]  # echoes of 125, 126, 65535, 65536 bytes
BIG = [*(text(t) for t in BIG_TEXTS), frame(bytes(range(256)) * 3, 2)]
FRAMES = b"".join(MEDIA + BIG + MEDIA)
PING, PONG = frame(b"hi", 9), frame(b"late", 10)

# (chunks, the frames the server sends back to them, what follows once they are back): a close or a
# broken frame goes last and only once the replies are in, so that what the app reads first never
# races the socket's end.
Exchange = tuple[list[bytes], int, tuple[bytes, ...]]
EXCHANGES: dict[str, Exchange] = {
    "one frame per read": ([*MEDIA, *BIG], len(MEDIA + BIG), (CLOSE,)),
    "every frame in one read": ([FRAMES], 2 * len(MEDIA) + len(BIG), (CLOSE,)),
    "frames cut anywhere": (list(pieces(FRAMES, (1, 2, 3, 5, 8, 13, 700, 4096))), 2 * len(MEDIA) + len(BIG), (CLOSE,)),
    "ping and pong between frames": ([MEDIA[1], PING, MEDIA[2], PONG, MEDIA[3]], 4, (CLOSE,)),
    "a fragmented message": ([MEDIA[0], frame(b"ab", 1, fin=False), frame(b"cd", 0, fin=False),
                              frame(b"ef", 0) + MEDIA[1], frame(b"\x00\x01", 2, fin=False), frame(b"\x02", 0)],
                             4, (CLOSE,)),
    "invalid UTF-8": ([MEDIA[1]], 1, (frame(b"\xff\xfe") + MEDIA[2],)),
    "an unmasked frame": ([MEDIA[1]], 1, (frame(b"plain", 2, masked=False) + MEDIA[2],)),
    "a frame over the size limit": ([MEDIA[1]], 1, (frame(b"", length=MAX_SIZE + 1)[:10] + b"\x00" * 1000,)),
    "a reserved bit": ([MEDIA[1]], 1, (frame(b"rsv", rsv=0x40) + MEDIA[2],)),
    "a reserved opcode": ([MEDIA[1]], 1, (frame(b"op", 3) + MEDIA[2],)),
    "a continuation with nothing to continue": ([MEDIA[1]], 1, (frame(b"c", 0) + MEDIA[2],)),
    "a text frame inside a fragmented one": ([MEDIA[1]], 1, (frame(b"ab", 1, fin=False) + text("new") + MEDIA[2],)),
    "data after the close": ([MEDIA[1]], 1, (CLOSE + MEDIA[2],)),
    "the app closes first": ([MEDIA[1], text("close")], 2, (MEDIA[2] + CLOSE,)),
}


@pytest.mark.parametrize("name", EXCHANGES)
async def test_the_same_exchange_as_uvicorns_protocol(name: str) -> None:
    chunks, replies, then = EXCHANGES[name]
    ours = await exchange(FrameProtocol, chunks, replies=replies, then=then)
    theirs = await exchange(WebSocketsSansIOProtocol, chunks, replies=replies, then=then)
    assert ours[0] == theirs[0], "the app received something else"
    assert ours[1] == theirs[1], "the client got other bytes"
    assert server_frames(ours[1])[-1][0] == 0x88  # every exchange ends in a close


async def test_a_carriers_frames_arrive_whole_and_in_order() -> None:
    chunks, replies, then = EXCHANGES["frames cut anywhere"]
    received, got = await exchange(FrameProtocol, chunks, replies=replies, then=then)
    texts = [m["text"] for m in received if m.get("text") is not None]
    assert texts == [*MEDIA_TEXTS, *BIG_TEXTS, *MEDIA_TEXTS]
    assert [m["bytes"] for m in received if "bytes" in m] == [bytes(range(256)) * 3]
    replies_got = server_frames(got)
    assert [first for first, _ in replies_got[:-1]] == [0x81] * 9 + [0x82] + [0x81] * 4
    assert [payload.decode() for _, payload in replies_got[:9]] == ["echo " + t for t in texts[:9]]
    assert replies_got[-1][0] == 0x88 and replies_got[-1][1][:2] == (1000).to_bytes(2, "big")
    assert received[-1] == {"type": "websocket.disconnect", "code": 1000, "reason": "bye"}


@pytest.mark.parametrize(("name", "code"), [("invalid UTF-8", 1007), ("an unmasked frame", 1002),
                                             ("a frame over the size limit", 1009), ("a reserved opcode", 1002)])
async def test_a_broken_frame_closes_with_its_code(name: str, code: int) -> None:
    chunks, replies, then = EXCHANGES[name]
    received, got = await exchange(FrameProtocol, chunks, replies=replies, then=then)
    close = server_frames(got)[-1]
    assert close[0] == 0x88 and int.from_bytes(close[1][:2], "big") == code
    assert received[-1]["type"] == "websocket.disconnect" and received[-1]["code"] == code
    assert [m.get("text") for m in received[:-1]] == [MEDIA_TEXTS[1]]  # nothing after the broken frame


async def test_whole_data_frames_skip_the_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    """The point of the protocol: after the handshake websockets parses none of a carrier's frames."""
    parsed: list[int] = []
    original = Frame.parse.__func__  # type: ignore[attr-defined]

    def counting(cls: type[Frame], *args: Any, **kwargs: Any) -> Any:
        parsed.append(1)
        return (yield from original(cls, *args, **kwargs))

    monkeypatch.setattr(Frame, "parse", classmethod(counting))
    chunks = MEDIA * 10
    received, _ = await exchange(FrameProtocol, chunks, replies=40, then=(CLOSE,))
    assert len(received) == 41
    assert len(parsed) <= 3  # the first frame (read before the short way starts) and the close
    parsed.clear()
    await exchange(WebSocketsSansIOProtocol, chunks, replies=40, then=(CLOSE,))
    assert len(parsed) >= 41


@pytest.mark.parametrize("name", EXCHANGES)
async def test_a_sink_gets_what_receive_would_have(name: str) -> None:
    """`DirectFeed`: the same messages in the same order, the same bytes back, every exchange."""
    chunks, replies, then = EXCHANGES[name]
    ours = await exchange(FrameProtocol, chunks, replies=replies, then=then, app=DirectEcho())
    theirs = await exchange(WebSocketsSansIOProtocol, chunks, replies=replies, then=then)
    assert ours[0] == theirs[0], "the app received something else"
    assert ours[1] == theirs[1], "the client got other bytes"


async def test_a_sink_that_says_no_gets_the_rest_of_the_read_only_once_it_resumes() -> None:
    app = DirectEcho(hold=(2,), resume_s=0.3)
    received, _ = await exchange(FrameProtocol, [b"".join(MEDIA)], replies=4, then=(CLOSE,), app=app)
    assert [m.get("text") for m in received[:4]] == MEDIA_TEXTS
    (_, _), (held_at, _), (resumed_at, _), _ = app.taken
    assert resumed_at - held_at >= 0.29, "the rest of the read waited for the app"


async def test_a_flood_in_one_read_is_handed_over_a_share_per_turn_of_the_loop() -> None:
    app = DirectEcho(count_turns=True)
    received, _ = await exchange(FrameProtocol, [b"".join(MEDIA * 10)], replies=40, then=(CLOSE,), app=app)
    assert [m.get("text") for m in received[:40]] == MEDIA_TEXTS * 10
    per_turn = Counter(turn for _, turn in app.taken)
    assert PER_TURN < 40, "the flood is more than one share"
    assert max(per_turn.values()) <= PER_TURN and len(per_turn) >= -(-40 // PER_TURN)


async def test_a_sink_that_raises_loses_that_message_alone(caplog: pytest.LogCaptureFixture) -> None:
    app = DirectEcho(fail_at=2)
    received, got = await exchange(FrameProtocol, MEDIA, replies=3, then=(CLOSE,), app=app)
    assert [m.get("text") for m in received[:4]] == MEDIA_TEXTS
    assert len(server_frames(got)) == 4, "three echoes and the close: the failed message is not answered"
    assert "sink failed" in caplog.text
