"""End of turn in simulated time: candidate ends, verdicts, and the held speculative reply.

At a short pause the core starts the agent on a *tentative* turn whose reply is voiced but held;
the end of turn confirmed plays it at once, the caller going on abandons it unheard. These tests
walk that lifecycle, and check what a caller would notice: nothing of a guess is ever played, a
mid-sentence pause is never taken for the end, and speculation never takes a sixth TTS context.
"""

from __future__ import annotations

import dataclasses

from bridge.core.actions import (
    AbandonTurn,
    CancelTurn,
    CloseContext,
    ConfirmTurn,
    JudgeTurn,
    OpenContext,
    ReplyHeard,
    SendMedia,
    StartTurn,
)
from bridge.core.call import CallSettings
from bridge.core.events import AgentDone, AgentText, CallerAudio, Tick, TtsAudio, TtsFinal, TurnVerdict
from bridge.core.reply import ReplyState
from bridge.core.turns import STALL_S, TurnConfig
from tests.support import FRAME_S, Driver, frames, load_wav, silence

YES = load_wav("caller_04.wav")  # "Yes." 0.44 s, one word, no pause inside


def greeted() -> Driver:
    """A call whose greeting has played out: the agent is listening."""
    d = Driver.started()
    d.send(AgentText(0.01, 0, "Hi. "))
    d.send(AgentDone(0.02, 0))
    [open_] = d.all(OpenContext)
    d.send(TtsAudio(0.1, open_.context_id, silence(0.2)))
    d.send(TtsFinal(0.12, open_.context_id))
    d.advance(1.0)
    assert d.call.snapshot.reply is None
    return d


def answer(d: Driver, turn: int, at: float) -> str:
    """The agent answers ``turn`` at once and its voice sends audio: returns the context id."""
    before = len(d.all(OpenContext))
    d.send(AgentText(at, turn, "Sure. "))
    d.send(AgentDone(at + 0.001, turn))
    context = d.all(OpenContext)[before].context_id
    d.send(TtsAudio(at + 0.05, context, silence(0.4)))
    return context


def media_since(d: Driver, t: float) -> int:
    return len(d.since(t, [SendMedia]))


def test_a_pause_starts_a_held_reply_that_plays_the_moment_the_turn_ends():
    d = greeted()
    d.caller(YES, 1.0)
    spoke_until = d.now
    d.advance(spoke_until + 0.3)  # the candidate: 240 ms of silence
    [start] = [a for a in d.all(StartTurn) if a.turn == 1]
    assert start.tentative and start.utterance
    [judge] = d.all(JudgeTurn)
    assert judge.turn == 1 and judge.utterance == start.utterance
    answer(d, 1, d.now)
    assert d.call.snapshot.reply is ReplyState.DRAINING_HELD
    assert media_since(d, spoke_until) == 0, "a held reply is not played"
    d.advance(spoke_until + 0.55)
    assert media_since(d, spoke_until) == 0, "no verdict: the VAD's 600 ms is the floor"
    d.advance(spoke_until + 0.7)
    [confirm] = d.all(ConfirmTurn)
    assert confirm.turn == 1 and abs(confirm.waited - 0.6) < 0.021, "the floor: the VAD's 600 ms of silence"
    [(confirmed_at, _)] = d.since(spoke_until, [ConfirmTurn])
    [(first_at, _), *_] = d.since(spoke_until, [SendMedia])
    assert first_at == confirmed_at, "the held audio plays at the confirmation, not a frame later"
    assert [a for a in d.all(StartTurn) if a.turn > 1] == [], "no second turn: the tentative one is the turn"


def test_going_on_after_a_pause_abandons_the_guess_unheard_and_the_next_turn_has_every_word():
    d = greeted()
    d.caller(YES, 1.0)
    d.advance(d.now + 0.3)
    context = answer(d, 1, d.now)
    [first] = [a for a in d.all(StartTurn) if a.turn == 1]
    resumed = d.now + 0.1  # a 450 ms pause mid-sentence, then more words
    d.caller(YES, resumed)
    assert d.all(AbandonTurn) == [AbandonTurn(1)]
    assert CloseContext(context) in d.all(CloseContext)
    assert not [a for a in d.all(ReplyHeard) if a.turn == 1], "the agent never hears of a reply nobody heard"
    d.send(TtsAudio(d.now + 0.01, context, silence(0.4)))  # the abandoned context's audio still comes
    d.advance(d.now + 0.3)
    [second] = [a for a in d.all(StartTurn) if a.turn == 2]
    assert second.tentative and second.utterance.startswith(first.utterance)
    assert len(second.utterance) > len(first.utterance) + len(YES), "the whole utterance, from its first onset"
    answer(d, 2, d.now)
    d.advance(d.now + 1.0)
    assert [a.turn for a in d.all(ConfirmTurn)] == [2]
    assert d.call.snapshot.dropped_audio_chunks >= 1, "the abandoned context's audio was dropped, not played"
    played_contexts = {a.turn for a in d.all(ReplyHeard)}
    assert 1 not in played_contexts


