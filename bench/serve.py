"""One uvicorn worker with the bridge's WebSocket protocol, serving any app: the benchmarks' server.

    python -m bench.serve bridge.app:app --port 8000

`bridge serve`, the Procfile and gunicorn.conf.py's worker run uvicorn with
`bridge.server.wsframes.FrameProtocol`, which uvicorn's command line cannot name (``--ws`` takes
only uvicorn's own). This runs the same configuration with the app given by its import string,
so that the load benchmark measures what ships, and the floor apps of ``bench.floor`` can be
measured on the same transport.
"""

from __future__ import annotations

import argparse

import uvicorn

from bridge.server.app import WS_MAX_SIZE
from bridge.server.wsframes import FrameProtocol

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.serve", description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("app", help="the ASGI app's import string, e.g. bridge.app:app")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--loop", choices=("auto", "uvloop", "asyncio"), default="auto")
    p.add_argument("--http", choices=("auto", "httptools", "h11"), default="auto")
    a = p.parse_args(argv)
    uvicorn.run(a.app, host=a.host, port=a.port, loop=a.loop, http=a.http, ws=FrameProtocol, ws_max_size=WS_MAX_SIZE,
                log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
