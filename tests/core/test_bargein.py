"""Soft barge-in through the core, in simulated time with real webrtcvad.

The agent pauses at the first evidence of the caller; a cough, a click or an "mhm" lets it go on
from exactly the frame the caller stopped hearing; speech that goes on interrupts it for good.
"""

from __future__ import annotations

import wave
from pathlib import Path

import pytest

from bridge.core.actions import CancelTurn, ClearPlayback, CloseContext, ReplyHeard, SendMedia, SendText
from bridge.core.audio import pcm_to_ulaw
from bridge.core.bargein import BargeInConfig
from bridge.core.call import Call, CallSettings, CallState
from bridge.core.events import AgentDone, AgentText, CallerAudio, CallStarted, Tick, TtsAudio, TtsConnected
from bridge.core.voicing import measure
from tests.support import SPEECH as AUDIO_DIR
from tests.support import Driver, frames, load_wav, silence
from tests.turntaking import Line, Scenario, Sound, agent_voice, cough, hum, run, talk_over

SPEECH = load_wav("caller_02.wav")
REPLY = agent_voice()[: 8000 * 2 * 6]  # six seconds of the agent talking


def played_audio(line: Line) -> bytes:
    """Everything the caller heard, in order, as Twilio played it."""
    return b"".join(p.ulaw for p in line.buffer.played)


@pytest.mark.parametrize("sound", ["cough 150 ms", "cough 250 ms", "mhm 300 ms"])
@pytest.mark.parametrize("echo", [None, -20.0])
def test_a_short_sound_pauses_the_agent_which_then_goes_on_from_the_frame_it_stopped(
    sound: str, echo: float | None
) -> None:
    pcm = {"cough 150 ms": cough(0.15), "cough 250 ms": cough(0.25), "mhm 300 ms": hum(0.3)}[sound]
    line = Line(Scenario((Sound(2.1, pcm, sound, speech=False),), echo_db=echo, delay_ms=120.0,
                         duration=8.0, reply=REPLY), None)
    r = line.run()
    assert len(r.clears) == 1 and 2.1 < r.clears[0] <= 2.1 + 0.2, "a fast stop"
    assert r.interrupted_at is None and r.turns == [], "not an interruption, not a turn"
    [(first_after, first_unheard)] = r.resumes
    assert first_after == first_unheard, "the first frame after the pause is the first the caller had not heard"
    heard = played_audio(line)
    assert heard == pcm_to_ulaw(REPLY)[: len(heard)], "no frame lost, none repeated"
    assert len(heard) >= 160 * 290, "and the reply went on"
    assert r.silences[0] <= 0.6, "the pause was short"


def test_speech_pauses_at_once_then_interrupts_once_it_is_clearly_words() -> None:
    """Paused at the start; given up 300 ms (``commit_ms``) after the onset, as the sound is voiced and
    articulated, sooner than the 250 ms confirmation window after the pause would."""
    line = Line(talk_over("caller_03.wav", 2.0, None, 0.0), None)
    r = line.run()
    [clear] = r.clears
    assert 2.0 < clear <= 2.0 + 0.12
    assert r.interrupted_at is not None and 2.0 + 0.3 - 1e-9 <= r.interrupted_at < clear + 0.25
    after = [a for _, a in r.actions][[a for _, a in r.actions].index(ClearPlayback()) :]
    assert not any(isinstance(a, SendMedia) for a in after), "nothing more of the reply after the pause"
    [heard] = [a for _, a in r.actions if isinstance(a, ReplyHeard)]
    assert heard.interrupted


def test_confirm_ms_0_is_the_hard_barge_in_of_old() -> None:
    hard = CallSettings(barge_in=BargeInConfig(confirm_ms=0))
    r = run(talk_over("caller_03.wav", 2.0, None, 0.0), hard)
    [clear] = r.clears
    assert r.interrupted_at == clear


def test_short_sounds_interrupt_a_hard_barge_in_agent() -> None:
    """The control for the soft case: with confirm_ms 0 the same cough costs the reply."""
    hard = CallSettings(barge_in=BargeInConfig(confirm_ms=0))
    r = run(Scenario((Sound(2.1, cough(0.25), speech=False),), duration=6.0, reply=REPLY), hard)
    assert r.interrupted_at is not None


