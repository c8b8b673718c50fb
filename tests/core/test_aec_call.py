"""The echo canceller wired into the call: what the agent's speech-to-text gets for an
interruption over a loud echo, and that ``aec = off`` (or no library) leaves the call as it was."""

from __future__ import annotations

import math
import sys
from dataclasses import replace

import numpy as np
import pytest

from bridge.core.actions import StartTurn
from bridge.core.aec import AecConfig
from bridge.core.call import CallSettings
from tests.turntaking import run, talk_over

AUTO = CallSettings(aec=AecConfig(mode="auto"))
ONSET = 3.9


def _utterance(settings: CallSettings) -> np.ndarray:
    result = run(talk_over("caller_02.wav", ONSET, -10.0, 120.0), settings)
    turns = [a for _, a in result.actions if isinstance(a, StartTurn) and a.turn > 0]
    assert turns, "the caller's turn started"
    return np.frombuffer(turns[0].utterance, "<i2").astype(np.float64)


def _db(x: np.ndarray) -> float:
    return 10 * math.log10(float(np.mean(np.square(x))) + 1e-3)


def test_what_the_speech_to_text_gets_holds_the_echo_20_db_lower_than_the_raw_line() -> None:
    """The utterance opens with the pre-roll, heard before the caller's onset: on this line that
    is the agent's echo alone, so its level there is the echo the transcriber would hear."""
    raw, cleaned = _utterance(CallSettings()), _utterance(AUTO)
    head = slice(0, 1600)  # the first 200 ms of the pre-roll: before the onset
    assert _db(raw[head]) - _db(cleaned[head]) >= 20.0
    assert abs(_db(raw[4000:]) - _db(cleaned[4000:])) <= 6.0  # and the caller's words are still there


def test_aec_off_and_a_missing_library_leave_the_call_as_it_was(monkeypatch: pytest.MonkeyPatch) -> None:
    scenario = talk_over("caller_03.wav", ONSET, -10.0, 120.0)
    before = run(scenario, CallSettings()).actions
    monkeypatch.setitem(sys.modules, "pywebrtc_audio", None)  # import now raises ImportError
    assert run(scenario, AUTO).actions == before
    assert run(scenario, replace(AUTO, aec=AecConfig(mode="on"))).actions == before
