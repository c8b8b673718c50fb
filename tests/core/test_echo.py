"""The echo guard, through the core: the agent's own voice coming back never interrupts it; a
caller talking over it still does, as fast as without the guard once the call has taught it.

Every line is built in simulated time by `tests.turntaking`: the echo is the audio the core's
frames played at Twilio (its playback model), delayed and attenuated, mu-law coded with the
caller's voice from ``tests/audio`` on top. Real webrtcvad throughout.
"""

from __future__ import annotations

import numpy as np
import pytest

from bridge.core.bargein import BargeInConfig
from bridge.core.call import CallSettings
from bridge.core.echo import EchoConfig, EchoGuard
from bridge.core.reference import KEPT_S
from tests.turntaking import (
    BARGERS,
    ECHO_DELAYS,
    ECHO_LEVELS,
    ONSETS,
    RATE,
    Scenario,
    agent_voice,
    echo_only,
    pink,
    run,
    speakerphone,
    talk_over,
    white,
)

NO_GUARD = CallSettings(echo=EchoConfig(enabled=False))
HARD = BargeInConfig(confirm_ms=0)


@pytest.mark.parametrize("delay", ECHO_DELAYS)
@pytest.mark.parametrize("level", ECHO_LEVELS)
def test_the_agents_echo_never_pauses_or_interrupts_it(level: float, delay: float) -> None:
    r = run(echo_only(level, delay))
    assert r.clears == [], f"echo at {level} dB, {delay} ms paused the agent"
    assert r.interrupted_at is None and r.media > 600, "the whole reply played"


@pytest.mark.parametrize("delay", [40.0, 180.0, 250.0])
@pytest.mark.parametrize("level", [-10.0, -20.0])
def test_a_speakerphones_band_limited_echo_never_pauses_the_agent(level: float, delay: float) -> None:
    """Its loss differs by 20 dB from a dark vowel to a bright one: a single broadband loss,
    learnt from the dark ones, let every bright frame through (a stutter of pauses)."""
    r = run(echo_only(level, delay, path=speakerphone()))
    assert r.clears == [] and r.interrupted_at is None


@pytest.mark.parametrize(("level", "delay"), [(-10.0, 40.0), (-10.0, 180.0), (-20.0, 100.0)])
def test_a_speakerphones_echo_after_seconds_of_silence_never_pauses_the_agent(level: float, delay: float) -> None:
    """The agent says something, is silent for longer than the guard keeps what it played (2 s
    more than `KEPT_S`), then goes on. The frames heard before the silence still count as
    evidence of the band losses for a while; once what played then was forgotten, they took
    every frame's bands for silence and left each band the broadband loss: pauses, and an
    interruption, 2 s in."""
    voice = agent_voice()
    words = 4 * RATE * 2  # 4 s of the agent's reply, in bytes
    silent = round(KEPT_S) + 2
    reply = voice[:words] + bytes(silent * RATE * 2) + voice[words : 2 * words]
    r = run(Scenario(echo_db=level, delay_ms=delay, duration=9.0 + silent, reply=reply, echo_path=speakerphone()))
    assert r.clears == [] and r.interrupted_at is None


@pytest.mark.parametrize("level", ECHO_LEVELS)
def test_a_caller_talking_over_a_speakerphone_echo_interrupts_it(level: float) -> None:
    for name in BARGERS:
        for onset in (0.9, 3.9):
            r = run(talk_over(name, onset, level, 100.0, path=speakerphone()))
            assert r.committed(onset), f"{name} at {onset} s over a {level} dB speakerphone echo"


@pytest.mark.parametrize(("level", "delay", "noise"), [(-10.0, 45.0, "white"), (-30.0, 215.0, "pink")])
def test_echo_on_a_noisy_line_at_delays_between_the_guards_steps(level: float, delay: float, noise: str) -> None:
    line = white(-40.0, 15.0) if noise == "white" else pink(-35.0, 15.0)
    r = run(echo_only(level, delay, line))
    assert r.clears == [] and r.interrupted_at is None


def test_without_the_guard_the_echo_stops_the_agent() -> None:
    """The control: the lines above are hard, webrtcvad alone calls the echo speech. Soft barge-in
    turns that into a stutter (pause, the echo dies away, resume, again); hard, into silence."""
    stutter = run(echo_only(-30.0, 100.0), NO_GUARD)
    assert len(stutter.clears) >= 3
    hard = run(echo_only(-30.0, 100.0), CallSettings(echo=EchoConfig(enabled=False), barge_in=HARD))
    assert hard.interrupted_at is not None and hard.interrupted_at < 2.0


