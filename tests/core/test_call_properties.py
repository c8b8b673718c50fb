"""Invariants of the core over arbitrary interleavings (Hypothesis stateful testing).

Whatever the caller, the agent and the TTS do, and in whatever order:
- ``handle`` never raises;
- every frame played is audio the TTS sent for a context we opened, before that context was
  retired (interrupted, or its reply over) or final: audio of a retired, finished or never-opened
  context never reaches the caller;
- never more than five contexts open or draining;
- ``SendText``/``KeepAlive``/``CloseContext`` only for ids we opened, and text/keep-alive only while open;
- by the end of the call every opened context has been closed.
"""

from __future__ import annotations

import pytest
from hypothesis import Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from bridge.core.actions import (
    AbandonTurn,
    Action,
    CloseContext,
    ConfirmTurn,
    JudgeTurn,
    KeepAlive,
    OpenContext,
    ReplyHeard,
    SendMedia,
    SendText,
)
from bridge.core.audio import pcm_to_ulaw
from bridge.core.call import Call, CallSettings
from bridge.core.events import (
    AgentDone,
    AgentFailed,
    AgentText,
    CallEnded,
    CallerAudio,
    CallStarted,
    DtmfReceived,
    Event,
    MarkPlayed,
    Tick,
    TtsAudio,
    TtsClosed,
    TtsConnected,
    TtsError,
    TtsFinal,
    TurnVerdict,
)
from bridge.core.reply import ReplyState
from bridge.core.turns import TurnConfig
from bridge.core.vad import VadConfig
from tests.support import frames, load_wav, silence

SPEECH_FRAMES = frames(load_wav("caller_03.wav"))
SILENCE_FRAME = silence(0.02)


def constant(value: int, ms: int) -> bytes:
    """Audio whose every sample is ``value``: any 20 ms frame of it tells whose it is."""
    return value.to_bytes(2, "little", signed=True) * (8 * ms)


def level_of(index: int) -> int:
    return 500 + 700 * (index % 20)


STRAY = "never-opened"
STRAY_LEVEL = 20000
"""Audio of the `STRAY` id, which no context ever had: any frame of it played is a bug. Audio a
context sends after it was retired or finished carries the negative of its level: the same."""


