"""Only the admin token opens the records: Bearer for the API, a cookie set from ``?token=`` for
the pages; 401 on every route otherwise, and the token never shows in a log."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import httpx
import pytest

from bridge.server.records import admin_token
from bridge.tools.serving import banner
from tests.e2e.conftest import bridge_settings, serve
from tests.records.conftest import TOKEN

ROUTES = ["/api/calls", "/api/calls/CA0", "/calls", "/calls/CA0", "/calls/CA0/audio.wav"]
PAGES = [r for r in ROUTES if r.startswith("/calls")]


@pytest.fixture
def settings(script: Path, tmp_path: Path):  # type: ignore[no-untyped-def]
    return bridge_settings(None, script, BRIDGE_DATABASE_URL=f"sqlite:///{tmp_path / 'r.db'}",
                           BRIDGE_ADMIN_TOKEN=TOKEN)


async def test_every_route_answers_401_without_the_token(settings, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.DEBUG)
    wrong = TOKEN[:-1] + "x"
    async with serve(settings) as bridge, httpx.AsyncClient(base_url=bridge.http) as client:
        for route in ROUTES:
            assert (await client.get(route)).status_code == 401, route
            assert (await client.get(route, headers={"Authorization": f"Bearer {wrong}"})).status_code == 401
            assert (await client.get(route, params={"token": wrong})).status_code == 401, route
            assert (await client.get(route, headers={"Cookie": f"bridge_admin={wrong}"})).status_code == 401, route
        for route in ROUTES[:2]:  # the API takes the header only, not the pages' cookie
            assert (await client.get(route, headers={"Cookie": f"bridge_admin={TOKEN}"})).status_code == 401, route
        assert (await client.get("/api/calls", headers={"Authorization": f"Bearer {TOKEN}"})).status_code == 200
        assert (await client.get("/api/calls/CA0", headers={"Authorization": f"Bearer {TOKEN}"})).status_code == 404
        assert (await client.get("/healthz")).status_code == 200, "the rest of the server is as open as before"
    server_side = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith(("bridge", "uvicorn")))
    assert TOKEN not in server_side and TOKEN[:8] not in server_side


def test_access_logs_never_show_the_token() -> None:
    from bridge.server.records.access import RedactToken

    record = logging.LogRecord("uvicorn.access", logging.INFO, "", 0, '%s - "%s %s HTTP/%s" %d', (
        "127.0.0.1:5000", "GET", f"/calls?limit=5&token={TOKEN}", "1.1", 303), None)
    assert RedactToken().filter(record)
    assert TOKEN not in record.getMessage() and "/calls?limit=5&token=[redacted]" in record.getMessage()


async def test_a_page_takes_the_token_once_and_sets_a_strict_cookie(settings) -> None:  # type: ignore[no-untyped-def]
    async with serve(settings) as bridge, httpx.AsyncClient(base_url=bridge.http) as client:
        first = await client.get("/calls", params={"token": TOKEN, "limit": "5"})
        assert first.status_code == 303
        assert first.headers["location"] == "/calls?limit=5", "the token leaves the address bar"
        cookie = first.headers["set-cookie"].lower()
        assert f"bridge_admin={TOKEN.lower()}" in cookie
        assert "httponly" in cookie and "secure" in cookie and "samesite=strict" in cookie
        page = await client.get("/calls", headers={"Cookie": f"bridge_admin={TOKEN}"})
        assert page.status_code == 200 and "No calls recorded yet" in page.text
        assert TOKEN not in page.text


def test_without_a_configured_token_serve_makes_one_and_prints_the_link(script: Path, tmp_path: Path) -> None:
    settings = bridge_settings(None, script, BRIDGE_DATABASE_URL=f"sqlite:///{tmp_path / 'r.db'}")
    assert settings.server.admin_token is None
    token = admin_token(None)
    assert len(token) >= 24 and admin_token(None) == token, "one token per process, the app's and the banner's"
    with socket.create_server(("127.0.0.1", 0)) as sock:
        lines = banner(settings, sock)
        port = sock.getsockname()[1]
    assert f"  call records: http://127.0.0.1:{port}/calls?token={token}" in lines
    configured = bridge_settings(None, script, BRIDGE_ADMIN_TOKEN=TOKEN)
    with socket.create_server(("127.0.0.1", 0)) as sock:
        assert not any(TOKEN in line for line in banner(configured, sock)), "a configured token is not printed"
    assert TOKEN not in repr(configured)