def test_a_moving_echo_path_costs_at_most_one_pause_and_never_an_interruption() -> None:
    """The carrier's jitter buffer can shift the echo: the learnt delay is then wrong until the
    guard notices (the pause that resumed) and learns again."""
    for start, moved in [(200.0, 130.0), (60.0, 250.0), (100.0, 160.0)]:
        r = run(Scenario(echo_db=-10.0, delay_ms=start, duration=12.0, delay_change=(5.0, moved)))
        assert r.interrupted_at is None
        assert len(r.clears) <= 1 and len(r.resumes) == len(r.clears)


@pytest.mark.parametrize("level", ECHO_LEVELS)
@pytest.mark.parametrize("name", ["caller_02.wav", "caller_03.wav", "caller_07.wav"])
def test_a_caller_talking_over_the_echoing_agent_interrupts_it(name: str, level: float) -> None:
    for delay in (40.0, 250.0):
        r = run(talk_over(name, 1.7, level, delay))
        assert r.committed(1.7), f"{name} over echo at {level} dB, {delay} ms was missed"


@pytest.mark.parametrize("level", ECHO_LEVELS)
def test_once_learnt_the_guard_reacts_within_20_ms_of_no_guard_at_all(level: float) -> None:
    """Paired: the same words at the same moment, on a line with echo and the guard, against a line
    with no echo at all (where the guard has nothing to do)."""
    for name in ("caller_02.wav", "caller_03.wav", "caller_07.wav"):
        for onset in (3.9,):
            plain = run(talk_over(name, onset, None, 0.0)).reaction(onset)
            for delay in (40.0, 180.0):
                guarded = run(talk_over(name, onset, level, delay)).reaction(onset)
                assert plain is not None and guarded is not None
                assert guarded <= plain + 0.020 + 1e-9, f"{name} at {onset}s, {level} dB/{delay} ms"


def test_a_loud_echo_hides_no_onset_for_more_than_20_ms() -> None:
    """The caller's first syllable is often quieter than a loud echo of the agent a few tens of ms
    away; once the delay is known only the echo that lines up with a frame may mask it. Every caller,
    every moment (1.7 s falls on the agent's loudest words), every delay, echo 10 dB down."""
    for name in BARGERS:
        for onset in ONSETS:
            plain = run(talk_over(name, onset, None, 0.0)).reaction(onset)
            assert plain is not None
            for delay in ECHO_DELAYS:
                guarded = run(talk_over(name, onset, -10.0, delay)).reaction(onset)
                assert guarded is not None and guarded <= plain + 0.020 + 1e-9, f"{name} at {onset}s, {delay} ms"


@pytest.mark.parametrize(("level", "delay"), [(-10.0, 250.0), (-20.0, 100.0), (-30.0, 40.0)])
def test_caller_frames_arriving_up_to_20_ms_late_cost_no_pause(level: float, delay: float) -> None:
    """The core stamps caller audio with its arrival, so network jitter moves the echo's apparent delay."""
    r = run(Scenario(echo_db=level, delay_ms=delay, duration=14.0, jitter_ms=20.0))
    assert r.clears == [] and r.interrupted_at is None


def test_caller_frames_arriving_up_to_40_ms_late_never_interrupt() -> None:
    """Jitter beyond the aligned window can unmask the echo for a moment: a pause, never an interruption."""
    for level in ECHO_LEVELS:
        r = run(Scenario(echo_db=level, delay_ms=180.0, duration=14.0, jitter_ms=40.0))
        assert r.interrupted_at is None and len(r.resumes) == len(r.clears)


def test_a_quieter_caller_gets_through_once_the_echo_loss_is_learnt() -> None:
    """10 dB below the agent, over a -20 dB echo: Geigel's fixed 6 dB rule alone would hold it."""
    for delay in (40.0, 180.0):
        r = run(talk_over("caller_03.wav", 3.9, -20.0, delay, caller_db=-10.0))
        assert r.committed(3.9) and r.reaction(3.9) is not None and r.reaction(3.9) <= 0.2


# --------------------------------------------------------------------- the guard alone


