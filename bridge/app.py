"""The public entry point: ``python -m bridge.app`` (what the Procfile runs), ``uvicorn
bridge.app:app`` and ``bridge.app.create_app``.

The app itself lives in :mod:`bridge.server.app`; this module keeps the documented name working.
``app`` is built on first use, so importing this module never reads settings.

``python -m bridge.app`` serves it as it ships, for a process manager: one uvicorn worker with
the bridge's WebSocket protocol (`bridge.server.wsframes`, which uvicorn's command line cannot
name) and the 1 MiB frame limit, the same server as `bridge serve` without its banner for a person
at a terminal.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from bridge.server import app as _server_app
from bridge.server.app import WS_MAX_SIZE, create_app

__all__ = ["WS_MAX_SIZE", "create_app", "main"]


def __getattr__(name: str) -> Any:
    if name == "app":
        return _server_app.app
    raise AttributeError(name)


def main(argv: list[str] | None = None) -> int:
    from bridge.tools.serving import bind, load_or_exit, run_server

    p = argparse.ArgumentParser(prog="python -m bridge.app", description="Serve the bridge (one worker).")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")),
                   help="port to listen on (default $PORT, else 8000)")
    args = p.parse_args(argv)
    settings = load_or_exit()
    return run_server(settings, bind(args.host, args.port))


if __name__ == "__main__":
    raise SystemExit(main())
