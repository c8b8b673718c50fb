"""The echo canceller in simulated time, with the real AEC3 library: a phone line that returns the
agent's speech (tests/audio) delayed, quieter and mu-law coded, a caller talking over it, and the
policy that decides when the canceller runs."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable

import numpy as np
import pytest

from bridge.core import linear
from bridge.core.aec import AecConfig, EchoCanceller, Engine, load_engine
from bridge.core.audio import pcm_to_ulaw, ulaw_to_pcm
from bridge.core.bargein import Listener
from bridge.core.budget import AecBudget
from bridge.core.vad import Change, SpeechConfirmed, SpeechStarted, VadConfig
from tests.support import load_wav

RATE = 8000
FRAME = 160
FRAME_S = 0.02
AGENT_AT = 0.5  # the agent's first frame plays here
LEAD_S = 0.2  # frames are handed over this far ahead of playing, as the core paces them


def _samples(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, "<i2").astype(np.float64)


def _ulaw(x: np.ndarray) -> np.ndarray:
    pcm = np.clip(np.round(x), -32768, 32767).astype("<i2").tobytes()
    return _samples(ulaw_to_pcm(pcm_to_ulaw(pcm)))


def _agent() -> np.ndarray:
    return np.concatenate([_samples(load_wav(n)) for n in ("caller_05.wav", "caller_06.wav", "caller_08.wav")])


def _call(agent: np.ndarray, echo_db: float | None, delay_ms: float = 120.0, seconds: float = 11.0,
          caller: tuple[np.ndarray, float] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The far end on the call's timeline, the echo alone, and the line (echo + caller, mu-law)."""
    far = np.zeros(round(seconds * RATE))
    start = round(AGENT_AT * RATE)
    far[start : start + len(agent)] = agent[: len(far) - start]
    echo = np.zeros(len(far))
    if echo_db is not None:
        d = round(delay_ms / 1000 * RATE)
        echo[d:] = _ulaw(far)[: len(far) - d] * 10 ** (echo_db / 20)
    line = echo.copy()
    if caller is not None:
        voice, at = caller
        i = round(at * RATE)
        line[i : i + len(voice)] += voice
    return far, echo, _ulaw(line)


def _run(aec: EchoCanceller, far: np.ndarray, line: np.ndarray, until: float | None = None,
         erl_db: float | None = None, lost: tuple[float, float] | None = None,
         heard: np.ndarray | None = None) -> np.ndarray:
    """Frames of ``far`` enter the canceller ``LEAD_S`` before they play (silent ones are not sent,
    and none from ``until`` on); the line's frames arrive at their end, but for those ending
    within ``lost`` (never sent: they come out as silence). ``heard``: filled with the listener's
    cleaned line (`EchoCanceller.line`; the raw line where the canceller did not run)."""
    frames = len(line) // FRAME
    out = np.zeros(frames * FRAME)
    sent = 0
    for j in range(frames):
        now = (j + 1) * FRAME_S
        while sent < frames and sent * FRAME_S < now + LEAD_S:
            frame = far[sent * FRAME : (sent + 1) * FRAME]
            if np.any(frame) and (until is None or sent * FRAME_S < until):
                aec.played(frame.astype("<i2").tobytes(), sent * FRAME_S)
            sent += 1
        if lost is not None and lost[0] <= now < lost[1]:
            continue
        pcm = line[j * FRAME : (j + 1) * FRAME].astype("<i2").tobytes()
        out[j * FRAME : (j + 1) * FRAME] = _samples(aec.process(pcm, now, erl_db))
        if heard is not None:
            heard[j * FRAME : (j + 1) * FRAME] = _samples(aec.line if aec.engaged else pcm)
    return out


def _listen(far: np.ndarray, line: np.ndarray) -> list[Change]:
    """The line through the canceller (auto) into the listener, wired as the core wires them: both
    get the played frames, the canceller is told the ERL the listener's echo guard has learnt and
    hands its residual to the cleaned line's guard, the listener hears the raw line and the cleaned one."""
    return _wired(far, line, EchoCanceller(AecConfig(mode="auto")), Listener(VadConfig()))[0]