def frame(level_dbfs: float, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(160)
    x = x / np.sqrt(np.mean(x**2)) * 32768 * 10 ** (level_dbfs / 20)
    return np.clip(x, -32768, 32767).astype("<i2").tobytes()


def test_the_reference_is_what_plays_when_it_plays() -> None:
    guard = EchoGuard(EchoConfig())
    guard.played(frame(-20.0), start=1.00)  # sent earlier; reaches the caller at 1.00
    assert guard.reference(0.99) is None, "nothing had played yet"
    bound = -20.0 - guard.config.assumed_erl_db + guard.config.margin_db
    assert guard.threshold_db(guard.reference(1.02)) == pytest.approx(bound, abs=0.5)
    assert guard.reference(1.40) is None, "beyond the longest echo path"


def test_a_clear_takes_back_what_never_played() -> None:
    guard = EchoGuard(EchoConfig())
    guard.played(frame(-30.0), start=1.00)
    guard.played(frame(-10.0), start=1.02)
    guard.cleared(1.01)  # the frame in flight plays to its end; the next never starts
    reference = guard.reference(1.10)
    assert reference is not None and reference.max() == pytest.approx(-30.0, abs=0.5)


def test_the_learnt_echo_loss_never_exceeds_the_true_one() -> None:
    """Echo 25 dB down at 120 ms, plus a caller talking over a third of it: the estimate may only err low."""
    guard = EchoGuard(EchoConfig())
    rng = np.random.default_rng(7)
    levels = rng.uniform(-35.0, -10.0, 300)
    for i, level in enumerate(levels):
        guard.played(frame(level, i), start=i * 0.02)
    for i in range(20, 300):
        end = (i + 1) * 0.02
        reference = guard.reference(end)
        echo = levels[i - 6] - 25.0  # 120 ms = 6 frames back
        heard = echo if i % 3 else max(echo, -15.0)  # double talk: louder than the echo
        guard.learn(heard, reference)
    assert guard.learnt and 19.0 <= guard.erl_db <= 25.0 + 0.5


def test_learning_later_learns_what_learning_at_once_does() -> None:
    """Frames heard while the agent talks are learnt from a few at a time (`learn_later`); the
    guard must end up exactly where learning each at once leaves it, even when playback is
    cleared and restarts at once, inside the last frame heard (its line clock may run up to 5 ms
    ahead of arrival, `LineClock`): its read must not see the restart."""
    rng = np.random.default_rng(11)
    levels = rng.uniform(-35.0, -10.0, 400)
    now_guard, later_guard = EchoGuard(EchoConfig()), EchoGuard(EchoConfig())
    thresholds: list[tuple[float | None, float | None]] = []
    play_at = 0.0
    for i in range(400):
        end = (i + 1) * 0.02
        heard, spoken = levels[max(i - 6, 0)] - 22.0 + (3.0 if i % 7 == 0 else 0.0), end + 0.005
        now_guard.learn(heard, now_guard.reference(spoken), frame(heard, i), spoken)
        later_guard.learn_later(heard, spoken, frame(heard, i))
        if i % 25 == 0:  # now and then a frame the guard could veto reads its threshold
            thresholds.append((now_guard.threshold_db(now_guard.reference(spoken)),
                               later_guard.threshold_db(later_guard.reference(spoken))))
        if i % 50 == 49:  # a barge-in on this frame: what had not started is dropped, a reply starts now
            for guard in (now_guard, later_guard):
                guard.cleared(end)
            play_at = end
        while play_at < end + 0.2:  # a refill keeps 200 ms queued
            k = round(play_at / 0.02)
            for guard in (now_guard, later_guard):
                guard.played(frame(levels[k % 400], k), start=play_at)
            play_at += 0.02
    assert later_guard.learnt and later_guard.erl_db == now_guard.erl_db
    assert [later for _, later in thresholds] == [now for now, _ in thresholds]
    later, now = later_guard.bound(8.0), now_guard.bound(8.0)
    assert later is not None and now is not None
    # The per-band losses too; the bands of our frames are summed in other batches: a float's last digits
    np.testing.assert_allclose(later, now, rtol=0, atol=1e-6)


def test_a_clear_takes_back_what_never_played_however_long_the_lead() -> None:
    """`playback.lead_ms` may keep seconds of the agent queued at the carrier (up to ten): a clear
    takes back every frame that had not started, not only the last few, while the caller's line
    goes on being heard."""
    guard = EchoGuard(EchoConfig())
    queued = 150  # three seconds ahead
    for k in range(queued):
        guard.played(frame(-10.0, k), start=k * 0.02)
    for i in range(50):  # a second heard, the queue topped up to the lead as it plays
        end = (i + 1) * 0.02
        guard.learn_later(-60.0, end, frame(-60.0, i))
        guard.played(frame(-10.0, queued + i), start=(queued + i) * 0.02)
    guard.cleared(1.0)  # a barge-in: nothing queued behind the frame in flight plays
    for end in (1.5, 2.5, 3.9):
        reference = guard.reference(end)
        assert reference is None or reference.max() < -90.0, f"our audio still counted at {end} s"


@pytest.mark.parametrize(("level", "caller_db"), [(-20.0, -12.0), (-10.0, -6.0)])
def test_a_long_lead_delays_no_interruption(level: float, caller_db: float) -> None:
    """A caller talking over the echoing agent commits the interruption as soon with three seconds
    queued at the carrier as with the default lead: after the clear the echo guard no longer
    counts the agent's dropped audio against the caller."""
    for name in BARGERS:
        scenario = talk_over(name, 2.0, level, 120.0, caller_db=caller_db)
        short = run(scenario)
        long = run(scenario, CallSettings(lead_ms=3000, low_ms=2000))
        assert long.clears == short.clears and long.interrupted_at == short.interrupted_at, name
