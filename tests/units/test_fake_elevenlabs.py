"""The fake ElevenLabs server must behave like protocols.md §1 says the real one does.

Every other test that drives the bridge against the fake trusts these behaviours, so they are
checked here from the outside, with a plain websockets client speaking the wire protocol.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
import soxr
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, InvalidStatus

from bridge.core.audio import ulaw_to_pcm
from bridge.testing.fake_elevenlabs import (
    SAMPLE_RATES,
    FakeElevenLabs,
    MultiContextSession,
    SessionParams,
)

KEY = "test-key"
TEXT = "Testing one two three. "
INIT = {"text": " ", "voice_settings": {"stability": 0.5, "similarity_boost": 0.75, "speed": 1.0}}


# -- helpers -----------------------------------------------------------------------------------


def fast(**options: Any) -> FakeElevenLabs:
    """A fake that answers in milliseconds, so every test stays well under a second."""
    settings: dict[str, Any] = {"ttfb": 0.005, "realtime_factor": None}
    settings.update(options)
    return FakeElevenLabs(api_key=KEY, **settings)


def dial(fake: FakeElevenLabs, key: str | None = KEY, **query: Any) -> connect:
    query.setdefault("output_format", "ulaw_8000")
    headers = {"xi-api-key": key} if key is not None else {}
    return connect(fake.stream_url("voice-1", **query), additional_headers=headers, open_timeout=2)


async def send(ws: ClientConnection, **message: Any) -> None:
    await ws.send(json.dumps(message))


async def init(ws: ClientConnection, context_id: str) -> None:
    await send(ws, context_id=context_id, **INIT)


async def recv(ws: ClientConnection, timeout: float = 2.0) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout))
    return message


async def expect_silence(ws: ClientConnection, seconds: float = 0.15) -> None:
    with pytest.raises(TimeoutError):
        message = await asyncio.wait_for(ws.recv(), seconds)
        pytest.fail(f"unexpected message: {message[:200]!r}")


async def until_final(ws: ClientConnection, timeout: float = 2.0) -> list[dict[str, Any]]:
    """Every message up to and including the first final."""
    messages: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while not (messages and (messages[-1].get("isFinal") or messages[-1].get("is_final"))):
            messages.append(await recv(ws))
    return messages


async def audio_bytes(ws: ClientConnection, count: int, timeout: float = 2.0) -> list[dict[str, Any]]:
    """Audio messages until ``count`` bytes have arrived; fails on anything else."""
    messages: list[dict[str, Any]] = []
    total = 0
    async with asyncio.timeout(timeout):
        while total < count:
            message = await recv(ws)
            assert "audio" in message, message
            messages.append(message)
            total += len(base64.b64decode(message["audio"]))
    assert total == count
    return messages


def expected_bytes(text: str, output_format: str, ms_per_char: float = 55.0) -> int:
    width = 1 if output_format == "ulaw_8000" else 2
    return round(len(text) * ms_per_char * SAMPLE_RATES[output_format] / 1000) * width


def pcm_of(output_format: str, messages: list[dict[str, Any]]) -> np.ndarray:
    raw = b"".join(base64.b64decode(m["audio"]) for m in messages if m.get("audio"))
    if output_format == "ulaw_8000":
        raw = ulaw_to_pcm(raw)
    return np.frombuffer(raw, "<i2").astype(np.float64)


def dominant_frequency(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[np.argmax(spectrum)])


@pytest.fixture
async def fake() -> AsyncIterator[FakeElevenLabs]:
    async with fast() as server:
        yield server


# -- handshake and auth ------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["wrong-key", None])
async def test_bad_or_missing_key_gets_error_frame_then_1008(fake: FakeElevenLabs, key: str | None) -> None:
    async with dial(fake, key=key) as ws:
        assert await recv(ws) == {"message": "Invalid API key", "error": "invalid_api_key", "code": 1008}
        with pytest.raises(ConnectionClosedError) as closed:
            await recv(ws)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    assert fake.connections[0].closed_code == 1008


async def test_wrong_path_is_404_at_handshake(fake: FakeElevenLabs) -> None:
    url = f"{fake.base_url}/v1/text-to-speech/voice-1/stream-input?output_format=ulaw_8000"
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url, additional_headers={"xi-api-key": KEY}):
            pass
    assert refused.value.response.status_code == 404
    assert fake.connections == []


async def test_headers_and_query_are_recorded(fake: FakeElevenLabs) -> None:
    async with dial(fake, model_id="eleven_flash_v2_5", auto_mode=True) as ws:
        await send(ws, text="")
        await fake.wait_until(lambda: len(fake.connections[0].messages) == 1)
    record = fake.connections[0]
    assert record.headers["xi-api-key"] == KEY
    assert record.query == {
        "model_id": "eleven_flash_v2_5",
        "auto_mode": "true",
        "output_format": "ulaw_8000",
    }
    assert record.voice_id == "voice-1"
    assert record.messages[0][1] == {"text": ""}


# -- audio -------------------------------------------------------------------------------------


@pytest.mark.parametrize("output_format", sorted(SAMPLE_RATES))
async def test_flushed_context_speaks_its_tone_in_the_requested_format(
    fake: FakeElevenLabs, output_format: str
) -> None:
    rate = SAMPLE_RATES[output_format]
    async with dial(fake, output_format=output_format) as ws:
        await init(ws, "c1")
        await send(ws, text=TEXT, context_id="c1", flush=True)
        messages = await audio_bytes(ws, expected_bytes(TEXT, output_format))
        await expect_silence(ws)  # flush never produces isFinal

        samples = pcm_of(output_format, messages)
        tone = fake.frequency_of("c1")
        assert 300 <= tone <= 3000
        assert abs(dominant_frequency(samples, rate) - tone) < 3
        assert abs(np.max(np.abs(samples)) / 32767 - 10 ** (-12 / 20)) < 0.03  # about -12 dBFS
        phone = soxr.resample(samples, rate, 8000)  # still identifiable on the phone line
        assert abs(dominant_frequency(phone, 8000) - tone) < 3

        await send(ws, context_id="c1", close_context=True)
        assert await recv(ws) == {"isFinal": True, "contextId": "c1"}
    assert fake.contexts()["c1"].flushes == 1


async def test_contexts_get_distinct_tones(fake: FakeElevenLabs) -> None:
    async with dial(fake) as ws:
        for cid in ("a", "b", "c"):
            await init(ws, cid)
        await fake.wait_until(lambda: len(fake.contexts()) == 3)
    tones = [fake.frequency_of(cid) for cid in ("a", "b", "c")]
    assert len(set(tones)) == 3 and all(300 <= t <= 3000 for t in tones)


async def test_chunks_are_not_20ms_frames() -> None:
    async with fast(ms_per_char=80) as fake, dial(fake) as ws:
        await init(ws, "c1")
        text = "A long enough sentence to be cut into many chunks of audio. "
        await send(ws, text=text, context_id="c1", flush=True)
        messages = await audio_bytes(ws, expected_bytes(text, "ulaw_8000", 80))
    sizes = [len(base64.b64decode(m["audio"])) for m in messages]
    assert len(sizes) > 5
    assert any(size % 160 for size in sizes)
    assert any(size % 2 for size in sizes)
    assert all(320 <= size <= 2400 for size in sizes[:-1])  # 40 to 300 ms at 8 kB/s


async def test_ttfb_and_realtime_pacing() -> None:
    async with fast(ttfb=0.1, realtime_factor=10.0) as fake, dial(fake) as ws:
        await init(ws, "c1")
        start = asyncio.get_running_loop().time()
        await send(ws, text=TEXT, context_id="c1", flush=True)
        await recv(ws)
        first = asyncio.get_running_loop().time() - start
        await audio_bytes(ws, expected_bytes(TEXT, "ulaw_8000") - fake.contexts()["c1"].audio_bytes)
        total = asyncio.get_running_loop().time() - start
    assert 0.09 <= first < 0.3
    assert total >= 0.1 + 1.265 / 10 * 0.8  # paced, not dumped at once


# -- context lifecycle -------------------------------------------------------------------------


async def test_close_context_is_graceful_remaining_audio_then_final() -> None:
    async with fast(realtime_factor=10.0) as fake, dial(fake) as ws:
        text = "This sentence is long enough to still be playing after the close. "
        await init(ws, "c1")
        await send(ws, text=text, context_id="c1", flush=True)
        first = await recv(ws)
        assert first["contextId"] == "c1" and first["audio"]
        await send(ws, context_id="c1", close_context=True)
        rest = await until_final(ws)
    assert rest[-1] == {"isFinal": True, "contextId": "c1"}
    after = sum(len(base64.b64decode(m["audio"])) for m in rest[:-1])
    assert after > 0
    assert len(base64.b64decode(first["audio"])) + after == expected_bytes(text, "ulaw_8000")
    assert 0 < len(fake.audio_after_close("c1")) <= after
    summary = fake.contexts()["c1"]
    assert summary.closed and summary.final_sent and summary.close_reason == "close_context"


async def test_close_context_voices_unflushed_text() -> None:
    async with fast() as fake, dial(fake) as ws:
        await init(ws, "c1")
        await send(ws, text="Held back. ", context_id="c1")
        await expect_silence(ws)  # below the 120-character schedule step
        await send(ws, context_id="c1", close_context=True)
        messages = await until_final(ws)
    assert sum(len(base64.b64decode(m["audio"])) for m in messages[:-1]) == expected_bytes(
        "Held back. ", "ulaw_8000"
    )


async def test_schedule_buffers_until_first_step() -> None:
    async with fast() as fake, dial(fake) as ws:
        await init(ws, "c1")
        part = "word " * 10  # 50 characters
        await send(ws, text=part, context_id="c1")
        await send(ws, text=part, context_id="c1")
        await expect_silence(ws)
        await send(ws, text=part, context_id="c1")  # 150 >= 120: generation starts
        await audio_bytes(ws, expected_bytes(part * 3, "ulaw_8000"))
    assert fake.contexts()["c1"].flushes == 0


async def test_auto_mode_generates_without_flush(fake: FakeElevenLabs) -> None:
    async with dial(fake, auto_mode=True) as ws:
        await init(ws, "c1")
        await send(ws, text="Hi. ", context_id="c1")
        await audio_bytes(ws, expected_bytes("Hi. ", "ulaw_8000"))


async def test_keepalive_generates_nothing(fake: FakeElevenLabs) -> None:
    async with dial(fake) as ws:
        await init(ws, "c1")
        for _ in range(3):
            await send(ws, context_id="c1", text="")
            await send(ws, text="")
        await expect_silence(ws, 0.2)
    assert fake.contexts()["c1"].audio_bytes == 0
    assert fake.connections[0].violations == []


async def test_message_for_unknown_id_opens_phantom_context(fake: FakeElevenLabs) -> None:
    async with dial(fake) as ws:
        await send(ws, context_id="ghost", text="")
        await send(ws, context_id="ghost", flush=True)
        await expect_silence(ws)
    ghost = fake.contexts()["ghost"]
    assert ghost.implicit and ghost.voice_settings is None and ghost.audio_bytes == 0
    assert any("implicitly" in v for v in fake.connections[0].violations)


@pytest.mark.parametrize("first", [{"text": ""}, {"text": " ", "voice_settings": {"speed": 1.0}}])
async def test_late_voice_settings_closes_socket_1008(fake: FakeElevenLabs, first: dict[str, Any]) -> None:
    async with dial(fake) as ws:
        await send(ws, context_id="c1", **first)
        await init(ws, "c1")
        error = await recv(ws)
        assert error["error"] == "invalid_input_message" and error["code"] == 1008
        with pytest.raises(ConnectionClosedError):
            await recv(ws)
    assert fake.connections[0].closed_code == 1008
    assert any("voice_settings" in v for v in fake.connections[0].violations)


async def test_sixth_context_gets_max_active_conversations_and_1008(fake: FakeElevenLabs) -> None:
    async with dial(fake) as ws:
        for n in range(5):
            await init(ws, f"c{n}")
        await init(ws, "c5")
        error = await recv(ws)
        with pytest.raises(ConnectionClosedError) as closed:
            await recv(ws)
    assert error == {
        "message": "Maximum simultaneous contexts per WebSocket connection exceeded (5). "
        "Please close an existing context before opening a new one.",
        "error": "max_active_conversations",
        "code": 1008,
    }
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    assert fake.connections[0].max_open == 5


async def test_draining_context_holds_its_slot_until_final(fake: FakeElevenLabs) -> None:
    async with dial(fake) as ws:
        for n in range(5):
            await init(ws, f"c{n}")
        fake.pause_generation()
        await send(ws, text=TEXT, context_id="c0", flush=True)
        await send(ws, context_id="c0", close_context=True)
        await asyncio.sleep(0.05)
        await init(ws, "c5")  # c0 is closed but has not sent isFinal yet
        assert (await recv(ws))["error"] == "max_active_conversations"


async def test_slot_is_free_after_final(fake: FakeElevenLabs) -> None:
    async with dial(fake) as ws:
        for n in range(5):
            await init(ws, f"c{n}")
        await send(ws, context_id="c0", close_context=True)
        assert await recv(ws) == {"isFinal": True, "contextId": "c0"}
        await init(ws, "c5")
        await expect_silence(ws)
    assert fake.connections[0].max_open == 5
    assert fake.connections[0].errors == []


async def test_close_socket_finishes_flushed_work_then_closes_1000(fake: FakeElevenLabs) -> None:
    async with dial(fake) as ws:
        for cid in ("a", "b"):
            await init(ws, cid)
            await send(ws, text=TEXT, context_id=cid, flush=True)
        await send(ws, close_socket=True)
        messages = [json.loads(raw) async for raw in ws]
    assert ws.close_code == 1000
    finals = [m["contextId"] for m in messages if m.get("isFinal")]
    assert sorted(finals) == ["a", "b"]
    for cid in ("a", "b"):
        voiced = sum(
            len(base64.b64decode(m["audio"])) for m in messages if m.get("audio") and m["contextId"] == cid
        )
        assert voiced == expected_bytes(TEXT, "ulaw_8000")
        assert messages.index({"isFinal": True, "contextId": cid}) > max(
            i for i, m in enumerate(messages) if m.get("audio") and m["contextId"] == cid
        )
    assert fake.connections[0].closed_code == 1000


async def test_close_race_yields_final_without_audio() -> None:
    async with fast(ttfb=0.03, close_race_ms=20) as fake, dial(fake) as ws:
        await init(ws, "c1")
        await send(ws, text=TEXT, context_id="c1", flush=True)
        await send(ws, context_id="c1", close_context=True)
        assert await recv(ws) == {"isFinal": True, "contextId": "c1"}
    summary = fake.contexts()["c1"]
    assert summary.race_dropped and summary.audio_bytes == 0


async def test_close_after_first_audio_escapes_the_race() -> None:
    async with fast(ttfb=0.03, close_race_ms=20, realtime_factor=20.0) as fake, dial(fake) as ws:
        await init(ws, "c1")
        await send(ws, text=TEXT, context_id="c1", flush=True)
        await recv(ws)
        await send(ws, context_id="c1", close_context=True)
        await until_final(ws)
    assert not fake.contexts()["c1"].race_dropped
    assert fake.contexts()["c1"].audio_bytes == expected_bytes(TEXT, "ulaw_8000")


async def test_idle_context_times_out_with_final() -> None:
    async with fast(timeout_scale=0.01) as fake, dial(fake, inactivity_timeout=20) as ws:  # 0.2 s
        await init(ws, "c1")
        await send(ws, text="Never flushed. ", context_id="c1")
        await init(ws, "c2")

        async def keep_socket_alive() -> None:
            while True:
                await send(ws, context_id="c2", text="")
                await asyncio.sleep(0.05)

        pinger = asyncio.create_task(keep_socket_alive())
        try:
            assert await recv(ws, timeout=1.0) == {"isFinal": True, "contextId": "c1"}
            await expect_silence(ws, 0.3)  # c2 is kept alive
        finally:
            pinger.cancel()
    assert fake.connections[0].timed_out == ["c1"]
    assert fake.contexts()["c1"].audio_bytes == 0 and fake.contexts()["c1"].dropped_text == "Never flushed. "


async def test_idle_socket_gets_input_timeout_exceeded() -> None:
    async with fast(timeout_scale=0.01) as fake, dial(fake, inactivity_timeout=10) as ws:  # 0.1 s
        error = await recv(ws, timeout=1.0)
        with pytest.raises(ConnectionClosedError):
            await recv(ws)
    assert error["error"] == "input_timeout_exceeded" and error["code"] == 1008
    assert fake.connections[0].closed_code == 1008


# -- wire variants -----------------------------------------------------------------------------


async def test_snake_casing_option() -> None:
    async with fast(casing="snake") as fake, dial(fake) as ws:
        await init(ws, "c1")
        await send(ws, text="Hi. ", context_id="c1", flush=True, close_context=True)
        messages = await until_final(ws)
    assert all(m["context_id"] == "c1" and "contextId" not in m for m in messages)
    assert messages[-1] == {"is_final": True, "context_id": "c1"}


async def test_alignment_only_with_sync_alignment(fake: FakeElevenLabs) -> None:
    text = "Alignment covers every character. "
    async with dial(fake, sync_alignment=True, output_format="pcm_16000") as ws:
        await init(ws, "c1")
        await send(ws, text=text, context_id="c1", flush=True)
        messages = await audio_bytes(ws, expected_bytes(text, "pcm_16000"))
    chars: list[str] = []
    for m in messages:
        alignment = m["alignment"]
        duration_ms = len(base64.b64decode(m["audio"])) / 32
        assert (
            len(alignment["chars"]) == len(alignment["charStartTimesMs"]) == len(alignment["charDurationsMs"])
        )
        assert all(0 <= t < duration_ms for t in alignment["charStartTimesMs"])  # relative to the chunk
        assert m["normalizedAlignment"] == alignment
        chars += alignment["chars"]
    assert "".join(chars) == text

    async with dial(fake) as ws:
        await init(ws, "c1")
        await send(ws, text="Hi. ", context_id="c1", flush=True)
        assert "alignment" not in await recv(ws)


async def test_unsupported_output_format_is_refused(fake: FakeElevenLabs) -> None:
    async with dial(fake, output_format="mp3_44100_128") as ws:
        assert (await recv(ws))["error"] == "invalid_request"
        with pytest.raises(ConnectionClosedError):
            await recv(ws)


# -- fault injection ---------------------------------------------------------------------------


async def test_drop_all_closes_with_given_code(fake: FakeElevenLabs) -> None:
    async with dial(fake) as ws:
        await init(ws, "c1")
        await fake.wait_until(lambda: fake.live_connections == 1 and fake.contexts())
        await fake.drop_all(code=1011)
        with pytest.raises(ConnectionClosedError) as closed:
            await recv(ws)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
    assert fake.live_connections == 0


async def test_reject_connections_then_accept(fake: FakeElevenLabs) -> None:
    fake.reject_connections = 2
    for _ in range(2):
        with pytest.raises(InvalidStatus) as refused:
            async with dial(fake):
                pass
        assert refused.value.response.status_code == 503
    async with dial(fake) as ws:
        await send(ws, text="")
    assert [status for _, status in fake.rejected] == [503, 503]


async def test_error_on_connect() -> None:
    frame = {"message": "We are sorry, something went wrong.", "error": "server_error", "code": 1008}
    async with fast(error_on_connect=frame) as fake, dial(fake) as ws:
        assert await recv(ws) == frame
        with pytest.raises(ConnectionClosedError):
            await recv(ws)


async def test_pause_and_resume_generation(fake: FakeElevenLabs) -> None:
    async with dial(fake) as ws:
        fake.pause_generation()
        await init(ws, "c1")
        await send(ws, text="Hi. ", context_id="c1", flush=True)
        await expect_silence(ws)
        fake.resume_generation()
        await audio_bytes(ws, expected_bytes("Hi. ", "ulaw_8000"))


# -- hygiene -----------------------------------------------------------------------------------


async def test_no_task_outlives_the_server() -> None:
    before = asyncio.all_tasks()
    async with fast(realtime_factor=1.0) as fake:
        ws = await dial(fake)
        await init(ws, "c1")
        await send(ws, text=TEXT * 3, context_id="c1", flush=True)
        await recv(ws)  # a worker is mid-utterance when the server stops
    with pytest.raises(ConnectionClosed):
        await recv(ws)
    await ws.close()
    assert asyncio.all_tasks() - before <= {asyncio.current_task()}
    assert fake.connections[0].closed_code == 1001


def test_session_state_machine_without_io() -> None:
    session = MultiContextSession(SessionParams(), now=0.0)
    assert session.receive({"context_id": "a", **INIT}, 0.0) is None
    assert session.receive({"context_id": "a", "text": "x" * 119 + " "}, 0.1) is None
    assert [s.text for s in session.active["a"].pending] == ["x" * 119 + " "]
    assert session.receive({"context_id": "a", "text": "tail. ", "flush": True}, 0.2) is None
    assert session.active["a"].step == 0 and len(session.active["a"].pending) == 2
    assert session.expire(10.0) is None
    failure = session.expire(20.2)
    assert failure is not None and failure.frame["error"] == "input_timeout_exceeded"


async def test_cli_serves_until_interrupted() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge.testing.fake_elevenlabs",
        "--port",
        "0",
        "--api-key",
        "cli-key",
        "--ttfb",
        "0",
        "--realtime-factor",
        "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        line = (await asyncio.wait_for(process.stdout.readline(), 10)).decode()  # type: ignore[union-attr]
        base_url = line.strip().rsplit(" ", 1)[-1]
        assert base_url.startswith("ws://127.0.0.1:")
        url = f"{base_url}/v1/text-to-speech/v/multi-stream-input?output_format=pcm_16000"
        async with connect(url, additional_headers={"xi-api-key": "cli-key"}) as ws:
            await init(ws, "c1")
            await send(ws, text="Hi. ", context_id="c1", flush=True)
            assert (await recv(ws))["contextId"] == "c1"
    finally:
        process.send_signal(2)  # SIGINT, as Ctrl-C
        assert await asyncio.wait_for(process.wait(), 10) == 0
