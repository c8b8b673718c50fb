"""A hostile media-stream client, run as its own process so its CPU is not the server's.

``python -m tests.e2e.faults.flood URL COUNT`` connects like Twilio (``connected``, ``start``), then
sends COUNT messages as fast as the socket takes them: valid 20 ms media frames of silence, with
every tenth one junk (bad JSON, unknown events, bad base64), then ``stop``. It prints one line:
``sent COUNT in SECONDS s``. Exits 0 if the server kept the socket open through the flood.
"""

from __future__ import annotations

import json
import sys
import time

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from bridge.tools.simulator import wire

JUNK = ["{not json", json.dumps({"event": "telepathy"}), json.dumps({"event": "media", "media": {"payload": "%%"}})]


def flood(url: str, count: int) -> int:
    ids = wire.StreamIds.new(None, None, None)
    silence = b"\xff" * 160
    with connect(url, compression=None, max_size=None) as ws:
        ws.send(wire.connected())
        ws.send(wire.start(1, ids, {}))
        started = time.monotonic()
        try:
            for n in range(count):
                if n % 10 == 9:
                    ws.send(JUNK[n % len(JUNK)])
                else:
                    ws.send(wire.media(n + 2, ids, n + 1, n * 20, silence))
            elapsed = time.monotonic() - started
            ws.send(wire.stop(count + 2, ids))
        except ConnectionClosed as exc:
            print(f"closed by the server after {time.monotonic() - started:.2f} s: {exc}")
            return 1
    print(f"sent {count} in {elapsed:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(flood(sys.argv[1], int(sys.argv[2])))
