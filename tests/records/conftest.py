"""Fixtures for call records: a real PostgreSQL server from the system's packages, Debian's
chromium driven by Playwright, and the bridge under uvicorn with records on.

PostgreSQL: initdb and pg_ctl run as an unprivileged user (``postgres`` when root runs the
tests) in a fresh temporary directory, on a free loopback port, trust auth, stopped at the end.
Without the server binaries the tests skip with one line, except under ``CI=true``, where a
missing system package must fail the run instead of passing it quietly.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.conftest import fake_tts, script  # noqa: F401  (the e2e fixtures, used here too)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TOKEN = "test-admin-token-4f9c2b7e"


def missing(reason: str) -> None:
    """Skip, or fail under CI, where every system package the tests need must be installed."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: install it, see .ci/run)")
    pytest.skip(reason)


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Postgres:
    """A running server; ``stop``/``start`` take it down and bring it back on the same port."""

    pg_ctl: str
    data: Path
    port: int
    user: str | None  # run the binaries as this user (when the tests run as root)

    def _run(self, *args: str) -> None:
        cmd = [self.pg_ctl, *args]
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.data.parent} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("-D", str(self.data), "-o", options, "-l", str(self.data.parent / "log"), "-w", "start")

    def stop(self) -> None:
        self._run("-D", str(self.data), "-m", "fast", "-w", "stop")

    @property
    def admin_url(self) -> str:
        return f"postgresql://bridge@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql://bridge@127.0.0.1:{self.port}/{database}"


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        missing("PostgreSQL server not installed (apt-get install -y postgresql)")
    assert initdb is not None and pg_ctl is not None
    user = None
    if os.geteuid() == 0:
        user = next((u for u in ("postgres", "nobody") if _has_user(u)), None)
        if user is None:
            missing("no unprivileged user to run PostgreSQL as")
    root = Path(tempfile.mkdtemp(prefix="bridge-pg-"))
    data = root / "data"
    if user:
        shutil.chown(root, user)
    cmd = [initdb, "-D", str(data), "-U", "bridge", "--auth=trust", "-E", "UTF8", "--no-sync"]
    subprocess.run((["runuser", "-u", user, "--"] if user else []) + cmd, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
    server = Postgres(pg_ctl, data, free_port(), user)
    server.start()
    try:
        yield server
    finally:
        with contextlib.suppress(Exception):
            server.stop()
        shutil.rmtree(root, ignore_errors=True)


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


async def create_database(server: Postgres) -> str:
    """A fresh, empty database on the shared server, for one test."""
    import asyncpg

    name = "t_" + uuid.uuid4().hex[:12]
    conn = await asyncpg.connect(server.admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return server.url(name)


@pytest.fixture
async def pg_url(postgres: Postgres) -> str:
    return await create_database(postgres)


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test that takes this runs on both databases."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'records.db'}"
    return await create_database(request.getfixturevalue("postgres"))


@pytest.fixture(scope="session")
def chromium_path() -> str:
    if not Path(CHROMIUM).exists():
        missing("chromium not installed (apt-get install -y chromium)")
    try:
        import playwright  # noqa: F401
    except ImportError:
        missing("the playwright package is not installed (pip install playwright; never `playwright install`)")
    return CHROMIUM


@pytest.fixture
async def browser(chromium_path: str) -> AsyncIterator[object]:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        launched = await p.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


async def wait_until(predicate: object, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if predicate():  # type: ignore[operator]
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


CALLER_FROM, CALLER_TO = "+15551234567", "+15557654321"


async def place_call(media_url: str, duration: float = 8.0, speech_at: float | None = 2.0) -> str:
    """A Twilio-protocol call from the phone simulator, with the caller speaking over the greeting
    at ``speech_at``; returns the carrier's call id (CallSid)."""
    from bridge.tools.simulator import PhoneCall, Timeline
    from tests.support import SPEECH

    caller = Timeline.from_files([(speech_at, SPEECH / "caller_02.wav")]) if speech_at is not None else Timeline([])
    phone = PhoneCall(media_url, caller=caller, duration=duration,
                      custom_parameters={"from": CALLER_FROM, "to": CALLER_TO})
    await phone.run()
    return phone.ids.call_sid


async def api_get(http: str, path: str, token: str = TOKEN) -> object:
    import httpx

    async with httpx.AsyncClient(base_url=http, timeout=10) as client:
        response = await client.get(path, headers={"Authorization": f"Bearer {token}"})
        response.raise_for_status()
        return response.json()


async def finished_record(http: str, call_id: str, timeout: float = 10.0) -> dict:
    """The call's record once its final version is in the database."""
    import httpx

    async with httpx.AsyncClient(base_url=http, timeout=10) as client:
        for _ in range(int(timeout / 0.1)):
            response = await client.get(f"/api/calls/{call_id}", headers={"Authorization": f"Bearer {TOKEN}"})
            if response.status_code == 200 and response.json()["ended_how"]:
                return dict(response.json())
            await asyncio.sleep(0.1)
    raise AssertionError(f"no finished record of {call_id}")
