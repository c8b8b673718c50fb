"""The public entry point: ``uvicorn bridge.app:app`` and ``bridge.app.create_app``.

The app itself lives in :mod:`bridge.server.app`; this module keeps the documented name working.
``app`` is built on first use, so importing this module never reads settings.
"""

from __future__ import annotations

from typing import Any

from bridge.server import app as _server_app
from bridge.server.app import WS_MAX_SIZE, create_app

__all__ = ["WS_MAX_SIZE", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "app":
        return _server_app.app
    raise AttributeError(name)
