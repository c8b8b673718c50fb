"""The reply lifecycle's table (``bridge.core.reply``), read as data, and a call walked through it.

The table is the single statement of what may happen to a reply; these tests spell out its legal
moves, so a change to the lifecycle is a visible change here, and check its shape: every state
can be reached and can end, a pause changes nothing but the pause, an illegal move is a bug.
"""

from __future__ import annotations

from collections import deque

import pytest

from bridge.core.actions import CancelTurn, CloseContext, OpenContext, ReplyHeard, SendText
from bridge.core.audio import AudioFormat
from bridge.core.events import AgentDone, AgentText, TtsAudio, TtsClosed, TtsConnected, TtsError, TtsFinal
from bridge.core.reply import HELD, PAUSED, TRANSITIONS, Input, Reply, ReplyState, ReplyStateError
from tests.support import Driver, load_wav, silence

S, In = ReplyState, Input
SPEECH = load_wav("caller_02.wav")

# Every move of a reply that is not paused, written out: the lifecycle at a glance.
PLAYING_MOVES = {
    S.WRITING: {
        In.AGENT_DONE: S.AWAITING_AUDIO, In.NOTHING_TO_VOICE: S.PLAYING_OUT, In.FIRST_AUDIO: S.SPEAKING,
        In.FINAL: S.SALVAGING, In.FAILED: S.SALVAGING, In.LOST: S.WRITING, In.LOST_VOICED: S.WRITING,
        In.PAUSE: S.WRITING_PAUSED, In.CUT: S.CLOSED,
    },
    S.SPEAKING: {
        In.AGENT_DONE: S.DRAINING, In.FINAL: S.SALVAGING, In.FAILED: S.SALVAGING, In.LOST: S.WRITING,
        In.LOST_VOICED: S.WRITING, In.PAUSE: S.SPEAKING_PAUSED, In.CUT: S.CLOSED,
    },
    S.AWAITING_AUDIO: {
        In.FIRST_AUDIO: S.DRAINING, In.FINAL: S.SALVAGING, In.FAILED: S.SALVAGING, In.LOST: S.AWAITING_AUDIO,
        In.LOST_VOICED: S.PLAYING_OUT, In.PAUSE: S.AWAITING_AUDIO_PAUSED, In.CUT: S.CLOSED,
    },
    S.DRAINING: {
        In.FINAL: S.PLAYING_OUT, In.FAILED: S.SALVAGING, In.LOST: S.AWAITING_AUDIO, In.LOST_VOICED: S.PLAYING_OUT,
        In.PAUSE: S.DRAINING_PAUSED, In.CUT: S.CLOSED,
    },
    S.PLAYING_OUT: {In.PLAYED_OUT: S.CLOSED, In.PAUSE: S.PLAYING_OUT_PAUSED, In.CUT: S.CLOSED},
    S.SALVAGING: {In.PLAYED_OUT: S.CLOSED, In.PAUSE: S.SALVAGING_PAUSED, In.CUT: S.CLOSED},
}


def moves_from(state: ReplyState) -> dict[Input, ReplyState]:
    return {happening: new for (old, happening), new in TRANSITIONS.items() if old is state}


def test_the_legal_moves_of_a_reply_that_plays():
    assert {state: moves_from(state) for state in PLAYING_MOVES} == PLAYING_MOVES


def test_a_paused_reply_moves_as_it_would_playing_and_stays_paused():
    for state, moves in PLAYING_MOVES.items():
        twin = PAUSED[state]
        expected = {h: (new if new is S.CLOSED else PAUSED[new]) for h, new in moves.items() if h is not In.PAUSE}
        assert moves_from(twin) == {**expected, In.RESUME: state}


def test_a_held_reply_moves_as_it_would_playing_stays_held_and_never_plays_out():
    for state, moves in PLAYING_MOVES.items():
        held = HELD[state]
        expected = {h: (new if new is S.CLOSED else HELD[new]) for h, new in moves.items()
                    if h not in (In.PAUSE, In.PLAYED_OUT)}
        assert moves_from(held) == {**expected, In.RELEASE: state, In.ABANDON: S.CLOSED}


def test_closed_is_the_end_and_every_other_state_can_be_cut():
    assert moves_from(S.CLOSED) == {}
    assert all(TRANSITIONS[state, In.CUT] is S.CLOSED for state in S if state is not S.CLOSED)
    assert set(TRANSITIONS.values()) <= set(S)


def test_every_state_is_reached_from_a_new_reply_and_every_state_reaches_the_end():
    def reachable(start: ReplyState) -> set[ReplyState]:
        seen, todo = {start}, deque([start])
        while todo:
            for new in moves_from(todo.popleft()).values():
                if new not in seen:
                    seen.add(new)
                    todo.append(new)
        return seen

    held = set(HELD.values())
    assert reachable(S.WRITING) == set(S) - held, "a reply that plays is never held again"
    assert reachable(S.WRITING_HELD) == set(S), "a speculative reply starts held"
    assert all(S.CLOSED in reachable(state) for state in S)