def speaking_call() -> tuple[Driver, str]:
    d = Driver.started()
    d.send(AgentText(0.01, 0, "Let me tell you all about it. "))  # the agent is not done
    [cid] = [a.context_id for _, a in d.log if hasattr(a, "context_id")][:1]
    d.send(TtsAudio(0.3, cid, agent_voice()[: 8000 * 2 * 3]))
    d.advance(1.0)
    return d, cid


def test_while_paused_the_context_stays_open_and_text_and_audio_keep_coming() -> None:
    d, cid = speaking_call()
    d.log.clear()
    d.caller(cough(0.25), start=1.0)
    assert d.all(ClearPlayback)
    paused_at = d.log[-1][0]
    d.send(AgentText(d.now, 0, "And there is more. "))
    d.send(TtsAudio(d.now, cid, agent_voice()[: 8000 * 2]))
    assert SendText(cid, "And there is more. ", True) in d.all(SendText)
    assert CloseContext(cid) not in d.all(CloseContext)
    d.advance(paused_at + 1.0)
    assert d.call.state is CallState.SPEAKING and d.all(CancelTurn) == []
    assert [a for at, a in d.log if isinstance(a, SendMedia) and at > paused_at], "resumed"


def test_a_pause_nobody_settles_resumes_by_itself() -> None:
    """The media stream stalls right after a pause: no caller audio will ever decide it."""
    call = Call()
    call.handle(CallStarted(0.0, "MZ", "CA"))
    call.handle(TtsConnected(0.0))
    call.handle(AgentText(0.01, 0, "Hello there. "))
    call.handle(AgentDone(0.01, 0))
    call.handle(TtsAudio(0.3, "ctx-1", agent_voice()[: 8000 * 2 * 3]))
    now, out = 0.3, []
    for i, chunk in enumerate([silence(0.02)] * 15 + frames(SPEECH)[:20]):
        now = round(0.32 + 0.02 * i, 6)
        while (deadline := call.next_deadline()) is not None and deadline < now:
            call.handle(Tick(deadline))
        out = call.handle(CallerAudio(now, chunk))
        if ClearPlayback() in out:
            break
    assert ClearPlayback() in out
    deadline = call.next_deadline()
    assert deadline is not None and deadline == pytest.approx(now + 2.0)
    resumed = call.handle(Tick(deadline))
    assert any(isinstance(a, SendMedia) for a in resumed)


INTERRUPTIONS = sorted((AUDIO_DIR / "interruptions").glob("interrupt_*.wav"))


@pytest.mark.parametrize("echo_db", [None, -20.0])
@pytest.mark.parametrize("clip", INTERRUPTIONS, ids=lambda p: p.stem)
def test_a_half_second_interruption_is_never_taken_for_a_cough(clip: Path, echo_db: float | None) -> None:
    """"Wait, I…": 300–450 ms voiced. The reply stops for good, and nothing of it plays after the clear."""
    with wave.open(str(clip), "rb") as w:
        words = w.readframes(w.getnframes())
    r = run(Scenario((Sound(2.0, words, clip.stem),), echo_db=echo_db, delay_ms=100, duration=6.0))
    assert r.committed(2.0), "the interruption gave the reply up"
    assert not r.resumes, "the reply never resumed over the caller"
    actions = [a for _, a in r.actions]
    cleared = actions.index(ClearPlayback())
    given_up = next(i for i, a in enumerate(actions) if isinstance(a, ReplyHeard))
    assert not [a for a in actions[cleared:given_up] if isinstance(a, SendMedia)], "nothing played after the clear"


def test_voicing_and_articulation_tell_words_from_a_hum_and_a_cough() -> None:
    with wave.open(str(INTERRUPTIONS[0]), "rb") as w:
        words = w.readframes(w.getnframes())[: 2 * 2400]
    assert measure(_frames(words), 8000).is_speech()
    assert not measure(_frames(hum(0.3)), 8000).is_speech(), "a steady hum does not articulate"
    assert not measure(_frames(cough(0.25)), 8000).is_speech(), "a cough is not voiced"


def _frames(pcm: bytes) -> list[bytes]:
    return [pcm[i : i + 320] for i in range(0, len(pcm) - 319, 320)]
