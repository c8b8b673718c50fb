"""The call's state machine in simulated time: no sockets, no sleeps, real webrtcvad on real speech."""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

import pytest

from bridge.core.actions import (
    CancelTurn,
    ClearPlayback,
    CloseContext,
    ConnectTts,
    KeepAlive,
    OpenContext,
    ReplyHeard,
    SendMark,
    SendMedia,
    SendText,
    StartTurn,
)
from bridge.core.call import Call, CallSettings, CallState
from bridge.core.events import (
    AgentDone,
    AgentText,
    Alignment,
    CallEnded,
    CallStarted,
    MarkPlayed,
    TtsAudio,
    TtsClosed,
    TtsConnected,
    TtsFinal,
)
from tests.support import Driver, load_wav, silence, tone

SPEECH = load_wav("caller_02.wav")
SHORT = load_wav("caller_04.wav")
REPLY_AUDIO = tone(440, 2.0)


def greet(d: Driver, text: str = "Hello there. How can I help you today?", at: float = 0.01) -> str:
    d.send(AgentText(at, 0, text))
    d.send(AgentDone(at, 0))
    [open_] = d.all(OpenContext)
    return open_.context_id


def test_call_start_connects_the_tts_and_asks_the_agent_for_a_greeting():
    call = Call()
    actions = call.handle(CallStarted(0.0, "MZ1", "CA1"))
    assert actions == [ConnectTts(), StartTurn(0, b"", "")]
    assert call.state is CallState.THINKING


def test_text_is_streamed_in_words_and_flushed_at_sentence_ends():
    d = Driver.started()
    for piece in ["Hel", "lo there. How ca", "n I help", " you today?"]:
        d.send(AgentText(0.01, 0, piece))
    sent_before_done = d.all(SendText)
    d.send(AgentDone(0.02, 0))
    texts = d.all(SendText)
    assert [t.text for t in sent_before_done][:1] == ["Hello there. "]
    assert sent_before_done[0].flush is True
    assert "".join(t.text for t in texts) == "Hello there. How can I help you today? "
    assert all(t.text.endswith(" ") or t.text == "" for t in texts)
    assert texts[-1].flush is True
    assert len(d.all(OpenContext)) == 1


def test_context_opens_only_once_the_tts_is_connected():
    d = Driver.started(tts_up=False)
    d.send(AgentText(0.01, 0, "Hi. "))
    assert d.all(OpenContext) == []
    d.send(TtsConnected(0.2))
    assert len(d.all(OpenContext)) == 1
    assert d.all(SendText)[0].text == "Hi. "


def test_close_waits_for_the_first_audio():
    d = Driver.started()
    cid = greet(d)
    assert d.all(CloseContext) == []  # closing now could make the service drop the reply
    d.send(TtsAudio(0.3, cid, REPLY_AUDIO[:1000]))
    assert d.all(CloseContext) == [CloseContext(cid)]


def test_audio_goes_out_in_100ms_mulaw_messages_paced_with_a_small_lead():
    d = Driver.started()
    cid = greet(d)
    d.send(TtsAudio(0.3, cid, REPLY_AUDIO))  # 2 s of audio at once
    d.send(TtsFinal(0.31, cid))
    d.advance(3.0)
    media = d.since(0, [SendMedia])
    assert len(media) == 20 and all(len(a.pcm) == 1600 for _, a in media), "one message per 100 ms of audio"
    assert b"".join(a.pcm for _, a in media) == REPLY_AUDIO, "together, exactly the reply"
    lead = CallSettings().lead_ms / 1000
    for i, (at, _) in enumerate(d.frames()):
        # frame i plays at 0.3 + 0.02*i; it never goes out more than lead_ms ahead of that
        assert at >= 0.3 + 0.02 * i - lead - 1e-9
        assert at <= 0.3 + 0.02 * i + 1e-9  # and never late
    assert d.all(SendMark), "marks track how far playback got"
    assert d.call.state is CallState.LISTENING  # the reply played out
    [heard] = d.all(ReplyHeard)
    assert heard == ReplyHeard(0, "Hello there. How can I help you today?", interrupted=False)


