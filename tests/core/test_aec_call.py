"""The echo canceller wired into the call: what the agent's speech-to-text gets for an
interruption over a loud echo, and that ``aec = off`` (or no library) leaves the call as it was."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pytest

from bridge.core import linear
from bridge.core.actions import StartTurn
from bridge.core.aec import AecConfig
from bridge.core.budget import CALM_S, AecBudget
from bridge.core.call import CallSettings
from bridge.core.events import CallEnded, Event
from tests.support import load_wav, tone
from tests.turntaking import RATE, Line, Scenario, echo_only, run, talk_over

AUTO = CallSettings(aec=AecConfig(mode="auto"))
OFF = CallSettings(aec=AecConfig(mode="off"))
ONSET = 3.9


class Tap:
    """The call's recorder, and a copy of every chunk it is given: the audio the agent's
    speech-to-text is cut from (the utterance is these chunks from the pre-roll on)."""

    def __init__(self, recorder: object) -> None:
        self._recorder = recorder
        self.chunks: list[bytes] = []

    def remember(self, pcm: bytes) -> None:
        self.chunks.append(pcm)
        self._recorder.remember(pcm)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        return getattr(self._recorder, name)


def recorded(scenario: Scenario, settings: CallSettings) -> np.ndarray:
    """What the recorder heard over the whole call, one 20 ms chunk per frame from 0 s on."""
    line = Line(scenario, settings)
    tap = Tap(line.call._recorder)
    line.call._recorder = tap  # type: ignore[assignment]
    line.run()
    return np.frombuffer(b"".join(tap.chunks), "<i2").astype(np.float64)


def level_db(x: np.ndarray, start: float, end: float) -> float:
    span = x[round(start * RATE) : round(end * RATE)]
    return 10 * math.log10(float(np.mean(np.square(span))) + 1e-3)


def test_what_the_speech_to_text_gets_holds_the_echo_20_db_lower_than_the_raw_line() -> None:
    """A caller 10 dB under the agent interrupts over a -10 dB echo: the two seconds before their
    onset hold the echo alone (the utterance's pre-roll comes from there), then their words."""
    scenario = talk_over("caller_02.wav", ONSET, -10.0, 120.0, caller_db=-10.0)
    raw, cleaned = recorded(scenario, OFF), recorded(scenario, AUTO)
    assert level_db(raw, ONSET - 2.0, ONSET) - level_db(cleaned, ONSET - 2.0, ONSET) >= 20.0
    words = ONSET + len(load_wav("caller_02.wav")) / 2 / RATE
    assert level_db(raw, ONSET, words) - level_db(cleaned, ONSET, words) <= 6.0  # the caller is still there


def test_aec_off_and_a_missing_library_leave_the_call_as_it_was(monkeypatch: pytest.MonkeyPatch) -> None:
    scenario = talk_over("caller_03.wav", ONSET, -10.0, 120.0)
    before = run(scenario, OFF).actions
    assert run(scenario, AUTO).actions != before  # with the library, the canceller does change this call
    monkeypatch.setitem(sys.modules, "pywebrtc_audio", None)  # import now raises ImportError
    assert run(scenario, AUTO).actions == before
    assert run(scenario, replace(AUTO, aec=AecConfig(mode="on"))).actions == before
    monkeypatch.setattr(linear, "_load", lambda: None)  # nor libspeexdsp
    assert run(scenario, AUTO).actions == before


def test_a_quiet_caller_over_a_loud_echo_is_heard_on_the_linear_line_where_aec3s_suppresses_them(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A caller 10 dB under the agent over a -6 dB echo 250 ms late: the listener's cleaned line,
    from the linear canceller, hears them within 300 ms; AEC3's output, whose suppressor takes
    them out with the echo in double talk, took twice that."""
    if linear.load_linear(RATE, 80, 1024) is None:
        pytest.skip("libspeexdsp is not installed")
    scenario = talk_over("caller_03.wav", ONSET, -6.0, 250.0, caller_db=-10.0)
    heard = run(scenario, AUTO).reaction(ONSET)
    assert heard is not None and heard <= 0.3
    monkeypatch.setattr(linear, "_load", lambda: None)  # the listener hears AEC3's output
    late = run(scenario, AUTO).reaction(ONSET)
    assert late is None or late > 0.3


@pytest.mark.parametrize("agent", ["speech", "tone"])
def test_the_echo_alone_never_barges_in_on_the_linear_line(agent: str) -> None:
    """Its residual echo, 20 dB and more under the raw one but not suppressed, never passes for the
    caller."""
    for level, delay in ((-6.0, 40.0), (-10.0, 250.0)):
        scenario = echo_only(level, delay)
        if agent == "tone":
            scenario = replace(scenario, reply=tone(440.0, 14.0, level=0.25))
        result = run(scenario, AUTO)
        assert result.interrupted_at is None and not result.clears, (level, delay)


def test_the_utterance_sent_to_speech_to_text_holds_the_caller_and_the_echo_20_db_down() -> None:
    """The very audio the bridge hands the speech-to-text for an interruption over a -10 dB echo
    (a caller 10 dB under the agent), split by least squares into the caller's speech and the
    agent's echo as the line carried them: the echo's share is at least 20 dB below where it was,
    the caller's within 6 dB of it; without the canceller the echo is all there."""
    scenario = talk_over("caller_02.wav", ONSET, -10.0, 120.0, caller_db=-10.0)
    shares = {}
    for side, settings in (("off", OFF), ("auto", AUTO)):
        line = Line(scenario, settings)
        result = line.run()
        utterance = max((a.utterance for _, a in result.actions if isinstance(a, StartTurn)), key=len)  # all the words
        sent = np.frombuffer(utterance, "<i2").astype(np.float64)
        caller = line.mic
        echo = np.zeros(len(line.heard))
        d = round(120.0 / 1000 * RATE)
        echo[d:] = line.heard[:-d] * 10 ** (-10.0 / 20)
        start = int(np.argmax(np.correlate(caller, sent, "valid")))  # where in the call the utterance begins
        parts = np.stack((caller[start : start + len(sent)], echo[start : start + len(sent)]), axis=1)
        shares[side], *_ = np.linalg.lstsq(parts, sent, rcond=None)
    caller_off, echo_off = shares["off"]
    caller_auto, echo_auto = shares["auto"]
    assert 0.8 <= caller_off <= 1.25 and 0.8 <= echo_off <= 1.25, "the raw line holds both, as they were"
    assert 20 * math.log10(max(abs(echo_auto), 1e-6)) <= -20.0, f"echo left: {echo_auto:.3f}"
    assert 20 * math.log10(caller_auto) >= -6.0, f"caller kept: {caller_auto:.3f}"


def test_a_jittery_line_does_not_let_the_linear_lines_residual_pass_for_the_caller() -> None:
    """Caller frames up to 20 ms late move the line's clock by fractions of a sample: the linear
    canceller's reference must run on without a one-sample seam, which would let the echo through."""
    result = run(replace(echo_only(-10.0, 180.0), jitter_ms=20.0), AUTO)
    assert result.interrupted_at is None and not result.clears


def test_a_held_tones_echo_6_db_down_never_pauses_the_agent_on_the_raw_line() -> None:
    """The level guard alone, before it has learnt the call's echo: a steady tone's echo at the
    loudest a line may return (6 dB down) wobbles a tenth of a dB about its level from frame to
    frame, and on a bound drawn exactly there it paused the agent at every resume."""
    for delay in (40.0, 250.0):
        result = run(replace(echo_only(-6.0, delay), reply=tone(440.0, 14.0, level=0.25), duration=5.0), OFF)
        assert not result.clears, delay


class Late:
    """The canceller's side of the playout's echo reference, from ``since`` on believing every frame
    plays ``by`` seconds later than it does: a worker whose loop lags behind its calls."""

    def __init__(self, to: object, by: float, since: float) -> None:
        self._to, self._by, self._since = to, by, since

    def played(self, pcm: bytes, start: float) -> None:
        self._to.played(pcm, start + (self._by if start >= self._since else 0.0))  # type: ignore[attr-defined]

    def cleared(self, at: float) -> None:
        self._to.cleared(at + (self._by if at >= self._since else 0.0))  # type: ignore[attr-defined]


@pytest.mark.parametrize("delay", [40.0, 120.0])
def test_a_canceller_whose_reference_no_longer_matches_the_echo_leaves_the_raw_line_to_decide(delay: float) -> None:
    """From 5 s on the canceller is given what played 150 ms late: its output is then the echo
    nearly whole, which its line's guard, told the echo lies 40 dB and more down, took for the
    caller at every loud syllable (3-5 pauses in 9 s). Once what it removes falls, the raw line's
    level guard decides alone: no barge-in, and at most the one pause before that shows."""
    line = Line(echo_only(-10.0, delay), AUTO)
    fanout = line.call._playout.echo
    listener, canceller = fanout._to  # type: ignore[attr-defined]
    fanout._to = (listener, Late(canceller, 0.15, 5.0))  # type: ignore[attr-defined]
    result = line.run()
    assert result.interrupted_at is None
    assert len(result.clears) <= 1


def test_a_worker_that_runs_its_limit_of_cancellers_keeps_the_next_speakerphone_call_on_the_echo_guard() -> None:
    """One canceller slot: the first speakerphone call takes it; the second, judged as echoic, runs
    the echo guard alone while the first holds it (no false barge-in: the level guard holds the
    echo) and says why; once the first call has ended, the next one cancels again."""
    settings = replace(AUTO, aec_budget=AecBudget(1))
    first = Line(echo_only(-10.0, 120.0), settings)
    first.run()
    assert first.call.snapshot.aec_frames > 0 and not first.call.snapshot.aec_refused
    second = Line(echo_only(-10.0, 120.0), settings)
    result = second.run()
    assert second.call.snapshot.aec_frames == 0 and second.call.snapshot.aec_refused == "budget"
    assert result.interrupted_at is None and not result.clears
    first.call.handle(CallEnded(15.0, "hangup"))
    third = Line(echo_only(-10.0, 120.0), settings)
    third.run()
    assert third.call.snapshot.aec_frames > 0 and not third.call.snapshot.aec_refused


@pytest.mark.parametrize(
    ("loaded", "refused"),
    [
        (lambda b: b.late(0.0, 0.02), ""),  # a pacing timer 20 ms late: on time
        (lambda b: b.late(0.0, 0.3), "lag"),  # 300 ms late: the worker's loop is behind its calls
        (lambda b: b.busy(0.0, 0.3), ""),  # the process busy 30 % of a core
        (lambda b: b.busy(0.0, 0.8), "lag"),  # 80 %, its timers still on time: it soon will be behind
    ],
    ids=["on-time", "late", "idle", "busy"],
)
def test_a_worker_that_lags_or_is_near_a_full_core_takes_on_no_new_canceller_until_it_is_calm(
    loaded: Callable[[AecBudget], None], refused: str
) -> None:
    """Just as the 14 s call starts the worker lags or is busy: the speakerphone call keeps the echo
    guard alone, without a false barge-in, and says why; asking again while its agent talks, it gets
    its canceller once the worker has been calm for `CALM_S` (from 10 s on, not from 0.9 s)."""
    budget = AecBudget(20)
    loaded(budget)
    line = Line(echo_only(-10.0, 120.0), replace(AUTO, aec_budget=budget))
    result = line.run()
    assert line.call.snapshot.aec_refused == refused
    ran = line.call.snapshot.aec_frames * 0.02
    assert 0.0 < ran <= 14.0 - CALM_S if refused else ran > 14.0 - CALM_S
    assert result.interrupted_at is None and not result.clears


def test_a_call_refused_a_canceller_while_the_worker_lagged_hears_a_quiet_caller_once_it_is_calm() -> None:
    """The worker's timers ran late 5 s before the call: at its first reply the speakerphone call
    is refused a canceller and keeps the echo guard alone; asked again once the worker is calm, the
    canceller engages (about 6.4 s in), and a caller 10 dB under the agent over its -6 dB echo at 9 s
    is heard as soon as on a call whose canceller ran from the start. The echo guard alone took
    0.4 s, and an interrupting caller less: the cleaned line is what hears them."""
    onset = 9.0
    scenario = talk_over("caller_02.wav", onset, -6.0, 250.0, caller_db=-10.0)
    budget = AecBudget(20)
    budget.late(-5.0, 0.3)
    line = Line(scenario, replace(AUTO, aec_budget=budget))
    heard = line.run().reaction(onset)
    assert line.call.snapshot.aec_refused == "lag" and line.call.snapshot.aec_frames > 0
    from_start, alone = run(scenario, AUTO).reaction(onset), run(scenario, OFF).reaction(onset)
    assert heard is not None and from_start is not None and alone is not None
    assert heard <= from_start + 0.02 and heard < alone


def test_a_call_refused_for_the_budget_gets_the_slot_another_call_gives_back() -> None:
    """One canceller slot, held by a first speakerphone call; a second is refused it at its first
    reply (the echo guard alone, no false barge-in) until the first hangs up at 4 s: then it asks
    again while its agent talks, cancels for the rest of its reply, and still says it was refused."""
    settings = replace(AUTO, aec_budget=AecBudget(1))
    first = Line(echo_only(-10.0, 120.0), settings)
    first.run()
    second = Line(echo_only(-10.0, 120.0), settings)
    handle = second.handle

    def hang_up_first_at_4_s(event: Event) -> None:
        if event.at >= 4.0 and not first.call.snapshot.ended:
            first.call.handle(CallEnded(event.at, "hangup"))
        handle(event)

    second.handle = hang_up_first_at_4_s  # type: ignore[method-assign]
    result = second.run()
    assert second.call.snapshot.aec_refused == "budget"
    assert 14.0 - 4.0 - 2 * 5.0 < second.call.snapshot.aec_frames * 0.02 < 14.0 - 4.0
    assert result.interrupted_at is None and not result.clears


@pytest.mark.parametrize("settings", [OFF, AUTO], ids=["off", "auto"])
def test_caller_frames_read_late_at_once_after_a_stall_never_pass_for_the_caller(settings: CallSettings) -> None:
    """The worker's loop stalls for 0.8 or 1.5 s and then reads every caller frame that waited at
    once: timed by their arrival, they held the echo of what played a second before the guard's
    window, and paused the agent once per stall (with or without the canceller)."""
    for stall in (0.8, 1.5):
        for delay in (40.0, 120.0):
            line = Line(echo_only(-10.0, delay), settings)
            line.arrivals = [5.0 + stall if 5.0 <= at < 5.0 + stall else at for at in line.arrivals]
            result = line.run()
            assert result.interrupted_at is None and not result.clears, (stall, delay)


def test_a_canceller_running_when_the_worker_starts_to_lag_rests_and_leaves_the_echo_guard_alone() -> None:
    """The worker's pacing timers run 300 ms late at 3 s: the call's canceller, engaged at the
    first reply, skips its work until 13 s (its CPU back to the worker) and the echo guard alone
    lets no echo through; then it runs again, to the call's end at 14 s."""
    budget = AecBudget(20)
    budget.late(3.0, 0.3)
    line = Line(echo_only(-10.0, 120.0), replace(AUTO, aec_budget=budget))
    result = line.run()
    snapshot = line.call.snapshot
    assert snapshot.aec_refused == "lag"
    assert 1.0 / 0.02 < snapshot.aec_frames < 4.0 / 0.02  # about 0.8-3 s and 13-14 s, not 0.8-14 s
    assert result.interrupted_at is None and not result.clears
