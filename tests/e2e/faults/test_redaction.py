"""The ElevenLabs key stays out of websockets' own DEBUG logging and out of what the TTS client
reports, even when the server quotes it back. In-process and quick; the whole-system search is
``test_secrets.py``. The server is the local protocol-faithful fake."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest

from bridge.core.events import Event, TtsError
from bridge.testing.fake_elevenlabs import FakeElevenLabs
from bridge.tts.base import TtsConnectError
from bridge.tts.elevenlabs import ElevenLabsCodec, ElevenLabsTts, quotes_secret

KEY = "sk_REDACTME_00112233445566778899aabbccdd"


@pytest.fixture
def websockets_debug() -> Iterator[list[logging.LogRecord]]:
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("websockets.client")
    level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def client(fake: FakeElevenLabs) -> ElevenLabsTts:
    return ElevenLabsTts(url=fake.stream_url(output_format="ulaw_8000"), api_key=KEY,
                         codec=ElevenLabsCodec("ulaw_8000"), clock=asyncio.get_running_loop().time)


async def test_the_key_header_and_a_quoted_key_never_reach_a_log_or_an_event(websockets_debug):
    events: list[Event] = []
    quote = {"message": f"Invalid API key {KEY[:20]}", "error": "invalid_api_key", "code": 1008}
    async with FakeElevenLabs(api_key=KEY, error_on_connect=quote) as fake:
        tts = client(fake)
        await tts.connect(events.append)
        await fake.wait_until(lambda: any(type(e).__name__ == "TtsClosed" for e in events))
        with pytest.raises(TtsConnectError) as second:
            await tts.connect(events.append)
        await tts.aclose()
    logged = [r.getMessage() for r in websockets_debug]
    assert any(line == "> xi-api-key: [redacted]" for line in logged), logged[:5]
    assert not [line for line in logged if quotes_secret(line, KEY)]
    [error] = [e for e in events if isinstance(e, TtsError)]
    assert error.code == "invalid_api_key" and not quotes_secret(error.message, KEY)
    assert second.value.permanent and fake.connections and len(fake.connections) == 1, "not tried again"
    assert KEY not in repr(tts)


def test_a_secret_is_found_whole_or_in_pieces():
    assert quotes_secret(f"x {KEY} y", KEY)
    assert quotes_secret(f"frame '...{KEY[5:14]}...'", KEY)
    assert not quotes_secret(KEY[:7], KEY)
    assert not quotes_secret("anything", None)
