"""Turn-taking end to end: the held speculative reply, the judged end of turn, live transcription.

Real uvicorn, the simulated phone (``bridge.tools.simulator``) playing real speech, the fake
ElevenLabs (each context voiced as its own tone), and an agent that records every turn it is
given, so a test sees both what the caller heard and what the agent was told.
"""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import AsyncIterator
from typing import Any

from bridge.agents.base import Agent, Turn
from bridge.agents.conversation import ConversationAgent
from bridge.config import Settings
from bridge.testing.fake_deepgram import FakeDeepgram
from bridge.testing.fake_elevenlabs import FakeElevenLabs
from bridge.tools.simulator import PhoneCall, Timeline
from tests.e2e.conftest import API_KEY, bridge_settings, serve
from tests.support import SPEECH, load_wav


class Recorder:
    """Answers every turn at once, and remembers what it was told."""

    def __init__(self) -> None:
        self.turns: list[Turn] = []
        self.settled: list[tuple[str, int]] = []
        self.heard_turns: list[int] = []

    async def reply(self, turn: Turn) -> AsyncIterator[str]:
        self.turns.append(turn)
        yield "Got it. "
        await asyncio.sleep(0)

    def heard(self, turn: int, text: str, interrupted: bool) -> None:
        self.heard_turns.append(turn)

    def confirm(self, turn: int) -> None:
        self.settled.append(("confirm", turn))

    def abandon(self, turn: int) -> None:
        self.settled.append(("abandon", turn))


def clip_s(name: str) -> float:
    return len(load_wav(name)) / 16000


async def call(settings: Settings, placements: list[tuple[float, str]], duration: float,
               agent: Recorder | None = None) -> tuple[Any, ConversationAgent | None]:
    made: list[ConversationAgent] = []

    def make_agent(_: Settings) -> Agent:
        wrapper = ConversationAgent(agent)  # type: ignore[arg-type]
        made.append(wrapper)
        return wrapper

    kwargs = {"make_agent": make_agent} if agent is not None else {}
    async with serve(settings, **kwargs) as bridge:
        timeline = Timeline.from_files([(t, SPEECH / name) for t, name in placements])
        report = await PhoneCall(bridge.media_url, caller=timeline, duration=duration).run()
        for _ in range(250):
            if bridge.live_calls == 0:
                break
            await asyncio.sleep(0.02)
    return report, (made[0] if made else None)


async def test_a_mid_sentence_pause_is_never_talked_over_and_the_reply_answers_every_word(fake_tts, script):
    agent = Recorder()
    first_end = 2.0 + clip_s("caller_04.wav")
    second = first_end + 0.45  # "Yes." ... 450 ms ... "Okay, thanks, goodbye."
    report, conversation = await call(bridge_settings(fake_tts, script),
                                      [(2.0, "caller_04.wav"), (second, "caller_07.wav")], 7.0, agent)

    first, last = report.replies
    assert first.reply_at is None, "nothing of the agent was heard in the pause"
    assert last.reply_at is not None
    assert report.barge_ins == ()
    confirmed = [turn for kind, turn in agent.settled if kind == "confirm"]
    assert len(confirmed) == 1, agent.settled
    [answered] = [t for t in agent.turns if t.number == confirmed[0]]
    whole = (clip_s("caller_04.wav") + 0.45 + clip_s("caller_07.wav")) * 16000
    assert len(answered.utterance) >= whole, "the reply was asked for with the whole sentence"
    assert all(kind == "abandon" for kind, _ in agent.settled[:-1])
    assert set(agent.heard_turns).isdisjoint(turn for kind, turn in agent.settled if kind == "abandon")
    assert conversation is not None
    assert [m.role for m in conversation.history.messages].count("user") <= 1, "no caller words twice"
    assert fake_tts.connections[0].max_open <= 5
    assert fake_tts.connections[0].violations == []


async def test_scripted_replies_are_heard_soon_after_the_caller_stops(fake_tts, tmp_path):
    from tests.e2e.conftest import write_script

    short = write_script(tmp_path / "s.txt", ["Hi.", "One.", "Two.", "Three.", "Four."])
    placements = [(2.0, "caller_04.wav"), (4.0, "caller_07.wav"), (7.0, "caller_03.wav"), (11.0, "caller_04.wav")]
    report, _ = await call(bridge_settings(fake_tts, short), placements, 13.0)
    latencies = [r.latency for r in report.replies]
    assert all(lat is not None for lat in latencies), latencies
    print(f"\nspeech end -> reply heard (ms): {[round(lat * 1000) for lat in latencies]}")  # type: ignore[operator]
    assert statistics.median(latencies) <= 0.75, latencies  # type: ignore[type-var]


async def test_the_greeting_is_heard_within_a_frame_or_two_of_the_voices_own_first_audio(script):
    async with FakeElevenLabs(api_key=API_KEY, seed=5, ttfb=0.12) as fake:
        report, _ = await call(bridge_settings(fake, script), [], 2.0)
    assert report.greeting_latency is not None
    print(f"\ngreeting latency at a 120 ms TTS first audio: {report.greeting_latency * 1000:.0f} ms")
    assert report.greeting_latency <= 0.12 + 0.1, report.greeting_latency


async def test_live_transcription_gives_the_turn_its_words(fake_tts, script):
    agent = Recorder()
    async with FakeDeepgram(api_key="dg-key", script=["okay thanks goodbye"]) as dg:
        settings = bridge_settings(fake_tts, script, BRIDGE_STT="deepgram", DEEPGRAM_API_KEY="dg-key",
                                   DEEPGRAM_BASE_URL=dg.base_url)
        _, conversation = await call(settings, [(1.5, "caller_07.wav")], 5.0, agent)
    assert dg.connections, "the caller's audio streamed to the transcriber"
    confirmed = [turn for kind, turn in agent.settled if kind == "confirm"]
    assert confirmed
    [answered] = [t for t in agent.turns if t.number == confirmed[-1]]
    assert answered.transcript is not None and "goodbye" in answered.transcript
    assert conversation is not None
    said = [m.content for m in conversation.history.messages if m.role == "user"]
    assert said == ["okay thanks goodbye"], "recorded once, from the live transcript"
