"""The media WebSocket in-process: the greeting is played in 20 ms frames with marks, and a caller
who talks over it gets a ``clear``, then the reply in a fresh context.

The phone is `tests.shell.conftest.Phone` (Twilio's side, real time), the voice is `ToneTts`
(a tone per context) and the agent the project's `ScriptedAgent`.
"""

from __future__ import annotations

from bridge.core.actions import CloseContext, OpenContext, SendText
from bridge.core.call import CallSettings
from bridge.tools.simulator.wire import AgentClear, AgentMark, AgentMedia
from tests.shell.conftest import MS_PER_CHAR, Phone, build, pitch
from tests.support import load_wav

GREETING = "Hello, thanks for calling."
LONG_GREETING = ("Hello and welcome to the bridge demo line. I can tell you about our opening hours, "
                 "our delivery options and your appointments.")
REPLY = "Sure, I can help."


def test_the_greeting_is_played_in_frames_with_marks_and_the_agent_learns_it_was_heard(tmp_path, client_for):
    shell = build(tmp_path, [GREETING, REPLY])
    client = client_for(shell)
    with client.websocket_connect("/twilio/media") as ws:
        phone = Phone(ws)
        phone.start()
        heard = phone.listen(8.0, until=lambda: bool(shell.agents and shell.agents[0].history))
        phone.listen(0.3)  # anything sent after the reply was over would show up now
        closed = phone.hang_up()
    assert heard, "the agent was told what the caller heard"
    [tts], [agent] = shell.tts, shell.agents
    [cid] = tts.opened()
    assert tts.closed_contexts() == [cid], "the greeting's context was closed once its text was in"
    assert "".join(a.text for a in tts.sent if isinstance(a, SendText)).strip() == GREETING

    media = phone.of(AgentMedia)
    assert media, "the greeting's audio reached the phone"
    sizes = [len(m.ulaw) for _, m in media]
    assert all(s % 160 == 0 and 0 < s <= 800 for s in sizes), "whole 20 ms frames of 8 kHz mu-law, 100 ms at most"
    assert max(sizes) == 800, "a refill's frames go out as one message"
    played_s, spoken_s = sum(sizes) / 8000, tts.spoken_s[cid]
    assert spoken_s >= len(GREETING) * MS_PER_CHAR / 1000
    assert 0 <= played_s - spoken_s < 0.02, (played_s, spoken_s)  # all of it (the last frame padded), no more
    assert abs(pitch(b"".join(phone.media_pcm())) - tts.pitches[cid]) < 10, "the greeting's own voice"

    marks = [m.name for _, m in phone.of(AgentMark)]
    assert len(marks) >= int(spoken_s / 0.2) - 1, "marks every 200 ms of audio report what was heard"
    assert len(set(marks)) == len(marks)
    assert phone.echoed == marks, "every mark was played and echoed"
    assert agent.history == [(0, GREETING, False)], "the whole greeting was heard, uninterrupted"
    assert not phone.of(AgentClear)
    assert closed == 1000 and tts.closed, "hanging up ended the call and closed the TTS"


def test_a_caller_who_talks_over_the_greeting_gets_clear_then_the_reply_in_a_fresh_context(tmp_path, client_for):
    shell = build(tmp_path, [LONG_GREETING, REPLY])
    client = client_for(shell)
    with client.websocket_connect("/twilio/media") as ws:
        phone = Phone(ws)
        phone.start()
        # The greeting has played half a second (the carrier holds `playback.lead_ms` more than has
        # played): its first words were heard before the caller talks over it.
        sent = CallSettings().lead_ms / 1000 + 0.5
        assert phone.listen(3.0, until=lambda: sum(len(m.ulaw) for _, m in phone.of(AgentMedia)) >= sent * 8000), (
            "the greeting is playing")
        began, ended = phone.talk(load_wav("caller_02.wav"))
        replied = phone.listen(6.0, until=lambda: bool(len(shell.tts[0].opened()) > 1
                                                          and phone.of(AgentMedia, after=ended)
                                                          and len(shell.agents[0].history) > 1))
        assert phone.hang_up() == 1000
    [tts], [agent] = shell.tts, shell.agents
    assert replied, "the reply was heard after the caller stopped"
    [(cleared_at, _)] = phone.of(AgentClear)
    assert began < cleared_at < ended, "cleared while the caller was still talking"
    greeting, *guesses, reply = tts.opened()  # a pause between the caller's words may start a held guess
    assert greeting != reply, "the reply has a fresh context"
    assert all(guess in tts.closed_contexts() for guess in guesses), "a guess the caller talked through is closed"
    assert tts.closed_contexts()[0] == greeting
    assert tts.sent.index(CloseContext(greeting)) < tts.sent.index(OpenContext(reply))

    after_clear = b"".join(phone.media_pcm(after=cleared_at))
    assert after_clear, "the reply is heard"
    assert abs(pitch(after_clear) - tts.pitches[reply]) < 30, "nothing of the greeting after the clear"
    assert abs(pitch(b"".join(phone.media_pcm(before=began))) - tts.pitches[greeting]) < 30

    (turn, heard, interrupted), *_ = agent.history
    assert turn == 0 and interrupted
    assert heard and LONG_GREETING.startswith(heard) and len(heard) < len(LONG_GREETING), heard
    assert agent.history[1][1:] == (REPLY, False), "the reply was heard whole, and nothing of a guess"
    assert len(agent.history) == 2
