"""gunicorn settings for bridge: ``gunicorn bridge.app:app`` (gunicorn reads this file by itself).

Each worker is a uvicorn event loop (the ``uvicorn-worker`` package; uvloop and httptools come
with ``uvicorn[standard]``) carrying many independent calls. See docs/scaling.md for sizing and
for what each setting here is for. Install with ``pip install 'bridge[scale]'``. Do not pass
``-k`` on the command line: it would replace :class:`BridgeWorker` and its WebSocket size limit.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Any

from uvicorn_worker import UvicornWorker

from bridge.config import ConfigError, Settings, load_settings


def _settings() -> Settings:
    """The bridge's settings, read once in the master before any worker starts.

    A bad setting then stops gunicorn with one line and exit code 2. Found only in the workers,
    it would make every worker exit with code 2, which gunicorn answers by starting another: a
    restart loop that never serves and never stops.
    """
    try:
        return load_settings()
    except ConfigError as exc:
        print(f"bridge: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


class BridgeWorker(UvicornWorker):  # type: ignore[misc]
    """uvicorn's gunicorn worker with the WebSocket protocol and frame limit `bridge serve` (the
    Procfile) runs: `bridge.server.wsframes.FrameProtocol`, uvicorn's ``websockets-sansio`` with
    whole data frames read and written directly (measured in docs/benchmarks.md), and 1 MiB.

    The plain worker keeps uvicorn's 16 MiB default, so an oversized frame would be read into
    memory before the app could ignore it.
    """

    def init_process(self) -> None:
        # after the fork: the master never imports the app
        from bridge.server.app import WS_MAX_SIZE
        from bridge.server.wsframes import FrameProtocol

        self.config.ws_max_size = WS_MAX_SIZE
        self.config.ws = FrameProtocol
        super().init_process()


_server = _settings().server

bind = os.environ.get("BIND", f"0.0.0.0:{os.environ.get('PORT', '8000')}")
workers = int(os.environ.get("WEB_CONCURRENCY", os.cpu_count() or 1))  # one per core: a worker uses one core
worker_class = BridgeWorker
# Heartbeat, not a request timeout: a uvicorn worker reports from its event loop about every
# timeout/2 s however long its WebSockets live, so only a worker whose loop is stuck this long
# (every call on it already silent) is killed and replaced.
timeout = int(os.environ.get("WORKER_TIMEOUT", "30"))
# gunicorn's hard stop: workers still alive this long after SIGTERM are killed. The app's own
# drain (server.drain_timeout_s, then up to 5 s to end the remaining calls cleanly) must fit inside
# it, or calls are cut without a goodbye; so it follows drain_timeout_s unless set explicitly.
graceful_timeout = int(os.environ.get("GRACEFUL_TIMEOUT", math.ceil(_server.drain_timeout_s) + 10))
keepalive = 5  # idle HTTP keep-alive (webhooks, health checks); WebSockets are not affected
# The heartbeat file is touched every few seconds; on a disk-backed /tmp that write can stall the
# event loop, so it lives in memory where there is such a place.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
# The app is built in each worker after the fork (no preload): nothing, metrics files included,
# is shared across the fork by accident.
preload_app = False


def on_starting(server: Any) -> None:
    """Metrics shared by the workers (PROMETHEUS_MULTIPROC_DIR) start from nothing.

    Only prometheus_client's own ``*.db`` files are removed: the directory may hold other files
    (it may even be a general temporary directory), and those are not ours to delete.
    """
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if folder:
        path = Path(folder)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink(missing_ok=True)


def child_exit(server: Any, worker: Any) -> None:
    """A worker is gone: its live-call gauge must not linger in /metrics."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
