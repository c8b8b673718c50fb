"""gunicorn settings for bridge: ``gunicorn bridge.app:app`` (gunicorn reads this file by itself).

Each worker is a uvicorn event loop (the ``uvicorn-worker`` package; uvloop and httptools come
with ``uvicorn[standard]``) carrying many independent calls. See docs/scaling.md for sizing.
Install with ``pip install 'bridge[scale]'``.
"""

import os
import shutil
from pathlib import Path

bind = os.environ.get("BIND", f"0.0.0.0:{os.environ.get('PORT', '8000')}")
workers = int(os.environ.get("WEB_CONCURRENCY", os.cpu_count() or 1))  # one per core: a worker uses one core
worker_class = "uvicorn_worker.UvicornWorker"
# A phone call is one long WebSocket: no request timeout may cut it, and a graceful stop must let
# live calls finish (the app drains for server.drain_timeout_s, 30 s by default).
timeout = 0
graceful_timeout = int(os.environ.get("GRACEFUL_TIMEOUT", "40"))
keepalive = 5


def on_starting(server: object) -> None:
    """Metrics shared by the workers (PROMETHEUS_MULTIPROC_DIR) start from an empty directory."""
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if folder:
        shutil.rmtree(folder, ignore_errors=True)
        Path(folder).mkdir(parents=True, exist_ok=True)


def child_exit(server: object, worker: object) -> None:
    """A worker is gone: its live-call gauge must not linger in /metrics."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[attr-defined]