def _wired(far: np.ndarray, line: np.ndarray, aec: EchoCanceller, listener: Listener,
           learnt: tuple[float, float] | None = None) -> tuple[list[Change], np.ndarray]:
    """`_listen` with the canceller and listener given; the listener's changes and the canceller's
    output. ``learnt``: (when, ERL dB) the listener's echo guard takes as learnt from then on."""
    reference = aec.behind(listener)
    changes: list[Change] = []
    frames = len(line) // FRAME
    out = np.zeros(frames * FRAME)
    sent = 0
    for j in range(frames):
        now = (j + 1) * FRAME_S
        while sent < frames and sent * FRAME_S < now + LEAD_S:
            frame = far[sent * FRAME : (sent + 1) * FRAME].astype("<i2").tobytes()
            if any(frame):
                reference.played(frame, sent * FRAME_S)
            sent += 1
        if learnt is not None and now >= learnt[0] > now - FRAME_S:
            listener.gate.echo.assume(learnt[1])
        raw = line[j * FRAME : (j + 1) * FRAME].astype("<i2").tobytes()
        pcm = aec.clean(raw, now, listener.gate)
        out[j * FRAME : (j + 1) * FRAME] = _samples(pcm)
        changes += listener.feed(raw, now, aec.line if aec.cleaning else None)
    return changes, out


def _counted(made: list[int]) -> Callable[[int], Engine | None]:
    """`load_engine`, noting in ``made`` every canceller it makes."""
    def load(rate: int) -> Engine | None:
        made.append(rate)
        return load_engine(rate)
    return load


def _failing(made: list[int]) -> Callable[[int], Engine | None]:
    """A library that fails to load (as `load_engine` without it), noting in ``made`` every try."""
    def load(rate: int) -> Engine | None:
        made.append(rate)
        return None
    return load


def _db(x: np.ndarray) -> float:
    return 10 * math.log10(float(np.sum(np.square(x))) + 1.0)


def test_removes_more_than_20_db_of_a_speech_echo_10_db_down_at_120_ms() -> None:
    far, echo, line = _call(_agent(), echo_db=-10.0)
    out = _run(EchoCanceller(AecConfig(mode="on")), far, line)
    after = slice(round((AGENT_AT + 2.0) * RATE), len(out))  # converged
    assert _db(line[after]) - _db(out[after]) >= 20.0
    assert _db(line[after]) - _db(echo[after]) < 1.0  # the line did hold the echo


def test_after_frames_the_carrier_never_sent_the_canceller_finds_the_echo_again() -> None:
    far, _, line = _call(_agent(), echo_db=-10.0)
    out = _run(EchoCanceller(AecConfig(mode="on")), far, line, lost=(4.0, 4.5))
    after = slice(round(7.0 * RATE), len(out))  # from 2.5 s after the gap
    assert _db(line[after]) - _db(out[after]) >= 20.0


def test_a_caller_talking_over_the_echo_keeps_their_level_within_a_few_db() -> None:
    voice = _samples(load_wav("caller_02.wav")) * 10 ** (-10 / 20)  # 10 dB under the agent
    far, _, line = _call(_agent(), echo_db=-10.0, caller=(voice, AGENT_AT + 4.0))
    out = _run(EchoCanceller(AecConfig(mode="on")), far, line)
    talk = slice(round((AGENT_AT + 4.0) * RATE), round((AGENT_AT + 4.0) * RATE) + len(voice))
    assert abs(_db(out[talk]) - _db(voice)) <= 4.0
    assert _db(line[talk]) - _db(voice) >= 2.0  # with the echo, the raw line was louder than the caller


def test_a_caller_on_a_line_without_echo_is_not_touched_in_auto_mode() -> None:
    voice = _samples(load_wav("caller_02.wav"))
    far, _, line = _call(_agent(), echo_db=None, caller=(voice, AGENT_AT + 4.0))
    made: list[int] = []
    aec = EchoCanceller(AecConfig(mode="auto"), loader=_counted(made))
    out = _run(aec, far, line)
    assert aec.echoic is False and aec.erl_db is not None and aec.erl_db > 60.0
    assert aec.frames == 0 and not made  # judged on the raw line: no canceller was ever made or run
    assert np.array_equal(out, line[: len(out)])  # and the probe only listened


