"""The offline voice against real espeak-ng: same lifecycle as ElevenLabs, real 8 kHz speech.

These tests run the engine itself (it is ~500x faster than real time, so they stay quick) and
are skipped only where no libespeak-ng exists at all.
"""

from __future__ import annotations

import asyncio
import ctypes.util
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import numpy as np
import pytest
import webrtcvad

from bridge.core.actions import CloseContext, KeepAlive, OpenContext, SendText
from bridge.core.events import Event, TtsAudio, TtsClosed, TtsConnected, TtsFinal
from bridge.tts import espeak
from bridge.tts.base import TtsClient, TtsConnectError
from bridge.tts.local import CHUNK_BYTES, LocalTts


def _engine_missing() -> str | None:
    try:
        espeak.load()
    except espeak.EspeakUnavailable as exc:
        return str(exc)
    return None


_MISSING = _engine_missing()
pytestmark = pytest.mark.skipif(_MISSING is not None, reason=f"no espeak-ng library: {_MISSING}")

GREETING = "Hello! Thanks for calling."
LONG_SENTENCE = " ".join(["and then the parcel went on to the next depot on the list"] * 40) + "."


class Recorder:
    """The call's inbox, with the wall-clock moment each event arrived."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.times: list[float] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)
        self.times.append(time.perf_counter())

    def audio(self, cid: str) -> bytes:
        return b"".join(e.pcm for e in self.events if isinstance(e, TtsAudio) and e.context_id == cid)

    def finals(self) -> list[str]:
        return [e.context_id for e in self.events if isinstance(e, TtsFinal)]

    async def until(self, check: Callable[[], bool], timeout: float = 5.0) -> None:
        deadline = time.perf_counter() + timeout
        while not check():
            assert time.perf_counter() < deadline, "timed out waiting for the TTS"
            await asyncio.sleep(0.005)

    async def quiet(self, seconds: float = 0.3) -> None:
        """Wait until nothing has arrived for ``seconds``: everything flushed has been voiced."""
        count = -1
        while count != len(self.events):
            count = len(self.events)
            await asyncio.sleep(seconds)


@pytest.fixture
async def tts() -> AsyncIterator[LocalTts]:
    client = LocalTts(clock=time.monotonic)
    yield client
    await client.aclose()


async def connected(client: LocalTts) -> Recorder:
    recorder = Recorder()
    await client.connect(recorder)
    assert isinstance(recorder.events[0], TtsConnected)
    return recorder


def speech_fraction(pcm: bytes) -> float:
    """Share of 20 ms frames webrtcvad (mode 3) calls speech, between the first and last loud frame."""
    vad = webrtcvad.Vad(3)
    frames = [pcm[i : i + 320] for i in range(0, len(pcm) - 319, 320)]
    loud = [i for i, f in enumerate(frames) if np.abs(np.frombuffer(f, "<i2")).max() > 500]
    voiced = frames[loud[0] : loud[-1] + 1]
    return float(sum(vad.is_speech(f, 8000) for f in voiced) / len(voiced))


def test_local_tts_is_a_tts_client() -> None:
    client: TtsClient = LocalTts(clock=time.monotonic)
    assert "en-us" in repr(client)


async def test_flushed_text_comes_back_as_8khz_speech_and_no_final_before_close(tts: LocalTts) -> None:
    rec = await connected(tts)
    await tts.send(OpenContext("c1"))
    await tts.send(SendText("c1", GREETING + " ", flush=True))
    await rec.until(lambda: bool(rec.audio("c1")))
    await rec.quiet()
    assert rec.finals() == []
    pcm = rec.audio("c1")
    assert len(pcm) % 2 == 0
    assert 1.0 <= len(pcm) / 16000 <= 4.0
    assert all(len(e.pcm) <= CHUNK_BYTES for e in rec.events if isinstance(e, TtsAudio))
    assert speech_fraction(pcm) >= 0.6
    await tts.send(KeepAlive("c1"))
    await tts.send(CloseContext("c1"))
    await rec.until(lambda: rec.finals() == ["c1"])
    await rec.quiet(0.1)
    assert rec.events[-1] == TtsFinal(rec.events[-1].at, "c1")


async def test_close_voices_buffered_text_before_the_final(tts: LocalTts) -> None:
    rec = await connected(tts)
    await tts.send(OpenContext("c1"))
    await tts.send(SendText("c1", "Goodbye for "))
    await tts.send(SendText("c1", "now. "))
    await rec.quiet(0.1)
    assert rec.audio("c1") == b""  # not flushed: held, as the real server holds it
    await tts.send(CloseContext("c1"))
    await rec.until(lambda: rec.finals() == ["c1"])
    kinds = [type(e) for e in rec.events if isinstance(e, TtsAudio | TtsFinal)]
    assert kinds[-1] is TtsFinal and kinds.count(TtsFinal) == 1 and TtsAudio in kinds
    assert len(rec.audio("c1")) / 16000 >= 0.5


async def test_two_contexts_in_sequence_are_both_voiced(tts: LocalTts) -> None:
    rec = await connected(tts)
    for cid, text in (("r-1", GREETING), ("r-2", "How can I help you today?")):
        await tts.send(OpenContext(cid))
        await tts.send(SendText(cid, text + " ", flush=True))
        await rec.until(lambda: bool(rec.audio(cid)))  # noqa: B023 (awaited within the iteration)
        await tts.send(CloseContext(cid))
        await rec.until(lambda: cid in rec.finals())  # noqa: B023
    assert rec.finals() == ["r-1", "r-2"]
    assert len(rec.audio("r-1")) / 16000 >= 1.0 and len(rec.audio("r-2")) / 16000 >= 1.0


async def test_text_for_an_unopened_context_opens_it(tts: LocalTts) -> None:
    rec = await connected(tts)
    await tts.send(SendText("x", "Hi there. ", flush=True))
    await tts.send(CloseContext("x"))
    await rec.until(lambda: rec.finals() == ["x"])
    assert len(rec.audio("x")) / 16000 >= 0.3


async def test_first_sentence_streams_before_a_long_second_one_is_synthesised(
    tts: LocalTts, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs: dict[str, tuple[float, float]] = {}
    real_run = espeak.run

    async def timed_run(text: str, **kwargs: Any) -> bytes:
        started = time.perf_counter()
        pcm = await real_run(text, **kwargs)
        jobs[text] = (started, time.perf_counter())
        return pcm

    monkeypatch.setattr(espeak, "run", timed_run)
    rec = await connected(tts)
    await tts.send(SendText("c1", "Sure. " + LONG_SENTENCE + " ", flush=True))
    await tts.send(CloseContext("c1"))
    await rec.until(lambda: rec.finals() == ["c1"], timeout=20)
    first_audio = next(t for e, t in zip(rec.events, rec.times, strict=True) if isinstance(e, TtsAudio))
    assert list(jobs) == ["Sure.", LONG_SENTENCE]
    long_started, long_done = jobs[LONG_SENTENCE]
    assert first_audio < long_done
    assert first_audio <= long_started  # the first sentence was out before the engine took the next
    assert len(rec.audio("c1")) / 16000 > 30


async def test_a_new_reply_does_not_wait_behind_a_closed_one(tts: LocalTts) -> None:
    rec = await connected(tts)
    await tts.send(SendText("old", "One. Two. Three. Four. Five. Six. Seven. ", flush=True))
    await tts.send(CloseContext("old"))  # barge-in: the rest still drains, as on ElevenLabs
    await tts.send(SendText("new", "Yes? ", flush=True))
    await rec.until(lambda: rec.finals() == ["old"])
    order = [e.context_id for e in rec.events if isinstance(e, TtsAudio | TtsFinal)]
    assert order.index("new") < len(order) - 1
    assert isinstance(rec.events[-1], TtsFinal)
    assert len(rec.audio("old")) / 16000 > 3.0  # all seven sentences, graceful close


async def test_aclose_abandons_everything_and_leaves_nothing_running() -> None:
    client = LocalTts(clock=time.monotonic)
    rec = await connected(client)
    huge = LONG_SENTENCE[:-1] + " " + LONG_SENTENCE  # ~0.5 s of engine time in one job
    await client.send(SendText("c1", f"First. {huge} {huge} ", flush=True))
    await rec.until(lambda: bool(rec.audio("c1")))
    await asyncio.sleep(0.02)  # the engine is now inside the huge sentence
    await client.aclose()
    assert rec.events[-1] == TtsClosed(rec.events[-1].at, 1000, "", expected=True)
    count = len(rec.events)
    assert asyncio.all_tasks() == {asyncio.current_task()}
    started = time.perf_counter()
    await espeak.run("ok", voice="en-us", rate_wpm=175)  # the abandoned sentence stopped early
    assert time.perf_counter() - started < 0.2
    await client.send(SendText("c1", "Still there? ", flush=True))  # gone: ignored, no raise
    await asyncio.sleep(0.3)
    assert len(rec.events) == count


async def test_reconnect_after_aclose_starts_afresh(tts: LocalTts) -> None:
    rec = await connected(tts)
    await tts.send(SendText("c1", "Held text"))
    await tts.aclose()
    await tts.connect(rec)
    await tts.send(CloseContext("c1"))
    await rec.until(lambda: rec.finals() == ["c1"])
    assert rec.audio("c1") == b""  # the old socket's buffer died with it


async def test_unknown_voice_is_a_permanent_connect_error() -> None:
    client = LocalTts(clock=time.monotonic, voice="xx-no-such-voice")
    with pytest.raises(TtsConnectError) as info:
        await client.connect(Recorder())
    assert info.value.permanent
    await client.aclose()


def test_missing_library_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "espeakng_loader", None)
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    with pytest.raises(espeak.EspeakUnavailable, match=r"bridge\[voice\]"):
        espeak.find_library()


async def _measure(run: Callable[[], Awaitable[None]]) -> float:
    started = time.perf_counter()
    await run()
    return time.perf_counter() - started


async def test_first_audio_of_a_one_sentence_reply_is_quick(tts: LocalTts) -> None:
    rec = await connected(tts)
    await tts.send(SendText("warm", "Warm up. ", flush=True))
    await rec.until(lambda: bool(rec.audio("warm")))

    async def reply() -> None:
        await tts.send(SendText("c1", GREETING + " ", flush=True))
        await rec.until(lambda: bool(rec.audio("c1")))

    assert await _measure(reply) < 0.25


async def voice(client: TtsClient, text: str) -> bytes:
    """What ``client`` voices for ``text`` in one context, once everything has come."""
    rec = Recorder()
    await client.connect(rec)
    try:
        await client.send(OpenContext("c1"))
        await client.send(SendText("c1", text + " ", flush=True))
        await rec.until(lambda: bool(rec.audio("c1")))
        await rec.quiet()
        return rec.audio("c1")
    finally:
        await client.aclose()


def share_above(pcm: bytes, rate: int, hz: float) -> float:
    x = np.frombuffer(pcm, "<i2").astype(np.float64)
    power = np.abs(np.fft.rfft(x)) ** 2
    return float(power[np.fft.rfftfreq(len(x), 1 / rate) > hz].sum() / power.sum())


async def test_on_a_16_khz_call_the_offline_voice_speaks_at_16_khz() -> None:
    narrow = await voice(LocalTts(clock=time.monotonic), GREETING)
    wide = await voice(LocalTts(clock=time.monotonic, rate=16000), GREETING)
    assert abs(len(wide) - 2 * len(narrow)) <= 2 * 16000 * 0.02, "the same speech, twice the samples"
    assert share_above(narrow, 8000, 3900) < 0.001
    assert share_above(wide, 16000, 4200) > 0.005, "the sibilants above 4 kHz that 8 kHz cannot carry"


async def test_the_voice_keeps_the_calls_rate_when_it_fails_over_to_the_offline_voice() -> None:
    from bridge.config import load_settings
    from bridge.server.factories import make_tts
    from bridge.testing.fake_elevenlabs import FakeElevenLabs
    from bridge.tts.fallback import FallbackTts

    async with FakeElevenLabs(api_key="the-right-key") as fake:
        settings = load_settings({"ELEVENLABS_API_KEY": "a-wrong-key", "ELEVENLABS_BASE_URL": fake.base_url,
                                  "BRIDGE_TTS": "elevenlabs"}, config_path=None, dotenv=False)
        client = make_tts(settings, time.monotonic, 16000)
        assert isinstance(client, FallbackTts)
        rec = Recorder()
        await client.connect(rec)  # the handshake is accepted, then the key refused: the socket closes
        await rec.until(lambda: any(isinstance(e, TtsClosed) for e in rec.events))
        wide = await voice(client, GREETING)  # the reconnect (the supervisor's) goes to the next voice
        assert client.served == ["elevenlabs", "offline"]
    assert fake.connections[0].query["output_format"] == "pcm_16000"
    assert share_above(wide, 16000, 4200) > 0.005, "still 16 kHz after the failover"