def test_a_sure_verdict_with_a_transcript_ends_the_turn_early():
    d = greeted()
    d.caller(YES, 1.0)
    spoke_until = d.now
    d.advance(spoke_until + 0.26)
    [judge] = d.all(JudgeTurn)
    answer(d, 1, d.now)
    d.send(TurnVerdict(d.now + 0.002, judge.candidate, 0.9, 0, True, text=True))
    d.advance(spoke_until + 0.36)
    [confirm] = d.all(ConfirmTurn)
    assert confirm.turn == 1 and confirm.waited < 0.35, "ended at min_ms (300 ms) of silence, not 600"
    assert media_since(d, spoke_until) > 0


def test_an_audio_only_verdict_never_ends_a_turn_before_the_floor_unless_very_sure():
    d = greeted()
    d.caller(YES, 1.0)
    spoke_until = d.now
    d.advance(spoke_until + 0.26)
    [judge] = d.all(JudgeTurn)
    d.send(TurnVerdict(d.now, judge.candidate, 0.85, 0, True, text=False))
    d.advance(spoke_until + 0.5)
    assert d.all(ConfirmTurn) == [], "a 450 ms pause is not an end on an audio-only guess"


def end_of_turn(settings: CallSettings, prob: float | None) -> tuple[float, JudgeTurn]:
    """When "Yes." is taken for the end, given an audio-only verdict of ``prob`` (None: none comes)."""
    d = Driver.started(settings)
    d.caller(YES, 1.0)
    spoke_until = d.now
    d.advance(spoke_until + 0.26)
    [judge] = d.all(JudgeTurn)
    if prob is not None:
        d.send(TurnVerdict(d.now, judge.candidate, prob, 0, prob >= 0.5, text=False))
    d.advance(spoke_until + 2.0)
    [(at, _)] = d.since(0.0, [ConfirmTurn])
    return at - spoke_until, judge


def test_an_audio_only_verdict_below_what_the_core_heeds_ends_the_turn_where_no_verdict_would():
    """So the shell may skip a judge that cannot reach ``sure_audio`` without the caller noticing."""
    default = CallSettings()
    unjudged, judge = end_of_turn(default, None)
    assert judge.sure_audio == default.turn.confident_audio == 0.9
    assert all(end_of_turn(default, prob)[0] == unjudged for prob in (0.15, 0.5, 0.85))
    assert end_of_turn(default, 0.95)[0] < unjudged, "a very sure one ends the turn sooner"
    capped = dataclasses.replace(default, turn=dataclasses.replace(default.turn, max_ms=400))
    capped_unjudged, judge = end_of_turn(capped, None)
    assert judge.sure_audio == 0.0, "any verdict moves the end when max_ms is below vad.end_ms"
    assert end_of_turn(capped, 0.5)[0] < capped_unjudged


def test_an_unfinished_sentence_waits_longer_and_a_late_verdict_is_dropped():
    d = greeted()
    d.caller(YES, 1.0)
    spoke_until = d.now
    d.advance(spoke_until + 0.26)
    [judge] = d.all(JudgeTurn)
    d.send(TurnVerdict(d.now, judge.candidate, 0.1, 1250, False, text=True))
    d.advance(spoke_until + 1.2)
    assert d.all(ConfirmTurn) == [], "'I want to book a table for...': the caller gets time to go on"
    d.caller(YES, d.now)  # they do: the candidate is over
    assert d.all(AbandonTurn) == [AbandonTurn(1)]
    d.send(TurnVerdict(d.now, judge.candidate, 0.99, 0, True, text=True))  # late, for the old candidate
    assert d.all(ConfirmTurn) == []
    d.advance(d.now + 2.0)
    assert len(d.all(JudgeTurn)) == 2


