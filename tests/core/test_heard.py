"""What the agent is told the caller heard, and what the echo guard is told was played.

The agent's memory of a conversation is built from `ReplyHeard`: if it claims a reply was heard
whole when none of its audio ever played, the agent answers questions the caller never heard
asked. The echo guard's reference is built from what the core says it played: if it keeps frames
a ``clear`` dropped, it takes the caller for an echo of audio that never existed.
"""

from __future__ import annotations

import math

from bridge.core.actions import ClearPlayback, CloseContext, OpenContext, ReplyHeard, SendMedia
from bridge.core.call import CallSettings
from bridge.core.events import AgentDone, AgentText, Alignment, DtmfReceived, TtsAudio, TtsError, TtsFinal
from tests.support import Driver, load_wav, silence, tone

SPEECH = load_wav("caller_02.wav")
TEXT = "One two three four five six. "
MS_PER_CHAR = 55  # the TTS's speaking pace in these tests: not the 70 ms of the core's fallback rate


def greet(d: Driver, text: str = TEXT, at: float = 0.01) -> str:
    d.send(AgentText(at, 0, text))
    d.send(AgentDone(at, 0))
    [open_] = d.all(OpenContext)
    return open_.context_id


def aligned(text: str) -> tuple[bytes, Alignment]:
    """Audio voicing ``text`` at `MS_PER_CHAR`, with its alignment (start times from the chunk's start)."""
    return silence(len(text) * MS_PER_CHAR / 1000), Alignment(text, tuple(i * MS_PER_CHAR for i in range(len(text))))


def test_a_reply_played_out_whole_is_heard_whole():
    d = Driver.started()
    cid = greet(d)
    pcm, alignment = aligned(TEXT)
    d.send(TtsAudio(0.3, cid, pcm, alignment))
    d.send(TtsFinal(0.35, cid))
    d.advance(3.0)
    assert d.all(ReplyHeard) == [ReplyHeard(0, TEXT.strip(), interrupted=False)]


def test_a_reply_whose_context_fails_before_any_audio_was_heard_by_nobody():
    d = Driver.started()
    cid = greet(d)
    d.send(TtsError(0.2, "invalid_input_message", "the server refused the text", cid))
    d.advance(2.0)
    assert d.all(SendMedia) == []
    assert d.all(ReplyHeard) == [ReplyHeard(0, "", interrupted=True)], "nothing played, so nothing was heard"


def test_a_reply_cut_short_by_a_tts_error_reports_only_what_played():
    d = Driver.started()
    cid = greet(d)
    pcm, alignment = aligned("One two three ")  # the server voiced this much, then failed the context
    d.send(TtsAudio(0.3, cid, pcm, alignment))
    d.send(TtsError(0.4, "invalid_input_message", "the server gave up", cid))
    d.advance(3.0)
    assert len(d.frames()) == math.ceil(len("One two three ") * MS_PER_CHAR / 20), "all of it played"
    assert d.all(ReplyHeard) == [ReplyHeard(0, "One two three", interrupted=True)]


def test_without_alignment_the_speaking_rate_says_how_much_of_a_failed_reply_played():
    d = Driver.started()
    cid = greet(d)
    d.send(TtsAudio(0.3, cid, silence(0.5)))  # half a second: 7 characters at the fallback rate
    d.send(TtsError(0.4, "invalid_input_message", "the server gave up", cid))
    d.advance(3.0)
    assert d.all(ReplyHeard) == [ReplyHeard(0, "One", interrupted=True)], "a half-heard word is not heard"


def test_a_reply_the_tts_never_voiced_is_closed_and_reported_unheard():
    d = Driver.started()
    cid = greet(d)
    first_audio_timeout = CallSettings().first_audio_timeout_s
    d.advance(0.01 + first_audio_timeout - 0.05)
    assert d.all(CloseContext) == [] and d.all(ReplyHeard) == []
    d.advance(0.01 + first_audio_timeout + 0.05)
    assert d.all(CloseContext) == [CloseContext(cid)], "its slot is given back"
    assert d.all(ReplyHeard) == [ReplyHeard(0, "", interrupted=True)]


def test_the_turn_end_key_makes_the_echo_guard_forget_what_never_played():
    """The key clears the carrier's buffer: the loud frames waiting in it never play, so they
    cannot echo, and a caller who speaks right after the key is heard at once."""
    d = Driver.started(CallSettings(turn_end_digit="#"))
    cid = greet(d, "Let me read you the whole list of our opening hours. ")
    quiet_then_loud = silence(0.6) + tone(440, 1.0, level=0.9)  # plays from 0.3: loud from 0.9 on
    d.send(TtsAudio(0.3, cid, quiet_then_loud))
    d.advance(0.9)  # the carrier now holds lead_ms of the loud part; none of it has played
    d.send(DtmfReceived(0.9, "#"))
    assert d.since(0.9, [ClearPlayback]), "the key cleared the loud frames before they played"
    d.send(AgentText(0.9, 1, "Sure. "))
    d.send(AgentDone(0.9, 1))
    second = d.all(OpenContext)[-1].context_id
    d.send(TtsAudio(0.91, second, silence(2.0)))  # the next reply, silent: it has no echo of its own
    start = 0.94
    d.caller(SPEECH, start=start)
    first_clear = min(at for at, a in d.since(start, [ClearPlayback]))
    # Only silence ever played, so nothing can mask the caller: the VAD's start window decides.
    assert first_clear <= start + 0.2, f"the caller was taken for an echo until {first_clear - start:.2f} s"