def test_barge_in_clears_closes_and_cancels_at_once():
    d = Driver.started()
    cid = greet(d)
    d.send(TtsAudio(0.3, cid, REPLY_AUDIO))
    d.advance(0.5)
    d.log.clear()
    d.caller(SPEECH, start=0.5)
    first_clear = next(at for at, a in d.log if isinstance(a, ClearPlayback))
    same_moment = [a for at, a in d.log if at == first_clear]
    assert ClearPlayback() in same_moment
    assert CloseContext(cid) not in same_moment  # already closed after first audio (graceful)
    assert 0.55 <= first_clear <= 0.5 + 0.2, "speech onset to clear within the VAD's start window"
    # nothing of the interrupted reply goes out after the clear
    assert [a for at, a in d.log if at >= first_clear and isinstance(a, SendMedia)] == []
    assert d.call.snapshot.barge_ins == 1


def test_barge_in_before_agent_finished_cancels_the_turn_and_closes_the_context():
    d = Driver.started()
    d.send(AgentText(0.01, 0, "Let me tell you a long story. It goes on "))
    [open_] = d.all(OpenContext)
    d.send(TtsAudio(0.3, open_.context_id, REPLY_AUDIO))
    d.caller(SPEECH, start=0.4)
    assert CancelTurn(0) in d.all(CancelTurn)
    assert CloseContext(open_.context_id) in d.all(CloseContext)


def test_late_audio_of_the_interrupted_context_is_dropped_and_counted():
    d = Driver.started()
    cid = greet(d)
    d.send(TtsAudio(0.3, cid, REPLY_AUDIO[:4000]))
    d.caller(SPEECH[:8000], start=0.4)
    before = len(d.all(SendMedia))
    d.send(TtsAudio(d.now + 0.01, cid, REPLY_AUDIO[4000:]))
    d.advance(d.now + 1)
    assert len(d.all(SendMedia)) == before
    assert d.call.snapshot.dropped_audio_bytes == len(REPLY_AUDIO) - 4000


def test_next_reply_goes_into_a_fresh_context_after_the_caller_finishes():
    d = Driver.started()
    cid = greet(d)
    d.send(TtsAudio(0.3, cid, REPLY_AUDIO))
    d.caller(SPEECH + silence(1.0), start=0.5)
    starts = d.answered()  # a pause between words may start a guess, given up when the caller goes on
    assert len(starts) == 2 and starts[0].turn == 0
    assert len(starts[1].utterance) >= len(SPEECH) * 0.9, "the caller's words are kept for the agent"
    d.send(AgentText(d.now, starts[1].turn, "Sure. "))
    d.send(AgentDone(d.now, starts[1].turn))
    opened = [o.context_id for o in d.all(OpenContext)]
    assert len(opened) == 2 and opened[0] != opened[1]


def test_speech_in_the_detector_warmup_does_not_barge_in():
    d = Driver.started()
    cid = greet(d)
    d.send(TtsAudio(0.05, cid, REPLY_AUDIO))
    d.caller(SHORT[:1200], start=0.0)  # 75 ms of speech right at the start
    assert d.all(ClearPlayback) == []


def test_never_more_than_five_contexts_however_fast_the_caller_interrupts():
    d = Driver.started()
    t = 0.0
    for turn in range(8):
        d.send(AgentText(t + 0.01, turn, f"Reply number {turn}. "))
        opened = d.all(OpenContext)
        if len(opened) == turn + 1:
            d.send(TtsAudio(t + 0.05, opened[-1].context_id, REPLY_AUDIO[:3200]))
        d.caller(SPEECH[:12000] + silence(0.8), start=t + 0.06)  # long enough to confirm a barge-in
        t = d.now
        assert d.call.snapshot.contexts_in_use <= 5
    d.send(AgentText(d.now, d.call.snapshot.turn, "Finally a reply. "))
    assert len(d.all(OpenContext)) == 5, "the sixth waits for a slot"
    first = d.all(OpenContext)[0].context_id
    d.send(TtsFinal(d.now + 0.01, first))
    assert len(d.all(OpenContext)) == 6
    assert d.all(SendText)[-1] == SendText(d.all(OpenContext)[-1].context_id, "Finally a reply. ", True)
    assert d.call.snapshot.peak_contexts == 5


