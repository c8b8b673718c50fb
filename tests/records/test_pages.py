"""The call page as HTML: what the timeline draws from a record (no browser needed)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import httpx

from bridge.server.records.store import Store
from tests.e2e.conftest import bridge_settings, serve
from tests.records.conftest import TOKEN
from tests.records.factory import record


async def test_the_call_page_draws_every_part_of_the_record(script: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    store = Store(url)
    await store.migrate()
    now = datetime.now(UTC)  # within the retention the server enforces
    await store.save([record(1, started=now), replace(record(2, started=now), aec_refused="lag")], {})
    await store.aclose()
    settings = bridge_settings(None, script, BRIDGE_DATABASE_URL=url, BRIDGE_ADMIN_TOKEN=TOKEN)
    cookie = {"Cookie": f"bridge_admin={TOKEN}"}
    async with serve(settings) as bridge, httpx.AsyncClient(base_url=bridge.http, headers=cookie) as client:
        page = (await client.get(f"/calls/{record(1).call_id}")).text
        listing = (await client.get("/calls")).text
        refused = (await client.get(f"/calls/{record(2).call_id}")).text
    assert page.count('class="seg agent"') == 2 and 'data-context="ctx-1"' in page and 'data-context="ctx-2"' in page
    assert page.count('class="seg caller"') == 1 and page.count('class="clear"') == 1
    assert page.count('<rect class="barge-in"') == 1 and page.count('<rect class="reconnect"') == 1
    assert "TTS reconnect: lost at 2.00 s, back at 2.30 s (1011 server error)" in page
    assert "Hello, how" in page and "interrupted" in page and "340 ms" in page
    assert "<audio" not in page, "no player without a recording"
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", ""), "nothing loaded from elsewhere"
    assert "Echo canceller" not in page
    assert "<dt>Echo canceller</dt><dd>refused: its worker lagged behind its calls, or was busy" in refused
    assert "+1••••••0000" in listing and "+15551230000" not in listing and "340 ms" in listing
