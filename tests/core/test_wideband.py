"""A call at 16 kHz (Vonage's wideband L16), in simulated time: the listening side (webrtcvad, the
noise floor, the echo guard's bands, the recorder) runs at the call's rate, with no detour through
8 kHz, and a caller notices no difference from an 8 kHz call: the echo never stops the agent, a
caller talking over it does, as fast, and the agent's speech-to-text gets the caller at 16 kHz."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np
import pytest
import soxr

from bridge.core.actions import AbandonTurn, Action, ClearPlayback, ReplyHeard, SendMedia, StartTurn
from bridge.core.audio import AudioFormat, TtsDecoder
from bridge.core.call import Call, CallSettings
from bridge.core.events import AgentDone, AgentText, CallerAudio, CallStarted, Tick, TtsAudio, TtsConnected
from tests.support import load_wav
from tests.turntaking import BARGERS, agent_voice

REPLY_AT = 0.3


def _at(pcm: bytes, rate: int) -> np.ndarray:
    x = np.frombuffer(pcm, "<i2").astype(np.float64)
    return x if rate == 8000 else soxr.resample(x, 8000, rate)


def _pcm(x: np.ndarray) -> bytes:
    return np.clip(np.round(x), -32768, 32767).astype("<i2").tobytes()


@dataclass
class Outcome:
    clears: list[float] = field(default_factory=list)
    interrupted_at: float | None = None
    utterances: list[bytes] = field(default_factory=list)


def simulate(rate: int, seconds: float, echo_db: float | None = None, delay_ms: float = 100.0,
             caller: str | None = None, onset: float = 0.0) -> Outcome:
    """One call at ``rate``: the agent's reply goes out paced; the carrier plays a frame every
    20 ms (a clear drops what it holds); the line returns what played, ``delay_ms`` later and
    ``echo_db`` down, plus the caller's words from ``onset``."""
    n = rate // 50
    call = Call(CallSettings(audio=AudioFormat(rate, 20)))
    queue: deque[bytes] = deque()
    heard = np.zeros(round(seconds * rate) + rate)
    mic = np.zeros(len(heard))
    if caller is not None:
        voice = _at(load_wav(caller), rate)
        start = round(onset * rate)
        mic[start : start + len(voice)] += voice[: len(mic) - start]
    result = Outcome()

    def handle(actions: list[Action], at: float) -> None:
        for action in actions:
            if isinstance(action, SendMedia):
                queue.extend(action.pcm[i : i + 2 * n] for i in range(0, len(action.pcm), 2 * n))  # its 20 ms frames
            elif isinstance(action, ClearPlayback):
                queue.clear()
                result.clears.append(at)
            elif isinstance(action, ReplyHeard) and action.interrupted and result.interrupted_at is None:
                result.interrupted_at = at
            elif isinstance(action, StartTurn) and action.turn > 0:
                result.utterances.append(action.utterance)
            elif isinstance(action, AbandonTurn):
                result.utterances.pop()  # a guess at a pause between words: the caller went on

    handle(call.handle(CallStarted(0.0, "MZ", "CA")), 0.0)
    handle(call.handle(TtsConnected(0.0)), 0.0)
    handle(call.handle(AgentText(0.01, 0, "Here is a long answer. ")), 0.01)
    handle(call.handle(AgentDone(0.01, 0)), 0.01)
    delay = round(delay_ms / 1000 * rate)
    for k in range(1, round(seconds / 0.02)):
        at = round(k * 0.02, 6)
        if round(REPLY_AT / 0.02) == k:
            handle(call.handle(TtsAudio(at, "ctx-1", _pcm(_at(agent_voice(), rate)))), at)
        while (deadline := call.next_deadline()) is not None and deadline < at:
            handle(call.handle(Tick(deadline)), deadline)
        span = slice((k - 1) * n, k * n)
        if queue:
            heard[span] = np.frombuffer(queue.popleft(), "<i2")
        line = mic[span].copy()
        if echo_db is not None:
            line += heard[span.start - delay : span.stop - delay] * 10 ** (echo_db / 20) if span.start >= delay else 0
        handle(call.handle(CallerAudio(at, _pcm(line))), at)
    return result


@pytest.mark.parametrize("delay_ms", [40.0, 180.0])
@pytest.mark.parametrize("echo_db", [-10.0, -20.0])
def test_at_16_khz_the_agents_echo_never_pauses_it(echo_db: float, delay_ms: float) -> None:
    r = simulate(16000, 8.0, echo_db, delay_ms)
    assert r.clears == [] and r.interrupted_at is None


@pytest.mark.parametrize("name", BARGERS)
def test_at_16_khz_a_caller_over_the_echo_interrupts_as_fast_as_at_8_khz(name: str) -> None:
    onset = 3.0
    wide, narrow = (simulate(rate, 7.0, -20.0, 100.0, name, onset) for rate in (16000, 8000))
    assert wide.interrupted_at is not None and onset < wide.interrupted_at < onset + 1.0
    assert narrow.clears and wide.clears
    assert wide.clears[0] - narrow.clears[0] <= 0.02 + 1e-9  # the first pause: no later than at 8 kHz


def test_at_16_khz_the_speech_to_text_gets_the_callers_words_at_16_khz() -> None:
    r = simulate(16000, 8.0, None, caller="caller_02.wav", onset=2.0)
    spoken = len(load_wav("caller_02.wav")) / 2 / 8000
    assert len(r.utterances) == 1
    seconds = len(r.utterances[0]) / 2 / 16000
    assert spoken <= seconds <= spoken + 1.5  # the words, the pre-roll and the end-of-turn silence


def test_a_16_khz_call_gets_the_tts_audio_at_16_khz_with_no_detour_through_8() -> None:
    second = _pcm(_at(agent_voice()[: 16000], 16000))  # one second at 16 kHz
    assert TtsDecoder("pcm_16000", rate=16000).decode(second) == second  # nothing to convert
    wide = TtsDecoder("pcm_24000", rate=16000)
    out = wide.decode(_pcm(soxr.resample(np.frombuffer(second, "<i2").astype(np.float64), 16000, 24000))) + wide.flush()
    assert abs(len(out) - len(second)) <= 2 * 16  # within a millisecond
    with pytest.raises(ValueError, match="8 kHz"):
        TtsDecoder("ulaw_8000", rate=16000)