class CallMachine(RuleBasedStateMachine):
    make_call = Call

    def __init__(self) -> None:
        super().__init__()
        # Short VAD windows, so a few steps make a whole turn: speech, barge-in, silence, reply.
        # Candidate ends of turn after 60 ms: every short pause starts a held, speculative reply.
        vad = VadConfig(start_ms=40, end_ms=100, warmup_ms=40)
        turn = TurnConfig(candidate_ms=60, min_ms=20, max_ms=400)
        self.call = self.make_call(CallSettings(vad=vad, turn=turn, turn_end_digit="#", apology="Sorry. "))
        self.judged: list[int] = []
        self.abandoned: set[int] = set()
        self.confirmed: set[int] = set()
        self.heard: set[int] = set()
        self.now = 0.0
        self.opened: list[str] = []
        self.closed: set[str] = set()
        self.retired: set[str] = set()
        self.live: str | None = None
        self.final: set[str] = set()
        self.marks: list[str] = []
        self.ended = False
        self.speech_pos = 0
        self.turn = -1
        self.owner: dict[int, tuple[str, bool]] = {}  # first mu-law byte -> (context, may it play)
        self.owner[pcm_to_ulaw(constant(STRAY_LEVEL, 1)[:2])[0]] = (STRAY, False)
        self.feed(CallStarted(0.0, "MZ", "CA"))
        self.feed(TtsConnected(0.0))

    def feed(self, event) -> None:
        for action in self.call.handle(event):
            self.check(action)

    def check(self, action) -> None:
        match action:
            case OpenContext(context_id=cid):
                assert cid not in self.opened, "ids are never reused"
                self.opened.append(cid)
                self.live = cid
            case SendText(context_id=cid) | KeepAlive(context_id=cid):
                assert cid in self.opened and cid not in self.closed
            case CloseContext(context_id=cid):
                assert cid in self.opened and cid not in self.closed
                self.closed.add(cid)
                if cid == self.live and self.call.snapshot.live_context != cid:
                    self.retired.add(cid)
            case JudgeTurn(candidate=candidate):
                self.judged.append(candidate)
            case AbandonTurn(turn=turn):
                assert turn not in self.confirmed and turn not in self.heard, "abandoned a turn the caller got"
                self.abandoned.add(turn)
            case ConfirmTurn(turn=turn):
                assert turn not in self.abandoned
                self.confirmed.add(turn)
            case ReplyHeard(turn=turn):
                assert turn not in self.abandoned, "the agent told of a reply nobody heard"
                self.heard.add(turn)
            case SendMedia(pcm=payload):
                assert payload and len(payload) % 320 == 0, "whole 20 ms frames"
                for frame in range(0, len(payload), 320):
                    owner = self.owner.get(pcm_to_ulaw(payload[frame : frame + 2])[0])
                    assert owner is not None, "a frame played that no context sent"
                    cid, allowed = owner
                    assert allowed, f"audio that {cid} sent after it was retired or finished (or never opened) played"
                    assert cid not in self.retired, f"audio of retired {cid} played"
            case _:
                name = getattr(action, "name", None)
                if isinstance(name, str):
                    self.marks.append(name)
        snap = self.call.snapshot
        assert snap.reply is not ReplyState.CLOSED, "a closed reply is no longer the call's"
        live, final = self.live, self.final
        if snap.live_context != live and live is not None and live in self.opened and live not in final:
            self.retired.add(live)
        self.live = snap.live_context

    def tick_to(self, dt: float) -> None:
        target = self.now + dt
        while (deadline := self.call.next_deadline()) is not None and deadline <= target:
            self.now = max(self.now, deadline)
            self.feed(Tick(self.now))
        self.now = target

    @precondition(lambda self: not self.ended)
    @rule(n=st.integers(1, 30), speak=st.booleans())
    def caller(self, n: int, speak: bool) -> None:
        for _ in range(n):
            self.tick_to(0.02)
            if speak:
                frame = SPEECH_FRAMES[self.speech_pos % len(SPEECH_FRAMES)]
                self.speech_pos += 1
            else:
                frame = SILENCE_FRAME
            self.feed(CallerAudio(self.now, frame))

    @precondition(lambda self: not self.ended)
    @rule(n=st.integers(3, 12))
    def caller_turn(self, n: int) -> None:
        """The caller says something short and stops: a barge-in if the agent talks, then a turn."""
        self.caller(n, True)
        self.caller(20, False)

    @precondition(lambda self: not self.ended)
    @rule(n=st.integers(3, 12), gap=st.integers(3, 8), k=st.integers(1, 6))
    def pauses_and_goes_on(self, n: int, gap: int, k: int) -> None:
        """The caller pauses mid-sentence (a candidate end, a held reply), then goes on, again and again."""
        for _ in range(k):
            self.caller(n, True)
            self.caller(gap, False)

    @precondition(lambda self: not self.ended and self.judged)
    @rule(pick=st.integers(0, 100), prob=st.floats(0.0, 1.0), wait=st.integers(0, 2000), text=st.booleans())
    def verdict(self, pick: int, prob: float, wait: int, text: bool) -> None:
        """The judge answers for some candidate, current or long over."""
        self.feed(TurnVerdict(self.now, self.judged[pick % len(self.judged)], prob, wait, prob >= 0.5, text))

    @precondition(lambda self: not self.ended)
    @rule(k=st.integers(1, 7))
    def rapid_barge_ins(self, k: int) -> None:
        """The caller cuts in on every reply as soon as it starts, again and again."""
        for _ in range(k):
            self.agent_text("Well, ", False)
            self.caller_turn(4)

    @precondition(lambda self: not self.ended)
    @rule(text=st.sampled_from(["Hello. ", "How are ", "you doing", "? Fine! ", ""]), late=st.booleans())
    def agent_text(self, text: str, late: bool) -> None:
        turn = max(0, self.call.snapshot.turn - (1 if late else 0))
        self.feed(AgentText(self.now, turn, text))

    @precondition(lambda self: not self.ended)
    @rule()
    def agent_done(self) -> None:
        self.feed(AgentDone(self.now, self.call.snapshot.turn))

    @precondition(lambda self: not self.ended)
    @rule()
    def agent_failed(self) -> None:
        self.feed(AgentFailed(self.now, self.call.snapshot.turn, "boom"))

    @precondition(lambda self: not self.ended)
    @rule(digit=st.sampled_from("1#"))
    def key(self, digit: str) -> None:
        self.feed(DtmfReceived(self.now, digit))

    @precondition(lambda self: not self.ended and self.opened)
    @rule(pick=st.integers(0, 100), ms=st.integers(10, 400))
    def tts_audio(self, pick: int, ms: int) -> None:
        cid = self.opened[pick % len(self.opened)]
        index = self.opened.index(cid)
        if index >= 20:
            return  # levels would repeat; twenty contexts are plenty for one example
        allowed = cid not in self.final and cid not in self.retired
        pcm = constant(level_of(index) if allowed else -level_of(index), ms)
        self.owner[pcm_to_ulaw(pcm[:2])[0]] = (cid, allowed)
        self.feed(TtsAudio(self.now, cid, pcm))

    @precondition(lambda self: not self.ended and self.opened)
    @rule(pick=st.integers(0, 100))
    def tts_final(self, pick: int) -> None:
        cid = self.opened[pick % len(self.opened)]
        if cid in self.closed and cid not in self.final:  # the server only finalises closed contexts
            self.final.add(cid)
            self.feed(TtsFinal(self.now, cid))

    @precondition(lambda self: not self.ended)
    @rule(unknown=st.booleans())
    def tts_stray(self, unknown: bool) -> None:
        self.feed(TtsAudio(self.now, STRAY, constant(STRAY_LEVEL, 100)))
        self.feed(TtsError(self.now, "invalid_input_message", "x", STRAY if unknown else None))

    @precondition(lambda self: not self.ended and self.opened)
    @rule(pick=st.integers(0, 100))
    def tts_context_error(self, pick: int) -> None:
        """The server fails one context: it sends nothing more for it, and takes nothing more."""
        cid = self.opened[pick % len(self.opened)]
        self.final.add(cid)
        self.closed.add(cid)
        self.feed(TtsError(self.now, "invalid_input_message", "x", cid))

    @precondition(lambda self: not self.ended)
    @rule()
    def tts_drop_and_back(self) -> None:
        self.final.update(self.opened)  # gone with the socket: no more audio, nothing more to send
        self.closed.update(self.opened)
        self.feed(TtsClosed(self.now, 1011, "boom"))
        self.tick_to(0.2)
        self.feed(TtsConnected(self.now))

    @precondition(lambda self: not self.ended and self.marks)
    @rule()
    def mark_echo(self) -> None:
        self.feed(MarkPlayed(self.now, self.marks.pop(0)))

    @precondition(lambda self: not self.ended)
    @rule(dt=st.floats(0.0, 25.0))
    def wait(self, dt: float) -> None:
        self.tick_to(dt)

    @precondition(lambda self: not self.ended)
    @rule()
    def hang_up(self) -> None:
        self.feed(CallEnded(self.now, "stop"))
        self.ended = True
        open_left = set(self.opened) - self.closed - self.final
        assert not open_left, f"contexts left open at call end: {open_left}"

    @precondition(lambda self: self.ended)
    @rule()
    def after_the_end(self) -> None:
        """Stragglers after the call ended change nothing and send nothing."""
        assert self.call.handle(CallerAudio(self.now, SPEECH_FRAMES[0])) == []
        for cid in self.opened:
            assert self.call.handle(TtsAudio(self.now, cid, constant(1000, 20))) == []

    @invariant()
    def at_most_five_slots(self) -> None:
        assert self.call.snapshot.contexts_in_use <= 5

    def teardown(self) -> None:
        if not self.ended:
            self.hang_up()


CallMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=60, deadline=None)
TestCallInvariants = CallMachine.TestCase


class _StrayAudioPlayed(Call):
    """A broken core: it takes audio of an id it never opened for the live context's."""

    def handle(self, event: Event) -> list[Action]:
        live = self.snapshot.live_context
        if isinstance(event, TtsAudio) and event.context_id == STRAY and live is not None:
            event = TtsAudio(event.at, live, event.pcm)
        return super().handle(event)


class _RetiredAudioPlayed(Call):
    """A broken core: it takes audio of any context but the live one for the live one's."""

    def handle(self, event: Event) -> list[Action]:
        live = self.snapshot.live_context
        if isinstance(event, TtsAudio) and event.context_id not in (live, STRAY) and live is not None:
            event = TtsAudio(event.at, live, event.pcm)
        return super().handle(event)


@pytest.mark.parametrize("broken", [_StrayAudioPlayed, _RetiredAudioPlayed])
def test_the_invariants_catch_a_core_that_plays_audio_it_must_drop(broken: type[Call]) -> None:
    machine = type("BrokenCallMachine", (CallMachine,), {"make_call": broken})
    # A fixed search (derandomize): the same examples every run, so whether the broken core is caught
    # does not hang on luck.
    quick = settings(max_examples=200, stateful_step_count=60, deadline=None, database=None, phases=[Phase.generate],
                     derandomize=True)
    with pytest.raises(AssertionError, match="played"):
        run_state_machine_as_test(machine, settings=quick)
