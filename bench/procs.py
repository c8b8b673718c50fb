"""Processes of a benchmark run, and what the kernel says they cost.

CPU time is read from ``/proc/PID/stat`` (utime + stime, in clock ticks) before and after the
load, so each process is charged only its own work; memory from ``/proc/PID/status`` (VmRSS,
sampled while the load runs, and VmHWM). Linux only, which is where the bridge is deployed.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Self

from tests.support import free_port, stop_process

__all__ = [
    "Prober",
    "Proc",
    "RssSampler",
    "free_port",
    "machine_busy_seconds",
    "machine_description",
    "wait_http",
    "wait_port",
]

_TICK = os.sysconf("SC_CLK_TCK")


class Proc:
    """One child process, started with its output going to a log file, stopped for sure."""

    def __init__(
        self, name: str, argv: Sequence[str], env: Mapping[str, str], log_path: Path, cwd: Path | None = None
    ) -> None:
        self.name = name
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.popen = subprocess.Popen(
            list(argv), env=dict(env), cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def cpu_seconds(self) -> float:
        """User + system CPU time so far of the process and its live descendants (0 once it is gone).

        Descendants count because some servers (Granian) serve from a worker process they spawn;
        a benchmark's servers keep their workers for the whole run, so before minus after holds."""
        return sum(_own_cpu_seconds(pid) for pid in _tree(self.pid))

    def status_kb(self, key: str) -> int:
        """A ``/proc/PID/status`` figure such as VmRSS, in kB, summed over the process and its live
        descendants, as `cpu_seconds` is (0 once the process is gone)."""
        return sum(_own_status_kb(pid, key) for pid in _tree(self.pid))

    def wait(self, timeout: float) -> int | None:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (uvicorn drains gracefully), then SIGKILL if it lingers."""
        stop_process(self.popen, timeout)
        self._log.close()

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


def _own_cpu_seconds(pid: int) -> float:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def _own_status_kb(pid: int, key: str) -> int:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def _tree(root: int) -> list[int]:
    """``root`` and every live process below it, from each process's parent in ``/proc/PID/stat``."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(parent, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


class _Periodic:
    """Calls ``sample`` every ``interval`` seconds in a daemon thread, from ``__enter__`` to ``__exit__``.

    A thread, because the run's main thread is blocked waiting for the load generators meanwhile.
    """

    def __init__(self, name: str, interval: float) -> None:
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.sample()

    def sample(self) -> None:
        raise NotImplementedError


class RssSampler(_Periodic):
    """Samples the resident set size of some processes in a thread; keeps each one's peak."""

    def __init__(self, procs: Sequence[Proc], interval: float = 0.2) -> None:
        super().__init__("rss-sampler", interval)
        self.procs = list(procs)
        self.peaks: dict[str, int] = {p.name: 0 for p in self.procs}

    def sample(self) -> None:
        for p in self.procs:
            self.peaks[p.name] = max(self.peaks[p.name], p.status_kb("VmRSS"))


class Prober(_Periodic):
    """Times a tiny HTTP request to each URL every ``interval``: how long a process takes to answer
    is how late its event loop runs, the first thing to look at when calls go wrong under load."""

    def __init__(self, urls: Mapping[str, str], interval: float = 0.1) -> None:
        super().__init__("prober", interval)
        self.urls = dict(urls)
        self.times: dict[str, list[float]] = {name: [] for name in self.urls}

    def sample(self) -> None:
        for name, url in self.urls.items():
            t0 = time.monotonic()
            with contextlib.suppress(OSError), contextlib.suppress(urllib.error.HTTPError):
                urllib.request.urlopen(url, timeout=5.0).close()
            self.times[name].append(time.monotonic() - t0)


def machine_busy_seconds() -> float:
    """CPU time spent by everything on the machine (all cores, not idle or iowait) since boot."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    ticks = [int(x) for x in fields]
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / _TICK


def wait_http(url: str, proc: Proc, timeout: float = 20.0) -> None:
    """Until ``url`` answers (any HTTP status), or raise with the process's last words."""

    def answers() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=1.0):
                return True
        except urllib.error.HTTPError:
            return True
        except OSError:
            return False

    _wait_for(proc, answers, f"answer {url}", timeout)


def wait_port(port: int, proc: Proc, timeout: float = 20.0) -> None:
    """Until something accepts on ``port``, or raise with the process's last words."""

    def listens() -> bool:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
        return False

    _wait_for(proc, listens, f"listen on {port}", timeout)


def _wait_for(proc: Proc, ready: Callable[[], bool], what: str, timeout: float) -> None:
    """Poll ``ready`` until it holds; a process that exits or stays silent fails with its log's tail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.log_tail()}")
        if ready():
            return
        time.sleep(0.05)
    raise RuntimeError(f"{proc.name} did not {what} within {timeout:.0f} s:\n{proc.log_tail()}")


def machine_description() -> dict[str, object]:
    """What the numbers were measured on: they mean little without it."""
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions = {}
    for package in ("uvicorn", "starlette", "websockets", "uvloop", "httptools", "orjson", "prometheus_client"):
        with contextlib.suppress(Exception):
            from importlib.metadata import version

            versions[package] = version(package)
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "python": sys.version.split()[0],
        "platform": sys.platform,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "versions": versions,
    }
