"""Calls through the running bridge are recorded, listed, and still there after a restart, on
SQLite and on a real PostgreSQL server; with recording on, the WAV holds both sides."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from bridge.testing.fake_elevenlabs import FakeElevenLabs
from tests.e2e.conftest import bridge_settings, serve, tone_share
from tests.records.conftest import CALLER_FROM, CALLER_TO, TOKEN, api_get, finished_record, place_call


def settings_for(fake: FakeElevenLabs, script: Path, database_url: str, **env: str):  # type: ignore[no-untyped-def]
    return bridge_settings(fake, script, BRIDGE_DATABASE_URL=database_url, BRIDGE_ADMIN_TOKEN=TOKEN, **env)


async def test_a_call_is_listed_and_its_record_survives_a_restart(
        fake_tts: FakeElevenLabs, script: Path, database_url: str) -> None:
    settings = settings_for(fake_tts, script, database_url)
    async with serve(settings) as bridge:
        call_id = await place_call(bridge.media_url)
        record = await finished_record(bridge.http, call_id)
        listed = await api_get(bridge.http, "/api/calls")
    assert isinstance(listed, dict)
    [summary] = listed["calls"]
    assert summary["call_id"] == call_id and summary["ended_how"] == "caller hung up"
    assert summary["from"] != CALLER_FROM and summary["from"].endswith(CALLER_FROM[-4:]), "masked in lists"
    assert record["from"] == CALLER_FROM and record["to"] == CALLER_TO
    assert summary["turns"] == len(record["turns"]) == 2 and summary["barge_ins"] == len(record["barge_ins"]) == 1
    greeting, reply = record["turns"]
    assert greeting["interrupted"] is True and len(greeting["heard_text"]) < len(greeting["agent_text"])
    assert reply["heard_text"] and reply["first_audio_sent_ms"] > 0 and reply["tts_first_audio_ms"] > 0
    assert 7.5 < record["duration_s"] < 9.5
    [barge] = record["barge_ins"]
    assert 0 < barge["reaction_ms"] < 500 and barge["clear_s"] >= barge["onset_s"]
    assert {s["kind"] for s in record["timeline"]} == {"caller", "agent", "clear"}

    async with serve(settings) as bridge:  # a new server process on the same database
        again = await api_get(bridge.http, f"/api/calls/{call_id}")
        listed_again = await api_get(bridge.http, "/api/calls")
    assert again == record
    assert isinstance(listed_again, dict) and [c["call_id"] for c in listed_again["calls"]] == [call_id]


async def test_cursor_paging_over_the_api(fake_tts: FakeElevenLabs, script: Path, tmp_path: Path) -> None:
    settings = settings_for(fake_tts, script, f"sqlite:///{tmp_path / 'r.db'}")
    async with serve(settings) as bridge:
        ids = [await place_call(bridge.media_url, duration=1.0, speech_at=None) for _ in range(3)]
        for call_id in ids:
            await finished_record(bridge.http, call_id)
        first = await api_get(bridge.http, "/api/calls?limit=2")
        assert isinstance(first, dict) and first["next_cursor"]
        second = await api_get(bridge.http, f"/api/calls?limit=2&cursor={first['next_cursor']}")
    assert isinstance(second, dict) and second["next_cursor"] is None
    assert [c["call_id"] for c in first["calls"] + second["calls"]] == ids[::-1], "newest first"


async def test_recording_is_stereo_caller_left_agent_right(fake_tts: FakeElevenLabs, script: Path,
                                                           tmp_path: Path) -> None:
    settings = settings_for(fake_tts, script, f"sqlite:///{tmp_path / 'r.db'}", BRIDGE_RECORD_AUDIO="true",
                            BRIDGE_RECORDINGS_DIR=str(tmp_path / "wav"))
    async with serve(settings) as bridge:
        call_id = await place_call(bridge.media_url, duration=6.0, speech_at=3.5)
        record = await finished_record(bridge.http, call_id)
    assert record["recording"] is True and record["recording_url"] == f"/calls/{call_id}/audio.wav"
    [path] = list((tmp_path / "wav").rglob("*.wav"))
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getframerate(), w.getsampwidth()) == (2, 8000, 2)
        stereo = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2)
    left, right = stereo[:, 0], stereo[:, 1]
    assert 5.5 < len(stereo) / 8000 < 7.0
    greeting = right[int(0.5 * 8000): int(3.0 * 8000)].tobytes()
    [cid] = [t["context_ids"] for t in record["turns"] if t["turn"] == 0]
    assert tone_share(greeting, fake_tts.frequency_of(cid)) > 0.8, "the agent's voice is on the right"
    assert np.abs(left[: int(3.4 * 8000)]).max() < 200 < np.abs(left[int(3.6 * 8000): 5 * 8000]).max()
    [clear] = [s["start_s"] for s in record["timeline"] if s["kind"] == "clear"]
    assert np.abs(right[int((clear + 0.05) * 8000): int((clear + 0.5) * 8000)]).max() == 0, "nothing after the clear"


async def test_records_off_writes_nothing(fake_tts: FakeElevenLabs, script: Path, tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    settings = settings_for(fake_tts, script, f"sqlite:///{db}", BRIDGE_RECORD_CALLS="false")
    async with serve(settings) as bridge:
        await place_call(bridge.media_url, duration=1.0, speech_at=None)
    assert not db.exists()


async def test_the_webhook_passes_who_called_to_the_media_stream(script: Path, tmp_path: Path) -> None:
    import httpx

    settings = bridge_settings(None, script, BRIDGE_DATABASE_URL=f"sqlite:///{tmp_path / 'r.db'}")
    async with serve(settings) as bridge, httpx.AsyncClient(base_url=bridge.http) as client:
        form = {"CallSid": "CA" + "1" * 32, "From": CALLER_FROM, "To": CALLER_TO}
        twiml = (await client.post("/twilio/voice", data=form)).text
        bad = await client.post("/twilio/voice", content=b"\xff\xfe", headers={"Content-Type": "multipart/form-data"})
    assert f'<Parameter name="from" value="{CALLER_FROM}"/>' in twiml
    assert f'<Parameter name="to" value="{CALLER_TO}"/>' in twiml
    assert bad.status_code == 200 and "<Stream" in bad.text, "a body that does not parse still gets the call through"


async def test_a_tts_reconnect_is_in_the_record_and_the_writer_in_metrics(
        fake_tts: FakeElevenLabs, script: Path, tmp_path: Path) -> None:
    import asyncio

    import httpx

    from bridge.tools.simulator import PhoneCall, Timeline

    settings = settings_for(fake_tts, script, f"sqlite:///{tmp_path / 'r.db'}")
    async with serve(settings) as bridge:
        phone = PhoneCall(bridge.media_url, caller=Timeline([]), duration=4.0)
        task = asyncio.create_task(phone.run())
        await asyncio.sleep(1.0)
        await fake_tts.drop_all(1011)
        await task
        record = await finished_record(bridge.http, phone.ids.call_sid)
        async with httpx.AsyncClient(base_url=bridge.http) as client:
            metrics = (await client.get("/metrics")).text
    [reconnect] = record["tts_reconnects"]
    assert 0.8 < reconnect["lost_s"] < reconnect["connected_s"] < 2.0 and reconnect["downtime_ms"] > 0
    assert "1011" in reconnect["reason"]
    written = [line for line in metrics.splitlines() if line.startswith("bridge_records_written_total ")]
    assert written and float(written[0].split()[1]) >= 2
    assert "bridge_records_lost_total" in metrics and "bridge_records_pending" in metrics


async def test_a_call_ended_by_a_drain_says_so(fake_tts: FakeElevenLabs, script: Path, tmp_path: Path) -> None:
    import asyncio

    from bridge.tools.simulator import PhoneCall, Timeline

    settings = settings_for(fake_tts, script, f"sqlite:///{tmp_path / 'r.db'}", BRIDGE_DRAIN_TIMEOUT_S="0")
    async with serve(settings) as bridge:
        phone = PhoneCall(bridge.media_url, caller=Timeline([]), duration=10.0)
        task = asyncio.create_task(phone.run())
        await asyncio.sleep(1.5)
        await bridge.app.state.drainer.drain()
        await task
        record = await finished_record(bridge.http, phone.ids.call_sid)
    assert record["ended_how"] == "drain" and record["end_detail"] == "shutdown"
    assert record["duration_s"] < 5


async def test_a_database_that_is_down_costs_the_call_nothing(fake_tts: FakeElevenLabs, script: Path) -> None:
    import httpx

    from bridge.tools.simulator import PhoneCall, Timeline
    from tests.records.conftest import free_port

    down = f"postgresql://bridge@127.0.0.1:{free_port()}/calls"  # nothing listens there
    async with serve(settings_for(fake_tts, script, down)) as bridge:
        report = await PhoneCall(bridge.media_url, caller=Timeline([]), duration=3.0).run()
        writer = bridge.app.state.records.writer
        async with httpx.AsyncClient(base_url=bridge.http) as client:
            listed = await client.get("/api/calls", headers={"Authorization": f"Bearer {TOKEN}"})
        assert writer.pending == 1 and writer.lost == 0, "the record waits in memory"
    assert report.greeting_latency is not None and report.greeting_latency < 0.6
    assert listed.status_code == 503
    assert writer.lost == 1, "given up only when the server stopped, and counted"
