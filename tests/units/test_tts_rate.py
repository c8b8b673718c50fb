"""The voice delivers the call's rate: a 16 kHz call asks ElevenLabs for ``pcm_16000`` and plays it
as it comes; an 8 kHz call keeps the configured format."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from bridge.config import load_settings
from bridge.core.events import TtsAudio, TtsFinal
from bridge.server.factories import elevenlabs_query, output_format
from bridge.tts.elevenlabs import ElevenLabsCodec


def settings(**env: str):  # type: ignore[no-untyped-def]
    return load_settings({"ELEVENLABS_API_KEY": "k", **env}, config_path=None, dotenv=False)


def test_a_16_khz_call_asks_for_pcm_16000_whatever_format_8_khz_calls_use() -> None:
    for configured in ("ulaw_8000", "pcm_24000"):
        s = settings(ELEVENLABS_OUTPUT_FORMAT=configured)
        assert output_format(s, 16000) == elevenlabs_query(s, 16000)["output_format"] == "pcm_16000"
        assert output_format(s, 8000) == elevenlabs_query(s)["output_format"] == configured


def test_pcm_16000_on_a_16_khz_call_is_played_as_it_came() -> None:
    codec = ElevenLabsCodec("pcm_16000", rate=16000)
    pcm = (np.sin(2 * np.pi * 5500 * np.arange(3201) / 16000) * 9000).astype("<i2").tobytes()
    frame = json.dumps({"audio": base64.b64encode(pcm).decode(), "contextId": "c1"})
    final = json.dumps({"contextId": "c1", "isFinal": True})
    events = codec.decode(frame, 0.0) + codec.decode(final, 0.1)
    assert b"".join(e.pcm for e in events if isinstance(e, TtsAudio)) == pcm
    assert isinstance(events[-1], TtsFinal)


def test_a_format_the_calls_rate_cannot_play_is_refused_when_the_voice_is_built() -> None:
    with pytest.raises(ValueError, match="8 kHz"):
        ElevenLabsCodec("ulaw_8000", rate=16000)