@pytest.mark.parametrize(("path", "illegal"), [
    ((), In.RESUME),  # not paused
    ((), In.PLAYED_OUT),  # the agent is still writing
    ((In.FIRST_AUDIO,), In.FIRST_AUDIO),  # a first audio twice
    ((In.AGENT_DONE, In.FIRST_AUDIO), In.AGENT_DONE),  # the agent finishing twice
    ((In.PAUSE,), In.PAUSE),
    ((In.CUT,), In.CUT),  # after the end, nothing
    ((), In.RELEASE),  # not held
    ((), In.ABANDON),  # a reply the caller may have heard is cut, never abandoned
])
def test_a_move_the_table_does_not_allow_is_a_bug_and_raises(path, illegal):
    reply = Reply(0, 0.0, AudioFormat())
    for happening in path:
        reply.move(happening)
    before = reply.state
    with pytest.raises(ReplyStateError, match=illegal.value):
        reply.move(illegal)
    assert reply.state is before


# ---------------------------------------------------------------- a call walked through the table


def test_a_reply_that_plays_out_whole():
    d = Driver.started()
    assert d.call.snapshot.reply is S.WRITING
    d.send(AgentText(0.01, 0, "Hello there. "))
    [open_] = d.all(OpenContext)
    d.send(TtsAudio(0.3, open_.context_id, silence(0.5)))
    assert d.call.snapshot.reply is S.SPEAKING
    assert d.all(CloseContext) == []
    d.send(AgentDone(0.4, 0))
    assert d.call.snapshot.reply is S.DRAINING and d.all(CloseContext) == [CloseContext(open_.context_id)]
    d.send(TtsFinal(0.5, open_.context_id))
    assert d.call.snapshot.reply is S.PLAYING_OUT
    d.advance(1.0)
    assert d.call.snapshot.reply is None
    assert d.all(ReplyHeard) == [ReplyHeard(0, "Hello there.", interrupted=False)]


def test_a_finished_reply_waits_for_its_first_audio_then_closes_in_the_same_step():
    d = Driver.started()
    d.send(AgentText(0.01, 0, "Hello there. "))
    d.send(AgentDone(0.02, 0))
    assert d.call.snapshot.reply is S.AWAITING_AUDIO
    cid = d.all(OpenContext)[0].context_id
    actions = d.send(TtsAudio(0.3, cid, silence(0.2)))
    assert CloseContext(cid) in actions and d.call.snapshot.reply is S.DRAINING


def test_an_agent_with_nothing_to_say_ends_its_reply_without_a_context():
    d = Driver.started()
    d.send(AgentDone(0.01, 0))
    assert d.all(OpenContext) == []
    assert d.call.snapshot.reply is None and d.all(ReplyHeard) == [ReplyHeard(0, "", interrupted=False)]


def test_a_sound_pauses_the_reply_and_a_sound_that_is_nothing_resumes_it():
    d = Driver.started()
    d.send(AgentText(0.01, 0, "Let me tell you a long story. "))
    cid = d.all(OpenContext)[0].context_id
    d.send(TtsAudio(0.3, cid, silence(3.0)))
    d.caller(SPEECH[: 16 * 200], start=0.5)  # 200 ms: long enough to start a sound, too short to confirm
    assert d.call.snapshot.reply is S.SPEAKING_PAUSED
    d.advance(d.now + 0.4)  # the gap ends it inside the confirmation window: dropped
    assert d.call.snapshot.reply is S.SPEAKING
    assert d.call.snapshot.barge_ins == 0


def test_a_lost_socket_sends_a_draining_reply_back_to_wait_for_the_audio_of_a_fresh_context():
    d = Driver.started()
    d.send(AgentText(0.01, 0, "First sentence here. Second sentence here. "))
    d.send(AgentDone(0.01, 0))
    first = d.all(OpenContext)[0].context_id
    d.send(TtsAudio(0.3, first, silence(0.2)))
    assert d.call.snapshot.reply is S.DRAINING
    d.send(TtsClosed(0.4, 1011, "server error"))
    assert d.call.snapshot.reply is S.AWAITING_AUDIO and d.call.snapshot.live_context is None
    d.send(TtsConnected(0.5))
    second = d.all(OpenContext)[-1].context_id
    assert second != first
    d.send(TtsAudio(0.7, second, silence(0.2)))
    assert d.call.snapshot.reply is S.DRAINING and CloseContext(second) in d.all(CloseContext)


def test_a_context_that_fails_while_the_agent_writes_ends_the_turn_and_takes_no_more_text():
    d = Driver.started()
    d.send(AgentText(0.01, 0, "Let me see. "))
    cid = d.all(OpenContext)[0].context_id
    d.send(TtsAudio(0.3, cid, silence(0.3)))
    actions = d.send(TtsError(0.35, "invalid_input_message", "refused", cid))
    assert CancelTurn(0) in actions, "the agent's words have nowhere to go: stop it"
    assert d.call.snapshot.reply is S.SALVAGING
    d.send(AgentText(0.4, 0, "More words. "))  # already in flight when the turn was cancelled
    assert [t.context_id for t in d.all(SendText)] == [cid] and len(d.all(SendText)) == 1
    d.advance(1.5)
    [heard] = d.all(ReplyHeard)
    assert heard.interrupted and d.call.snapshot.reply is None