def test_auto_mode_leaves_a_quiet_echo_to_the_level_guard_and_cancels_a_loud_one() -> None:
    agent = _agent()
    config = AecConfig(mode="auto", engage_erl_db=25.0)
    quiet, loud = EchoCanceller(config), EchoCanceller(config)
    far, _, line = _call(agent, echo_db=-30.0)
    _run(quiet, far, line)
    far, _, line = _call(agent, echo_db=-20.0)
    _run(loud, far, line)
    assert quiet.echoic is False and quiet.frames == 0
    assert loud.echoic is True and loud.frames >= (len(agent) / RATE - 0.5) / FRAME_S
    assert quiet.erl_db is not None and loud.erl_db is not None
    assert abs(quiet.erl_db - 30.0) < 3.0 and abs(loud.erl_db - 20.0) < 3.0


@pytest.mark.parametrize("name", ["caller_02.wav", "caller_03.wav", "caller_07.wav"])
def test_a_quiet_caller_over_a_loud_echo_barges_in(name: str) -> None:
    """10 dB under the agent, over its echo 10 dB down: caller and echo equally loud, which a level
    test alone cannot split. With the echo cancelled, the listener hears the caller at once."""
    onset = AGENT_AT + 6.1
    voice = _samples(load_wav(name)) * 10 ** (-10 / 20)
    far, _, line = _call(_agent(), echo_db=-10.0, seconds=onset + 2.5, caller=(voice, onset))
    changes = _listen(far, line)
    confirmed = [c for c in changes if isinstance(c, SpeechConfirmed)]
    started = [c for c in changes if isinstance(c, SpeechStarted) and c.onset >= onset - 0.05]
    assert confirmed and all(c.onset >= onset - 0.05 for c in confirmed)  # no barge-in before the caller spoke
    assert started and started[0].at - onset <= 0.4


def test_the_echo_alone_never_barges_in() -> None:
    for echo_db in (-10.0, -20.0, -30.0):
        far, _, line = _call(_agent(), echo_db=echo_db, seconds=10.0)
        assert not any(isinstance(c, SpeechConfirmed) for c in _listen(far, line)), echo_db


