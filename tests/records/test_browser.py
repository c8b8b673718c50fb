"""The pages in a real headless browser (Debian's chromium through Playwright): the link with the
token opens them, the timeline is drawn, the recording plays, and nothing opens without the token."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bridge.testing.fake_elevenlabs import FakeElevenLabs
from tests.e2e.conftest import bridge_settings, serve
from tests.records.conftest import TOKEN, finished_record, place_call


async def test_the_timeline_renders_and_the_recording_plays(fake_tts: FakeElevenLabs, script: Path, tmp_path: Path,
                                                             browser: Any) -> None:
    settings = bridge_settings(fake_tts, script, BRIDGE_DATABASE_URL=f"sqlite:///{tmp_path / 'r.db'}",
                               BRIDGE_ADMIN_TOKEN=TOKEN, BRIDGE_RECORD_AUDIO="true",
                               BRIDGE_RECORDINGS_DIR=str(tmp_path / "wav"))
    async with serve(settings) as bridge:
        call_id = await place_call(bridge.media_url)
        record = await finished_record(bridge.http, call_id)
        page = await (await browser.new_context(viewport={"width": 1200, "height": 900})).new_page()
        response = await page.goto(f"{bridge.http}/calls?token={TOKEN}")
        assert response.status == 200 and page.url == f"{bridge.http}/calls", "the token left the address"
        row = page.locator(f'tr[data-call-id="{call_id}"]')
        assert await row.count() == 1
        cells = await row.locator("td").all_inner_texts()
        assert cells[1].endswith("4567") and "•" in cells[1] and cells[3:5] == ["2", "1"]
        assert cells[6] == "caller hung up" and cells[5].endswith(" ms")
        await row.locator("a").click()
        await page.wait_for_url(f"{bridge.http}/calls/{call_id}")

        timeline = page.locator("svg#timeline")
        assert await timeline.is_visible()
        contexts = {t["context_ids"] for t in record["turns"]}
        drawn = await page.eval_on_selector_all("rect.seg.agent", "els => els.map(e => e.dataset.context)")
        assert set(drawn) == contexts and len(contexts) == 2, "a row of agent audio per TTS context"
        assert await page.locator("rect.seg.caller").count() == 1
        assert await page.locator("rect.barge-in").count() == 1 and await page.locator("line.clear").count() == 1
        box = await page.locator("rect.barge-in").bounding_box()
        assert box is not None and box["width"] > 0 and box["height"] > 0
        heard = await page.locator("#turns tr[data-turn='0'] td.heard").inner_text()
        assert "interrupted" in heard
        await page.screenshot(path=str(tmp_path / "call.png"), full_page=True)
        assert (tmp_path / "call.png").stat().st_size > 10_000

        audio = page.locator("audio#recording")
        await audio.click()  # a user gesture, so the autoplay policy lets it play
        playing = await page.evaluate("""async () => {
            const a = document.getElementById('recording');
            await a.play();
            await new Promise(r => setTimeout(r, 1200));
            return {time: a.currentTime, duration: a.duration, error: a.error && a.error.code, paused: a.paused};
        }""")
        assert playing["error"] is None and not playing["paused"] and playing["time"] > 0.5
        assert abs(playing["duration"] - record["duration_s"]) < 1.0


async def test_no_page_or_api_route_opens_without_the_token(script: Path, tmp_path: Path, browser: Any) -> None:
    settings = bridge_settings(None, script, BRIDGE_DATABASE_URL=f"sqlite:///{tmp_path / 'r.db'}",
                               BRIDGE_ADMIN_TOKEN=TOKEN)
    async with serve(settings) as bridge:
        page = await (await browser.new_context()).new_page()
        for route in ["/calls", "/calls/CA0", "/calls/CA0/audio.wav", "/api/calls", "/api/calls/CA0",
                      f"/calls?token={TOKEN[:-1]}x"]:
            response = await page.goto(bridge.http + route)
            assert response is not None and response.status == 401, route
