"""Noise immunity through the core: what a line carries that is not the caller talking (hiss,
comfort noise, clicks, keypad tones, digital silence) neither stops the agent nor becomes a
caller turn. Simulated time, real webrtcvad, mu-law lines built by `tests.turntaking`."""

from __future__ import annotations

import numpy as np
import pytest

from bridge.core.call import CallSettings
from bridge.core.noise import NoiseFloor, ToneDetector
from bridge.core.vad import VadConfig
from tests.support import SPEECH, load_wav
from tests.turntaking import DTMF, RATE, Scenario, agent_voice, dtmf, noises, pink, run, talk_over, white

SHORT_REPLY = agent_voice()[: RATE * 2 * 2]  # two seconds of the agent, then ten of listening
NOISES = noises(12.0)


@pytest.mark.parametrize("label", list(NOISES))
def test_line_noise_never_stops_the_agent_nor_makes_a_turn(label: str) -> None:
    r = run(Scenario(noise=NOISES[label], duration=12.0, reply=SHORT_REPLY))
    assert r.clears == [], f"{label} paused the agent"
    assert r.turns == [], f"{label} became a caller turn"


def test_without_the_gates_keypad_tones_do_both() -> None:
    """The control: webrtcvad alone calls DTMF speech."""
    plain = CallSettings(vad=VadConfig(snr_db=0.0, reject_tones=False))
    r = run(Scenario(noise=NOISES["DTMF keys -10 dBFS"], duration=12.0, reply=SHORT_REPLY), plain)
    assert r.interrupted_at is not None
    r = run(Scenario(noise=NOISES["DTMF keys -25 dBFS"], duration=12.0, reply=SHORT_REPLY), plain)
    assert r.turns


@pytest.mark.parametrize("noise", ["white -35", "pink -35"])
def test_a_caller_still_gets_through_the_noise(noise: str) -> None:
    line = white(-35.0, 8.0) if noise == "white -35" else pink(-35.0, 8.0)
    for name in ("caller_03.wav", "caller_07.wav"):
        scenario = talk_over(name, 3.0, None, 0.0)
        r = run(Scenario(scenario.sounds, noise=line, duration=7.0))
        assert r.committed(3.0) and r.reaction(3.0) is not None and r.reaction(3.0) <= 0.16


# --------------------------------------------------------------------- the parts


def speech_files() -> list[bytes]:
    return [load_wav(p.name) for p in sorted(SPEECH.glob("caller_*.wav"))]


def test_every_keypad_tone_is_recognised_from_its_second_frame() -> None:
    lows, highs = (697, 770, 852, 941), (1209, 1336, 1477, 1633)
    t = np.arange(8 * 160) / RATE
    for lo in lows:
        for hi in highs:
            x = np.sin(2 * np.pi * lo * t) + np.sin(2 * np.pi * hi * t)
            noisy = x / x.std() * 3000 + np.random.default_rng(lo + hi).standard_normal(len(t)) * 1000
            pcm = np.clip(noisy, -32768, 32767).astype("<i2").tobytes()
            detector = ToneDetector()
            verdicts = [detector.is_tone(pcm[i : i + 320]) for i in range(0, len(pcm), 320)]
            assert verdicts == [False] + [True] * 7, (lo, hi)


def test_speech_is_almost_never_taken_for_a_keypad_tone() -> None:
    detector = ToneDetector()
    flagged = total = longest = run_ = 0
    for pcm in speech_files():
        detector.reset()
        for i in range(0, len(pcm) - 319, 320):
            tone = detector.is_tone(pcm[i : i + 320])
            flagged, total = flagged + tone, total + 1
            run_ = run_ + 1 if tone else 0
            longest = max(longest, run_)
    assert flagged == 0 and total > 900


def test_the_noise_floor_follows_noise_not_speech() -> None:
    floor = NoiseFloor(snr_db=6.0)
    for _ in range(300):  # six seconds of -50 dBFS hiss
        floor.update(-50.0, vad_voiced=False)
    for _ in range(100):  # two seconds of speech at -20
        floor.update(-20.0, vad_voiced=True)
    assert floor.db is not None and floor.db < -45.0
    assert floor.clears(-20.0, floor.db) and not floor.clears(-47.0, floor.db)
    floor.update(-60.0, vad_voiced=False)
    assert floor.db == -60.0, "a quieter line is believed at once"


def test_dtmf_helper_makes_the_keys_it_is_asked_for() -> None:
    pcm = dtmf("1D", -10.0)
    assert len(pcm) == int(2 * 0.35 * RATE) * 2 and set(DTMF) >= {"1", "D"}
