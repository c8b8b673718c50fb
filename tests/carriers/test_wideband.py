"""Vonage at 16 kHz end to end, with real uvicorn and real sockets: no step of the call goes through 8 kHz.

The proof is a tone 8 kHz cannot carry: the ElevenLabs stand-in voices every context as a tone from
5 kHz up (above 8 kHz audio's 4 kHz Nyquist limit), asked for as ``pcm_16000``. The phone hears it
at its own frequency and level on Vonage's binary 16 kHz frames; a detour through 8 kHz anywhere
(the TTS format, the core's frames, the codec) would have filtered it away or folded it below 4 kHz.
The caller's side is checked the same way: the speech-to-text stream is opened at 16 kHz and gets
16 kHz worth of bytes.
"""

from __future__ import annotations

import json
import math

import numpy as np

from bridge.testing.fake_deepgram import FakeDeepgram
from bridge.testing.fake_elevenlabs import FakeElevenLabs
from bridge.testing.fake_elevenlabs.audio import render_tone
from bridge.tools.simulator import PhoneCall, Timeline
from bridge.tools.simulator.carriers import VonageDialect, stream_url_from_answer
from tests.carriers.test_calls import answer, local, wait_for
from tests.e2e.conftest import API_KEY, bridge_settings, contexts_in_order, serve, tone_share
from tests.support import SPEECH

RATE = 16000
HIGH_TONE_HZ = 5000.0  # the greeting's tone; the reply's is 150 Hz higher


def level_db(pcm: bytes) -> float:
    x = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").astype(np.float64)
    return 10 * math.log10(float(np.mean(x**2)) + 1e-9)


async def test_a_vonage_call_is_16_khz_from_the_tts_to_the_phone(script):
    timeline = Timeline.from_files([(2.0, SPEECH / "caller_02.wav")])
    vonage = VonageDialect()
    async with (FakeElevenLabs(api_key=API_KEY, seed=7, tone_hz=HIGH_TONE_HZ) as fake,
                serve(bridge_settings(fake, script)) as bridge):
        response = await answer(bridge, "vonage", uuid="aaaa-bbbb")
        [endpoint] = json.loads(response.text)[0]["endpoint"]
        phone = PhoneCall(local(stream_url_from_answer("vonage", response.text), bridge), caller=timeline,
                          duration=7.0, dialect=vonage, call_sid="aaaa-bbbb")
        report = await phone.run()
        released = await wait_for(lambda: fake.live_connections == 0, timeout=2.0)

    assert endpoint["content-type"] == "audio/l16;rate=16000", "the NCCO asks Vonage for 16 kHz"
    assert fake.connections[0].query["output_format"] == "pcm_16000", "the TTS is asked for 16 kHz"
    assert report.malformed == () and phone.log.warnings == [], "every frame was exactly 640 bytes"
    contexts = contexts_in_order(fake)
    first, second = contexts[0], contexts[-1]  # the greeting, and the reply heard (after any guess abandoned)
    assert fake.frequency_of(first) == HIGH_TONE_HZ

    # The greeting as the phone received it, up to the barge-in's clear: the 5 kHz tone, at full level.
    greeting = bytes(vonage.line[: vonage.clears[0]])
    assert len(greeting) >= RATE * 2 * 1.0, "over a second of greeting reached the phone before the clear"
    assert tone_share(greeting, HIGH_TONE_HZ, RATE) > 0.8, "the greeting's 5 kHz tone arrived intact"
    made = render_tone(HIGH_TONE_HZ, RATE, 0, len(greeting) // 2).tobytes()
    assert abs(level_db(greeting) - level_db(made)) < 1.0, "at the level the TTS made it"

    [barge] = report.barge_ins
    assert not barge.missed and barge.clear_at - barge.onset < 0.5, "the clear came within 500 ms"
    assert report.leaked_frames and all(n == 0 for n in report.leaked_frames), "nothing interrupted was heard"
    assert len([r for r in report.replies if r.reply_at is not None]) == 1, "the caller got one reply"
    assert second != first and fake.contexts(0)[second].text.startswith(" Sure"), "a fresh context"
    after = bytes(vonage.line[vonage.clears[-1] :])
    assert tone_share(after, fake.frequency_of(second), RATE) > 0.8, "the reply, at 5.15 kHz, intact"
    assert tone_share(after, HIGH_TONE_HZ, RATE) < 0.02, "and none of the interrupted greeting"
    assert released, "the TTS socket was closed within 2 s of the hang-up"


async def test_the_speech_to_text_hears_the_vonage_caller_at_16_khz(script):
    timeline = Timeline.from_files([(2.0, SPEECH / "caller_02.wav")])
    async with FakeElevenLabs(api_key=API_KEY, seed=7) as fake, \
            FakeDeepgram(api_key="dg-key", script=["can I move my appointment"]) as dg:
        settings = bridge_settings(fake, script, BRIDGE_STT="deepgram", DEEPGRAM_API_KEY="dg-key",
                                   DEEPGRAM_BASE_URL=dg.base_url)
        async with serve(settings) as bridge:
            response = await answer(bridge, "vonage", uuid="aaaa-bbbb")
            phone = PhoneCall(local(stream_url_from_answer("vonage", response.text), bridge), caller=timeline,
                              duration=6.0, dialect=VonageDialect(), call_sid="aaaa-bbbb")
            await phone.run()
            await wait_for(lambda: bridge.live_calls == 0, timeout=2.0)

    [stream] = dg.connections
    assert stream.query["sample_rate"] == "16000" and stream.query["encoding"] == "linear16"
    seconds = stream.audio_bytes / (RATE * 2)
    assert 4.0 < seconds <= 6.5, f"{seconds:.1f} s of 16 kHz audio for a 6 s call"
    assert [t for t in stream.of_type("Results") if t.get("is_final")], "the caller's words were transcribed"
