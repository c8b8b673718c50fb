"""The OpenAI-compatible batch transcriber behind the streaming interface, over real HTTP against
``bridge.testing.fake_openai`` on 127.0.0.1."""

from __future__ import annotations

import numpy as np

from bridge.agents.openai import OpenAITranscriber
from bridge.agents.stt import BatchTranscriber, SttClosed, Transcript
from bridge.testing.fake_openai import FakeOpenAI
from tests.support import load_wav

KEY = "sk-local-Bt7Yq2Lm9"


async def test_audio_is_buffered_and_transcribed_once_on_finish() -> None:
    clip = load_wav("caller_03.wav")
    async with FakeOpenAI(api_key=KEY, transcribe=lambda pcm, rate: f" {len(pcm)} bytes at {rate} ") as api:
        stt = BatchTranscriber(OpenAITranscriber(api.base_url, KEY, "whisper-1"))
        async with stt.stream(rate=8000) as s:
            for i in range(0, len(clip), 320):
                await s.send(clip[i : i + 320])
            assert api.transcriptions == [], "nothing goes up before the utterance ends"
            await s.finish()
            events = [e async for e in s.events()]
    [upload] = api.transcriptions
    assert upload.pcm == clip and upload.sample_rate == 8000 and upload.fields["model"] == "whisper-1"
    [final, closed] = events
    assert isinstance(final, Transcript) and final.is_final and final.speech_final
    assert final.text == f"{len(clip)} bytes at 8000"
    assert abs(final.duration - len(clip) / 16000) < 1e-9
    assert closed == SttClosed(at=closed.at, clean=True) and closed.at >= final.at


async def test_16k_audio_reaches_the_endpoint_at_16_khz_unconverted() -> None:
    t = np.arange(16000) / 16000
    pcm = (np.sin(2 * np.pi * 440 * t) * 8000).astype("<i2").tobytes()
    async with FakeOpenAI(transcribe=lambda pcm, rate: "tone") as api:
        stt = BatchTranscriber(OpenAITranscriber(api.base_url, None, "m"))
        async with stt.stream(rate=16000) as s:
            await s.send(pcm)
            await s.finish()
            texts = [t.text async for t in s.transcripts()]
    assert texts == ["tone"]
    [upload] = api.transcriptions
    assert upload.sample_rate == 16000 and upload.pcm == pcm


async def test_a_refused_key_ends_the_stream_with_the_reason_and_no_key() -> None:
    async with FakeOpenAI(api_key=KEY) as api:
        wrong = "sk-wrong-Qq11Zz22"
        stt = BatchTranscriber(OpenAITranscriber(api.base_url, wrong, "whisper-1"))
        async with stt.stream() as s:
            await s.send(load_wav("caller_04.wav"))
            await s.finish()
            events = [e async for e in s.events()]
    [closed] = events
    assert isinstance(closed, SttClosed) and not closed.clean
    assert "401" in closed.reason and "invalid_api_key" in closed.reason and wrong not in closed.reason


async def test_leaving_without_finish_sends_nothing() -> None:
    async with FakeOpenAI() as api:
        stt = BatchTranscriber(OpenAITranscriber(api.base_url, None, "m"))
        async with stt.stream() as s:
            await s.send(load_wav("caller_04.wav"))
        events = [e async for e in s.events()]
    assert api.transcriptions == []
    assert events == [SttClosed(at=events[0].at, clean=False, reason="closed before finish")]


async def test_an_unreachable_server_ends_the_stream_with_the_reason() -> None:
    stt = BatchTranscriber(OpenAITranscriber("http://127.0.0.1:9/v1", None, "m"))
    async with stt.stream() as s:
        await s.send(load_wav("caller_04.wav"))
        await s.finish()
        events = [e async for e in s.events()]
    [closed] = events
    assert isinstance(closed, SttClosed) and not closed.clean and closed.reason == "transcription: ConnectError"
