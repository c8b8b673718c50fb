"""CPU per phone WebSocket message: uvicorn's ``websockets-sansio`` protocol against the bridge's.

    python -m bench.ws_message                 # medians of 7 passes of 20,000 messages each

One process, no sockets, on uvloop as the servers run: each protocol is given a transport that
counts what is written, the upgrade request of a carrier, then Twilio ``media`` messages of 20 ms
(masked, as a client sends them) one per read, as they arrive on a live call; an ASGI app reads
every message, as the bridge's phone reader does, and answers every fifth with one 100 ms
``media`` message, as the playout does while the agent talks. The CPU time per inbound message
(the app's reads and sends included) is the protocol's share of what the load benchmark's floor
(``bench.floor``) measures with the kernel and the rest of the event loop around it; without
them a run is steady to a few per cent on a busy machine.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import statistics
import time
from typing import Any

import uvicorn
import uvloop
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets.frames import Frame, Opcode

from bench.floor import MEDIA_100MS
from bridge.server.app import WS_MAX_SIZE
from bridge.server.wsframes import FrameProtocol
from bridge.tools.simulator import wire

__all__ = ["main", "per_message_us"]

PROTOCOLS: dict[str, type[WebSocketsSansIOProtocol]] = {
    "websockets-sansio": WebSocketsSansIOProtocol, "frames": FrameProtocol,
}
IDS = wire.StreamIds("ACbench", "MZbench", "CA")
UPGRADE = (b"GET /twilio/media HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: " + base64.b64encode(b"0123456789abcdef") + b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
INBOUND = Frame(Opcode.TEXT, wire.media(7, IDS, 6, 120, b"\xff" * 160).encode()).serialize(mask=True)
"""A 20 ms Twilio ``media`` message as the phone sends it: masked, as a client must."""


class _Transport(asyncio.Transport):
    """Counts what it is given and sends nothing: what goes out is the protocol's work, not the kernel's."""

    def __init__(self) -> None:
        super().__init__()
        self.written = 0

    def write(self, data: Any) -> None:
        self.written += len(data)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 40000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await receive()
    await send({"type": "websocket.accept"})
    count = 0
    while (await receive())["type"] == "websocket.receive":
        count += 1
        if count % 5 == 0:
            await send({"type": "websocket.send", "text": MEDIA_100MS})


async def _run(protocol: type[WebSocketsSansIOProtocol], messages: int) -> float:
    config = uvicorn.Config(_app, ws=protocol, ws_max_size=WS_MAX_SIZE, log_level="warning", lifespan="off")
    config.load()
    proto = protocol(config, ServerState(), {})
    transport = _Transport()
    proto.connection_made(transport)
    proto.data_received(UPGRADE)
    for _ in range(10):
        await asyncio.sleep(0)
    assert proto.handshake_complete
    start = time.process_time()
    for _ in range(messages):
        proto.data_received(INBOUND)
        await asyncio.sleep(0)  # the app's task reads it, as the phone reader does
    took = time.process_time() - start
    assert proto.queue.empty() and transport.written > messages // 5 * len(MEDIA_100MS)
    proto.connection_lost(None)
    return took / messages * 1e6


def per_message_us(protocol: str, messages: int = 20_000) -> float:
    """CPU µs per inbound message (and a fifth of an outbound one) through ``protocol``."""
    return uvloop.run(_run(PROTOCOLS[protocol], messages))  # the servers' loop


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ws_message", description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--passes", type=int, default=7)
    p.add_argument("--messages", type=int, default=20_000)
    a = p.parse_args(argv)
    runs: dict[str, list[float]] = {name: [] for name in PROTOCOLS}
    for _ in range(a.passes):  # the protocols in turn, so a change in the machine's load hits both
        for name in PROTOCOLS:
            runs[name].append(per_message_us(name, a.messages))
    print("| protocol | µs per inbound message (median) | CPU s per call-minute at 50 a second |\n|---|---:|---:|")
    for name, values in runs.items():
        us = statistics.median(values)
        print(f"| {name} | {us:.1f} | {us * 3000 / 1e6:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