def _lines(aec: EchoCanceller, far: np.ndarray, line: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`_run` on a call the probe engages: AEC3's output (the recorder's) and the listener's cleaned line."""
    heard = np.zeros(len(line) // FRAME * FRAME)
    return _run(aec, far, line, heard=heard), heard


def test_the_listener_hears_the_linear_canceller_which_removes_the_echo_and_keeps_the_caller() -> None:
    """Over a -6 dB echo, a caller 10 dB under the agent: the listener's line holds the echo 15 dB
    down and the caller within 2 dB, where AEC3's suppressor takes the caller down with the echo."""
    if linear.load_linear(RATE, 80, 1024) is None:
        pytest.skip("libspeexdsp is not installed")
    onset = AGENT_AT + 4.0
    voice = _samples(load_wav("caller_03.wav")) * 10 ** (-10 / 20)
    far, echo, line = _call(_agent(), echo_db=-6.0, delay_ms=250.0, seconds=onset + 2.5, caller=(voice, onset))
    out, heard = _lines(EchoCanceller(AecConfig(mode="auto")), far, line)
    before = slice(round((onset - 2.0) * RATE), round(onset * RATE))
    talk = slice(round(onset * RATE), round(onset * RATE) + len(voice))
    assert _db(line[before]) - _db(heard[before]) >= 15.0
    assert abs(_db(heard[talk]) - _db(line[talk] - echo[talk])) <= 2.0
    assert _db(line[talk] - echo[talk]) - _db(out[talk]) >= 3.0  # AEC3's own output loses the caller


def test_without_libspeexdsp_the_listener_hears_aec3s_output(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(linear, "_load", lambda: None)
    far, _, line = _call(_agent(), echo_db=-6.0, seconds=6.0)
    out, heard = _lines(EchoCanceller(AecConfig(mode="auto")), far, line)
    assert np.array_equal(out, heard) and not np.array_equal(out, line[: len(out)])


def test_the_end_of_a_loud_beep_does_not_pass_the_linear_line_for_the_caller() -> None:
    """A -3 dBFS tone that stops dead, its echo -10 dB through a room: the click at its end is
    broadband, which a filter that learnt the path from the tone alone cannot cancel; the
    listener must not start a sound on it."""
    n = np.arange(13 * RATE)
    beep = np.round(32768 * 10 ** (-3 / 20) * np.sin(2 * np.pi * 440 * n / RATE))
    far, _, _ = _call(beep, echo_db=None, seconds=14.0)
    k = np.arange(round(0.09 * RATE))
    tail = np.random.default_rng(7).standard_normal(len(k)) * np.exp(-k / (0.03 * RATE))  # a 30 ms room,
    room = np.concatenate(([1.0], tail * math.sqrt(0.1 / float(np.sum(tail**2)))))  # 10 dB under the direct path
    heard = np.convolve(_ulaw(far), room)[: len(far)]
    heard *= math.sqrt(float(np.mean(far**2)) / float(np.mean(heard**2)))
    for delay in (120.0, 250.0):
        d = round(delay / 1000 * RATE)
        echo = np.concatenate([np.zeros(d), heard[:-d]]) * 10 ** (-10 / 20)
        assert not any(isinstance(c, SpeechStarted) for c in _listen(far, _ulaw(echo))), delay


def test_the_canceller_runs_while_the_agent_plays_and_stops_after_the_tail() -> None:
    far, _, line = _call(_agent(), echo_db=-10.0, seconds=9.0)
    aec = EchoCanceller(AecConfig(mode="on", tail_ms=400))
    engaged: list[tuple[float, bool]] = []
    frames = len(line) // FRAME
    for j in range(frames):
        now = (j + 1) * FRAME_S
        k = j + round(LEAD_S / FRAME_S)
        if k * FRAME_S < 4.0 and k * FRAME_S >= AGENT_AT:  # the agent stops at 4 s (a barge-in)
            aec.played(far[k * FRAME : (k + 1) * FRAME].astype("<i2").tobytes(), k * FRAME_S)
        pcm = line[j * FRAME : (j + 1) * FRAME].astype("<i2").tobytes()
        out = aec.process(pcm, now)
        assert aec.engaged or out == pcm
        engaged.append((now, aec.engaged))
    assert not any(on for t, on in engaged if t < AGENT_AT - 1e-9)
    assert all(on for t, on in engaged if AGENT_AT + 0.02 <= t <= 4.0 + 0.4)
    assert not any(on for t, on in engaged if t > 4.0 + 0.4 + 0.02 + 1e-9)


def test_a_clear_ends_playback_where_it_happened() -> None:
    far, _, line = _call(_agent(), echo_db=-10.0, seconds=6.0)
    aec = EchoCanceller(AecConfig(mode="on", tail_ms=300))
    for k in range(round(AGENT_AT / FRAME_S), round(4.0 / FRAME_S)):  # sent ahead: up to 4 s
        aec.played(far[k * FRAME : (k + 1) * FRAME].astype("<i2").tobytes(), k * FRAME_S)
    aec.cleared(2.0)  # the caller barged in: nothing from 2 s on plays
    on = []
    for j in range(len(line) // FRAME):
        aec.process(line[j * FRAME : (j + 1) * FRAME].astype("<i2").tobytes(), (j + 1) * FRAME_S)
        on.append(((j + 1) * FRAME_S, aec.engaged))
    assert all(e for t, e in on if AGENT_AT + 0.02 <= t <= 2.3)
    assert not any(e for t, e in on if t > 2.3 + 0.02 + 1e-9)


def test_echo_the_guard_learns_later_engages_a_call_the_probe_found_quiet() -> None:
    far, _, line = _call(_agent(), echo_db=None)
    aec = EchoCanceller(AecConfig(mode="auto", engage_erl_db=25.0))
    _run(aec, far, line[: round(5.0 * RATE)])
    assert aec.echoic is False
    done = aec.frames
    aec.process(b"\x00\x00" * FRAME, 5.02, erl_db=30.0)
    assert aec.echoic is False  # quieter than the threshold: still nothing to do
    aec.process(b"\x00\x00" * FRAME, 5.04, erl_db=12.0)
    assert aec.echoic is True and aec.frames == done + 1  # the agent is still playing


def test_a_caller_who_switches_to_speakerphone_mid_call_gets_the_canceller() -> None:
    """The probe hears no echo (a handset), and no canceller is made; 4 s in, the agent comes back
    6 dB down (a speakerphone), and the listener's echo guard learns that on the raw line: the
    canceller engages, takes the echo out, and the listener hears the cleaned line beside the raw one."""
    far, _, handset = _call(_agent(), echo_db=None)
    _, _, speaker = _call(_agent(), echo_db=-6.0)
    switch = AGENT_AT + 4.0
    line = np.concatenate([handset[: round(switch * RATE)], speaker[round(switch * RATE) :]])
    made: list[int] = []
    aec, listener = EchoCanceller(AecConfig(mode="auto"), loader=_counted(made)), Listener(VadConfig())
    _, out = _wired(far, line[: round(switch * RATE)], aec, listener)
    assert aec.erl_db == math.inf and aec.echoic is False and not made and listener.gate.cleaned is None
    aec, listener = EchoCanceller(AecConfig(mode="auto")), Listener(VadConfig())
    _, out = _wired(far, line, aec, listener, learnt=(switch + 1.0, 6.0))
    assert aec.echoic is True and listener.gate.cleaned is not None
    late = slice(len(out) - 2 * RATE, len(out))
    assert _db(line[late]) - _db(out[late]) >= 20.0


def test_a_call_refused_under_lag_makes_its_canceller_once_calm_and_a_library_that_failed_never_again() -> None:
    """The worker lagged until 5 s: the call judged echoic at its first reply is refused, and asks
    again while its agent talks: it makes its canceller then, which takes the echo out by the end.
    A library that fails to load at that ask is not tried again for the rest of the call: the
    audio passes untouched and the slot goes back."""
    far, _, line = _call(_agent(), echo_db=-6.0)
    for loads in (True, False):
        made: list[int] = []
        budget = AecBudget(20)
        budget.late(-5.0, 0.3)
        aec = EchoCanceller(AecConfig(mode="auto"), loader=_counted(made) if loads else _failing(made), budget=budget)
        out = _run(aec, far, line)
        assert aec.refused == "lag" and made == [RATE]
        late = slice(len(out) - 2 * RATE, len(out))
        if loads:
            assert aec.frames > 0 and _db(line[late]) - _db(out[late]) >= 20.0
        else:
            assert aec.frames == 0 and np.array_equal(out, line[: len(out)]) and budget.engaged == 0


class _Asked(AecBudget):
    """A worker's budget that notes when a call asks it for a slot."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.asked: list[float] = []

    def take(self, holder: object, at: float) -> str:
        self.asked.append(at)
        return super().take(holder, at)


def test_a_refused_call_asks_again_only_when_its_agent_talks() -> None:
    """Refused for lag (until 5 s) at its first reply, the call's agent falls silent from 3 s to
    8 s: the call does not ask while there is no echo to cancel, and asks, and gets its canceller,
    as the agent talks again."""
    agent = _agent()
    cut = round(2.5 * RATE)
    far, _, line = _call(np.concatenate([agent[:cut], np.zeros(5 * RATE), agent[cut:]]), echo_db=-6.0, seconds=12.0)
    budget = _Asked(20)
    budget.late(-5.0, 0.3)
    aec = EchoCanceller(AecConfig(mode="auto"), budget=budget)
    _run(aec, far, line)
    first, *later = budget.asked
    assert first < 2.0 and aec.refused == "lag"
    assert later and all(8.0 - LEAD_S <= at < 9.0 for at in later) and aec.frames > 0  # asked as its audio comes


def test_mode_off_never_touches_the_audio() -> None:
    far, _, line = _call(_agent(), echo_db=-6.0, seconds=4.0)
    aec = EchoCanceller(AecConfig(mode="off"))
    out = _run(aec, far, line)
    assert np.array_equal(out, line[: len(out)]) and aec.frames == 0 and not aec.available


def test_without_the_library_the_audio_passes_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pywebrtc_audio", None)  # import now raises ImportError
    assert load_engine(RATE) is None
    far, _, line = _call(_agent(), echo_db=-6.0, seconds=4.0)
    aec = EchoCanceller(AecConfig(mode="on"))
    out = _run(aec, far, line)
    assert np.array_equal(out, line[: len(out)])
    assert aec.frames == 0 and not aec.available and not aec.engaged


def test_settings_out_of_range_are_refused() -> None:
    for bad in ({"mode": "maybe"}, {"engage_erl_db": -1.0}, {"tail_ms": -20}, {"probe_ms": 0}):
        with pytest.raises(ValueError):
            AecConfig(**bad)  # type: ignore[arg-type]
