"""The openai agent over real HTTP, against ``bridge.testing.fake_openai``: a protocol-faithful
OpenAI-compatible server on 127.0.0.1 started by each test (the cloud API is not reachable)."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from bridge.agents.base import AgentError, Message, Turn
from bridge.agents.openai import OpenAIAgent, OpenAITranscriber
from bridge.testing.fake_openai import FakeOpenAI, Reply
from tests.support import load_wav

KEY = "sk-local-Zq9Xj7Wv3Kp2"
HISTORY = (Message("assistant", "Hello!"), Message("user", "What time do you open?"))


async def test_reply_streams_each_piece_as_the_model_writes_it(caplog: pytest.LogCaptureFixture) -> None:
    text = "We open at nine. On Sundays we open at ten, and close at four in the afternoon."
    async with FakeOpenAI([Reply(text, first_delay=0.05, chunk_delay=0.03)], api_key=KEY) as api:
        agent = OpenAIAgent(api.base_url, KEY, "local-llm", "Be brief.")
        arrivals: list[tuple[float, str]] = []
        with caplog.at_level(logging.INFO, logger="bridge.agents.openai"):
            async for piece in agent.reply(Turn(1, history=HISTORY)):
                arrivals.append((time.monotonic(), piece))
        await agent.aclose()
    [chat] = api.chats
    assert "".join(p for _, p in arrivals) == text
    first_sentence_at = next(t for t, _ in arrivals if "".join(p for u, p in arrivals if u <= t).endswith("nine."))
    assert chat.finished_at is not None and first_sentence_at < chat.finished_at - 0.3, "streamed, not buffered"
    assert chat.body["model"] == "local-llm" and chat.body["stream"] is True
    assert chat.messages[1:] == [{"role": "assistant", "content": "Hello!"},
                                 {"role": "user", "content": "What time do you open?"}]
    assert chat.messages[0]["role"] == "system" and chat.messages[0]["content"].startswith("Be brief.")
    assert chat.headers["authorization"] == f"Bearer {KEY}"
    assert any("turn 1: first token after" in r.getMessage() for r in caplog.records)


async def test_cancelling_the_reply_aborts_the_request_upstream() -> None:
    async with FakeOpenAI([Reply("word " * 200, chunk_delay=0.02)]) as api:
        agent = OpenAIAgent(api.base_url, None, "m", "")
        got: list[str] = []

        async def consume() -> None:
            async for piece in agent.reply(Turn(1)):
                got.append(piece)

        task = asyncio.create_task(consume())
        await api.wait_until(lambda: len(got) >= 5)
        cancelled_at = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await api.wait_until(lambda: api.chats[0].disconnected_at is not None, timeout=2.0)
        await agent.aclose()
    [chat] = api.chats
    assert chat.finished_at is None and chat.disconnected_at is not None
    assert chat.disconnected_at - cancelled_at < 0.2
    assert chat.chunks_sent < 100, "the server stopped generating"
    assert "authorization" not in chat.headers, "no key configured, no Authorization header"


async def test_http_errors_become_agent_errors_without_the_key() -> None:
    async with FakeOpenAI([Reply("", status=503)], api_key=KEY) as api:
        wrong = OpenAIAgent(api.base_url, "sk-wrong-Hb6Yc1Dg5Fe0", "m", "")
        with pytest.raises(AgentError) as info:
            async for _ in wrong.reply(Turn(1)):
                pass
        assert "401" in str(info.value) and "invalid_api_key" in str(info.value)
        assert "Hb6Yc1" not in str(info.value)
        right = OpenAIAgent(api.base_url, KEY, "m", "")
        with pytest.raises(AgentError, match="503"):
            async for _ in right.reply(Turn(2)):
                pass
        await wrong.aclose()
        await right.aclose()


async def test_transcription_uploads_the_utterance_as_a_wav_file() -> None:
    speech = load_wav("caller_04.wav")
    async with FakeOpenAI(transcribe=lambda pcm, rate: f"{len(pcm)} bytes at {rate} Hz", api_key=KEY) as api:
        stt = OpenAITranscriber(api.base_url, KEY, "whisper-1", language="en")
        text = await stt.transcribe(speech)
        await stt.aclose()
    [record] = api.transcriptions
    assert text == f"{len(speech)} bytes at 8000 Hz" and record.pcm == speech
    assert record.filename == "utterance.wav" and record.content_type == "audio/wav"
    assert record.fields == {"model": "whisper-1", "response_format": "json", "language": "en"}


async def test_a_16_khz_utterance_is_uploaded_at_16_khz() -> None:
    wide = load_wav("caller_04.wav")[:16000] * 2  # the rate is what is checked, not the words
    async with FakeOpenAI(transcribe=lambda pcm, rate: f"at {rate} Hz", api_key=KEY) as api:
        stt = OpenAITranscriber(api.base_url, KEY, "whisper-1")
        text = await stt.transcribe(wide, 16000)
        await stt.aclose()
    [record] = api.transcriptions
    assert text == "at 16000 Hz" and record.sample_rate == 16000 and record.pcm == wide


async def test_transcription_errors_are_agent_errors() -> None:
    async with FakeOpenAI(api_key=KEY) as api:
        stt = OpenAITranscriber(api.base_url, "sk-wrong", "whisper-1")
        with pytest.raises(AgentError, match="transcription: HTTP 401"):
            await stt.transcribe(b"\x00\x00" * 800)
        await stt.aclose()
