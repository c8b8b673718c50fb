"""What the core does for the agent side, in simulated time: keys (DTMF) and failed agents."""

from __future__ import annotations

from bridge.core.actions import CancelTurn, ClearPlayback, OpenContext, ReplyHeard, SendMedia, SendText, StartTurn
from bridge.core.call import CallSettings, CallState
from bridge.core.events import AgentDone, AgentFailed, AgentText, DtmfReceived, TtsAudio, TtsFinal
from tests.support import Driver, load_wav, silence, tone

SPEECH = load_wav("caller_02.wav")
APOLOGY = "Sorry, I'm having trouble. Could you say that again?"
KEYS = CallSettings(turn_end_digit="#", apology=APOLOGY)


def greeted(settings: CallSettings = KEYS) -> Driver:
    """A call whose greeting has played out: the core is listening."""
    d = Driver.started(settings)
    d.send(AgentText(0.01, 0, "Hello there. "))
    d.send(AgentDone(0.01, 0))
    [open_] = d.all(OpenContext)
    d.send(TtsAudio(0.3, open_.context_id, tone(440, 0.5)))
    d.send(TtsFinal(0.31, open_.context_id))
    d.advance(1.5)
    assert d.call.state is CallState.LISTENING
    return d


def test_keys_go_with_the_next_turn_and_the_end_key_starts_it_at_once():
    d = greeted()
    d.send(DtmfReceived(2.0, "4"))
    d.send(DtmfReceived(2.3, "2"))
    assert len(d.all(StartTurn)) == 1, "ordinary keys wait for the turn"
    actions = d.send(DtmfReceived(2.6, "#"))
    assert StartTurn(1, b"", "42#") in actions


def test_without_an_end_key_keys_ride_along_with_the_callers_speech():
    d = greeted(CallSettings())
    d.send(DtmfReceived(2.0, "#"))
    assert len(d.all(StartTurn)) == 1
    d.caller(SPEECH + silence(1.0), start=2.1)
    assert d.all(StartTurn)[-1].digits == "#"


def test_the_end_key_while_speaking_ends_the_turn_with_the_speech_so_far_and_only_once():
    d = greeted()
    d.caller(SPEECH[:16000], start=2.0)  # one second of speech, still talking
    actions = d.send(DtmfReceived(d.now + 0.01, "#"))
    [turn] = [a for a in actions if isinstance(a, StartTurn)]
    assert turn.turn == 1 and turn.digits == "#" and len(turn.utterance) >= 16000 * 0.9
    d.caller(SPEECH[16000:] + silence(1.5), start=d.now)  # the VAD's own end of speech comes later
    assert [s.turn for s in d.all(StartTurn)] == [0, 1], "no second turn for the same speech"


def test_the_end_key_over_the_agent_stops_it_without_counting_a_barge_in():
    d = greeted()
    d.send(DtmfReceived(2.0, "#"))
    d.send(AgentText(2.1, 1, "Let me read you the whole menu. Option one is "))
    opened = d.all(OpenContext)[-1].context_id
    d.send(TtsAudio(2.3, opened, tone(523, 3.0)))
    d.advance(3.0)
    assert d.all(SendMedia)
    d.log.clear()
    actions = d.send(DtmfReceived(3.0, "#"))
    assert ClearPlayback() in actions and CancelTurn(1) in actions
    [heard] = [a for a in actions if isinstance(a, ReplyHeard)]
    assert heard.turn == 1 and heard.interrupted
    assert StartTurn(2, b"", "#") in actions
    assert d.call.snapshot.barge_ins == 0


def test_a_failed_agent_makes_the_caller_hear_the_apology_and_the_call_goes_on():
    d = greeted()
    d.caller(SPEECH + silence(1.0), start=2.0)
    turn = d.answered()[-1].turn  # a guess at a pause between the caller's words, if any, was abandoned
    d.send(AgentFailed(d.now, turn, "no text for 10 s"))
    opened = d.all(OpenContext)[-1].context_id
    sent = [t for t in d.all(SendText) if t.context_id == opened]
    assert "".join(t.text for t in sent).strip() == APOLOGY and sent[-1].flush
    d.send(TtsAudio(d.now + 0.2, opened, tone(523, 1.0)))
    d.send(TtsFinal(d.now + 0.01, opened))
    d.advance(d.now + 2.0)
    assert d.all(ReplyHeard)[-1] == ReplyHeard(turn, APOLOGY, interrupted=False)
    d.caller(SPEECH + silence(1.0), start=d.now)
    assert d.answered()[-1].turn > turn and len(d.answered()) == 3, "the next turn starts as usual"


def test_the_apology_follows_what_the_agent_did_say():
    d = greeted()
    d.send(DtmfReceived(2.0, "#"))
    d.send(AgentText(2.1, 1, "Your balance is "))
    d.send(AgentFailed(2.2, 1, "ReadError"))
    text = "".join(t.text for t in d.all(SendText) if t.context_id == d.all(OpenContext)[-1].context_id)
    assert text.strip() == f"Your balance is {APOLOGY}"


def test_a_late_failure_of_a_cancelled_turn_says_nothing():
    d = greeted()
    d.send(DtmfReceived(2.0, "#"))
    d.send(DtmfReceived(2.1, "#"))  # the caller pressed again: turn 1 is cancelled, turn 2 runs
    before = len(d.all(SendText))
    d.send(AgentFailed(2.2, 1, "CancelledError"))
    assert len(d.all(SendText)) == before