def test_without_speculation_the_turn_starts_at_the_judged_end():
    d = Driver.started(CallSettings(turn=TurnConfig(preemptive=False)))
    d.send(AgentDone(0.01, 0))
    d.advance(1.0)
    d.caller(YES, 1.0)
    d.advance(d.now + 0.3)
    assert [a for a in d.all(StartTurn) if a.turn == 1] == []
    assert len(d.all(JudgeTurn)) == 1 and d.all(JudgeTurn)[0].turn == -1
    d.advance(d.now + 0.5)
    [start] = [a for a in d.all(StartTurn) if a.turn == 1]
    assert not start.tentative and start.utterance


def test_rapid_speculation_never_takes_a_sixth_context_nor_plays_a_guess():
    settings = dataclasses.replace(CallSettings(), drain_timeout_s=60.0)
    d = Driver.started(settings)
    d.send(AgentDone(0.01, 0))
    d.advance(1.0)
    t = 1.0
    for turn in range(1, 12):  # eleven pauses, each followed by more words; the TTS never sends isFinal
        d.caller(YES, t)
        d.advance(d.now + 0.3)
        d.send(AgentText(d.now, turn, "Sure thing. "))
        d.send(AgentDone(d.now + 0.001, turn))
        for open_ in d.all(OpenContext)[-1:]:
            d.send(TtsAudio(d.now + 0.01, open_.context_id, silence(0.3)))
        assert d.call.snapshot.contexts_in_use <= 5
        t = d.now + 0.1
    assert d.call.snapshot.peak_contexts <= 5
    assert len(d.all(AbandonTurn)) == 10
    assert d.all(SendMedia) == [], "not one frame of a guess the end of turn did not confirm"
    assert {a.turn for a in d.all(CancelTurn)} <= set(range(1, 11)), "only abandoned turns are cancelled"


def held_up(d: Driver, until: float, audio: list[bytes]) -> None:
    """The caller's audio is held up on its way (a lost TCP segment holds everything behind it):
    nothing comes until ``until``, every deadline the core asked for fires meanwhile, then the held
    frames arrive at once, stamped with their arrival as the shell stamps them."""
    while (deadline := d.call.next_deadline()) is not None and deadline <= until:
        d.now = max(d.now, deadline)
        d.log.extend((d.now, a) for a in d.call.handle(Tick(d.now)))
    d.now = until
    for frame in audio:
        d.log.extend((until, a) for a in d.call.handle(CallerAudio(until, frame)))
    d.line_at = until


def test_a_hole_in_the_callers_audio_is_not_taken_for_the_end_of_their_turn():
    d = greeted()
    d.caller(YES, 1.0)
    spoke_until = d.now
    d.advance(spoke_until + 0.2)  # a candidate end: its reply starts, held
    # The next 100 ms of silence and the caller's next word come 700 ms late, in one burst: by the
    # clock, the VAD's 600 ms of silence passed inside the hole; in the audio, the pause was 300 ms.
    held_up(d, spoke_until + 0.9, [silence(FRAME_S)] * 5 + frames(YES))
    assert d.all(ConfirmTurn) == [], "no turn ends inside a hole in the audio"
    assert d.all(AbandonTurn) == [AbandonTurn(1)], "the caller went on: the guess is dropped unheard"
    d.advance(d.now + 1.0)
    [turn] = [a for a in d.all(StartTurn) if a.turn == 2]
    assert len(turn.utterance) >= 2 * len(YES), "one turn holds both words"
    assert [a.turn for a in d.all(ConfirmTurn)] == [2]
    assert not [a for a in d.all(ReplyHeard) if a.turn == 1]


def test_when_the_callers_audio_stops_coming_the_clock_ends_the_turn():
    d = greeted()
    d.caller(YES, 1.0)
    spoke_until = d.now
    d.advance(spoke_until + 0.2)
    held_up(d, spoke_until + 3.0, [])  # the carrier sends nothing more (a stream that skips silence)
    [confirm] = d.all(ConfirmTurn)
    [(confirmed_at, _)] = d.since(spoke_until, [ConfirmTurn])
    assert abs(confirmed_at - (spoke_until + 0.6 + STALL_S)) < 0.021, "the floor, then the stall's grace"
    assert confirm.turn == 1


def test_a_burst_that_completes_the_silence_ends_the_turn_on_its_frame():
    d = greeted()
    d.caller(YES, 1.0)
    spoke_until = d.now
    d.advance(spoke_until + 0.2)
    held_up(d, spoke_until + 0.8, [silence(FRAME_S)] * 30)  # 600 ms of silence, late but all of it
    [confirm] = d.all(ConfirmTurn)
    [(confirmed_at, _)] = d.since(spoke_until, [ConfirmTurn])
    assert confirmed_at == spoke_until + 0.8, "ended as the audio that covers the silence came"
    assert confirm.turn == 1