def test_keepalive_keeps_a_waiting_context_alive_and_only_for_opened_contexts():
    d = Driver.started(CallSettings(agent_timeout_s=60.0))  # an agent allowed to think this long
    d.send(AgentText(0.01, 0, "Let me check that for you. "))
    [open_] = d.all(OpenContext)
    d.advance(45.0)  # the agent thinks for a long time
    keepalives = [(at, a) for at, a in d.log if isinstance(a, KeepAlive)]
    assert keepalives and all(a.context_id == open_.context_id for _, a in keepalives)
    times = [0.01] + [at for at, _ in keepalives]
    assert max(b - a for a, b in itertools.pairwise(times)) <= 10.0 + 1e-9


@pytest.mark.parametrize(
    ("ms_per_char", "expected"),
    [
        # The core's fallback guess is 14 characters a second (about 71 ms each): "One two three"
        # after a second of playback. A voice twice as fast or twice as slow says otherwise.
        (35, ("One two three four five", "One two three four five six")),
        (140, ("One", "One two")),
    ],
)
def test_heard_text_follows_alignment_and_marks_on_barge_in(ms_per_char, expected):
    d = Driver.started()
    text = "One two three four five six seven eight nine ten. "
    cid = greet(d, text)
    starts = tuple(i * ms_per_char for i in range(len(text)))
    d.send(TtsAudio(0.3, cid, silence(len(text) * ms_per_char / 1000), Alignment(text, starts)))
    d.advance(0.3 + 0.9)  # ~0.9 s played, ~1 s by the time the caller is heard
    for _, mark in d.since(0, [SendMark]):
        d.send(MarkPlayed(d.now, mark.name))
    d.caller(SPEECH[:8000], start=d.now)  # half a second: a real interruption, not a cough
    [heard] = d.all(ReplyHeard)
    assert heard.interrupted
    assert heard.text in expected, "the alignment says what was voiced, not the speaking-rate guess"
    assert "seven" not in heard.text


def test_tts_drop_mid_reply_revoices_what_was_not_yet_voiced():
    d = Driver.started()
    cid = greet(d, "First sentence here. Second sentence here.")
    first = "First sentence here. "
    d.send(TtsAudio(0.3, cid, silence(1.0), Alignment(first, tuple(range(0, 1000, 1000 // len(first)))[: len(first)])))
    d.send(TtsClosed(0.4, 1011, "server error"))
    d.send(TtsConnected(0.6))
    opened = d.all(OpenContext)
    assert len(opened) == 2 and opened[1].context_id != cid
    resent = [t.text for t in d.all(SendText) if t.context_id == opened[1].context_id]
    assert "".join(resent).strip() == "Second sentence here."


def test_call_end_closes_every_open_context_and_cancels_the_turn():
    d = Driver.started()
    d.send(AgentText(0.01, 0, "Still talking "))
    [open_] = d.all(OpenContext)
    actions = d.send(CallEnded(0.5))
    assert CancelTurn(0) in actions and CloseContext(open_.context_id) in actions
    assert d.call.ended and d.call.next_deadline() is None


def test_the_core_does_no_io():
    core = Path(__file__).resolve().parents[2].joinpath("bridge/core")
    for module in sorted(core.glob("*.py")):
        tree = ast.parse(module.read_text())
        imported = {
            name
            for node in ast.walk(tree)
            if isinstance(node, ast.Import | ast.ImportFrom)
            for name in ([node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names])
        }
        roots = {name.split(".")[0] for name in imported}
        assert roots.isdisjoint({"asyncio", "time", "json", "starlette", "websockets", "socket"}), module.name
        outside = {name for name in imported if name.startswith("bridge.") and not name.startswith("bridge.core.")}
        assert not outside, f"{module.name} imports {outside} from outside the core"


def test_settings_change_the_lead():
    def first_burst(settings: CallSettings) -> int:
        """Frames sent at once when the first audio arrives: the carrier's buffer filled to lead_ms."""
        d = Driver.started(settings)
        cid = greet(d)
        d.send(TtsAudio(0.3, cid, REPLY_AUDIO))
        return len([f for at, f in d.frames() if at == 0.3])

    assert first_burst(CallSettings()) == 15  # the default 300 ms
    assert first_burst(CallSettings(lead_ms=400, low_ms=200)) == 20
    assert first_burst(CallSettings(lead_ms=60, low_ms=20)) == 3
