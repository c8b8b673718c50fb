"""A whole call on the embedded offline voice (espeak-ng), with nothing faked: real uvicorn, real
WebSockets, real webrtcvad, real speech both ways. What the phone heard is checked as a person
would: it is speech (webrtcvad), it stops when the caller barges in, and it is the line the agent
was meant to say (pocketsphinx, restricted to the script's lines, tells which one it heard).
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import soxr
import webrtcvad

from bridge.tools.simulator import PhoneCall, Timeline
from bridge.tools.simulator.playback import Run
from tests.e2e.conftest import bridge_settings, serve, window, write_script
from tests.support import SPEECH

pocketsphinx = pytest.importorskip("pocketsphinx", reason="the dev extra brings pocketsphinx")
pytest.importorskip("espeakng_loader", reason="the offline voice is the extra bridge[voice]")

GREETING = "Hello, thanks for calling the demo line. How can I help you today?"
REPLIES = ["Sure, I can help with that. Let me look it up.", "Of course. Anything else?",
           "Thanks for calling, goodbye."]
LINES = [GREETING, *REPLIES]


def words(text: str) -> str:
    return " ".join(re.sub(r"[^a-z' ]+", " ", text.lower()).split())


@pytest.fixture(scope="module")
def recogniser() -> pocketsphinx.Decoder:
    """pocketsphinx's English model, allowed to hear only the script's lines, whole."""
    decoder = pocketsphinx.Decoder(samprate=16000, loglevel="FATAL")
    grammar = " | ".join(f"( {words(line)} )" for line in LINES)
    decoder.add_jsgf_string("script", f"#JSGF V1.0;\ngrammar script;\npublic <line> = {grammar};\n")
    decoder.activate_search("script")
    return decoder


def which_line(decoder: pocketsphinx.Decoder, pcm_8k: bytes) -> str | None:
    """The script line heard in this 8 kHz audio (the model wants 16 kHz), or None."""
    pcm_16k = soxr.resample(np.frombuffer(pcm_8k, dtype="<i2"), 8000, 16000).astype("<i2").tobytes()
    decoder.start_utt()
    decoder.process_raw(pcm_16k, full_utt=True)
    decoder.end_utt()
    hyp = decoder.hyp()
    return None if hyp is None else next((line for line in LINES if words(line) == hyp.hypstr), hyp.hypstr)


def speech_share(pcm: bytes) -> float:
    """Share of 20 ms frames webrtcvad (mode 3, its strictest) calls speech."""
    vad = webrtcvad.Vad(3)
    frames = [pcm[i : i + 320] for i in range(0, len(pcm) - 319, 320)]
    return sum(vad.is_speech(f, 8000) for f in frames) / max(1, len(frames))


def heard_between(phone: PhoneCall, start: float, end: float) -> tuple[bytes, list[Run]]:
    """What the phone played from `start` to `end`, and the runs of audio in it (a reply may come
    in more than one run if the machine is slow: sentences are voiced one by one)."""
    runs = [r for r in phone.log.runs if start <= r.start < end]
    return window(phone.heard, start, max((r.end for r in runs), default=start)), runs


@pytest.fixture
def settings(tmp_path):
    return bridge_settings(None, write_script(tmp_path / "agent.txt", LINES), BRIDGE_TTS="local")


async def test_the_greeting_is_real_speech_and_the_right_line(settings, recogniser):
    async with serve(settings) as bridge:
        phone = PhoneCall(bridge.media_url, caller=Timeline([]), duration=6.0)
        report = await phone.run()

    assert report.greeting_latency is not None and report.greeting_latency < 1.0
    greeting, runs = heard_between(phone, 0.0, 6.0)
    assert 2.5 < runs[-1].end - runs[0].start < 5.5 and runs[-1].end < 5.9, "the whole line, then silence"
    assert speech_share(greeting) > 0.6
    assert which_line(recogniser, greeting) == GREETING


async def test_a_barge_in_stops_the_greeting_and_the_reply_is_heard(settings, recogniser):
    caller = Timeline.from_files([(1.5, SPEECH / "caller_02.wav")])
    async with serve(settings) as bridge:
        phone = PhoneCall(bridge.media_url, caller=caller, duration=9.5)
        report = await phone.run()

    [barge] = report.barge_ins
    assert not barge.missed and barge.reaction is not None and barge.reaction < 0.3, barge
    [reply] = [r for r in report.replies if r.reply_at is not None]
    assert reply.latency is not None and reply.latency < 1.5, reply
    between = np.frombuffer(window(phone.heard, barge.clear_at + 0.04, reply.reply_at), dtype="<i2")
    assert len(between) > 8000 and not between.any(), "nothing of the greeting is heard after the clear"
    assert phone.log.runs[0].end <= barge.clear_at + 0.04
    answer, runs = heard_between(phone, reply.reply_at, 9.5)
    assert runs[-1].end < 9.4, "the reply was heard to its end"
    assert speech_share(answer) > 0.6
    assert which_line(recogniser, answer) == REPLIES[0]
