"""The openai agent on a whole call: real uvicorn, real sockets, real webrtcvad on real speech.

Both cloud APIs are local, protocol-faithful stand-ins started by the tests: an OpenAI-compatible
server (``bridge.testing.fake_openai``: multipart transcription, chat completions streamed as SSE
with configurable delays, and it notices a client that goes away mid-stream) and the ElevenLabs
multi-context server (``bridge.testing.fake_elevenlabs``, which voices each context as its own tone
and sends character alignment because the bridge asks for ``sync_alignment=true``).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path

import pytest

from bridge.agents.memory import INTERRUPTED
from bridge.testing.fake_elevenlabs import FakeElevenLabs
from bridge.testing.fake_openai import EnvelopeMatcher, FakeOpenAI, Reply, pieces
from bridge.tools.simulator import PhoneCall, Timeline
from tests.e2e.conftest import API_KEY, bridge_settings, serve, tone_share
from tests.support import SPEECH, load_wav

GREETING = "Hello, thanks for calling."
SAID = {
    "caller_01.wav": "Hi, I'm calling about my appointment next week.",
    "caller_02.wav": "Sorry to interrupt, but that's the wrong address.",
    "caller_05.wav": "I'd like to change my delivery to Saturday afternoon.",
    "caller_07.wav": "Okay, thanks, goodbye.",
}
LONG = ("Of course, I can help with your appointment. I see you are booked for Tuesday at ten in the morning, "
        "with doctor Lee at the main clinic. Would you like to keep that time, or move it to another day?")
SORRY = "I'm sorry about that. What is the right address?"
MOVED = "Saturday afternoon works well. I have moved your delivery, and a text message will confirm it."
APOLOGY = "Sorry, one moment."
MS_PER_CHAR = 55.0
END_MS = 600  # the VAD's default silence before a turn ends
CANDIDATE_MS = 150  # the silence at which the agent starts on a tentative turn


def openai_env(api: FakeOpenAI, **extra: str) -> dict[str, str]:
    return {"BRIDGE_AGENT": "openai", "OPENAI_BASE_URL": api.base_url, "OPENAI_API_KEY": "sk-local-test",
            "BRIDGE_AGENT_GREETING": GREETING, "BRIDGE_AGENT_LLM_MODEL": "local-llm", **extra}


def matcher() -> EnvelopeMatcher:
    return EnvelopeMatcher({text: load_wav(name) for name, text in SAID.items()})


def caller(*placements: tuple[float, str]) -> Timeline:
    return Timeline.from_files([(t, SPEECH / name) for t, name in placements])


def tts_texts(fake: FakeElevenLabs) -> list[tuple[float, str, str]]:
    """(arrival time, context id, text) of every non-blank text the TTS received."""
    return [(t, m["context_id"], m["text"]) for t, m in fake.connections[0].messages
            if isinstance(m.get("text"), str) and m["text"].strip() and "context_id" in m]


def first_text_of(fake: FakeElevenLabs, needle: str) -> tuple[float, str]:
    """When the TTS got the first piece of the reply that starts with ``needle``, and its context."""
    contexts = fake.contexts(0)
    cid = next(c for c, ctx in contexts.items() if ctx.text.strip().startswith(needle))
    at = next(t for t, c, _ in tts_texts(fake) if c == cid)
    return at, cid


def heard_seconds(phone: PhoneCall, frequency: float) -> float:
    """How long the caller heard the tone of one context (20 ms windows)."""
    pcm = phone.heard
    windows = [pcm[i : i + 320] for i in range(0, len(pcm) - 320, 320)]
    return sum(0.02 for w in windows if tone_share(w, frequency) > 0.5)


def own_delay(reply: Reply) -> float:
    """The fake's configured wait until the piece that completes the reply's first word (the next
    piece starts with a space: until then the bridge cannot know the word is whole)."""
    completing = next(n for n, p in enumerate(pieces(reply.text)) if n and p[0].isspace())
    return reply.first_delay + reply.chunk_delay * completing


async def wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


@pytest.fixture
async def fake_tts():
    async with FakeElevenLabs(api_key=API_KEY, seed=11, ms_per_char=MS_PER_CHAR) as fake:
        yield fake


async def test_three_turns_with_a_barge_in_keep_only_what_the_caller_heard(fake_tts, script: Path):
    replies = [Reply(LONG, 0.1, 0.1), Reply(SORRY, 0.05, 0.02), Reply(MOVED, 0.05, 0.08)]
    async with (FakeOpenAI(replies, transcribe=matcher(), api_key="sk-local-test") as api,
                serve(bridge_settings(fake_tts, script, **openai_env(api))) as bridge):
        timeline = caller((2.0, "caller_01.wav"), (8.2, "caller_02.wav"), (14.6, "caller_05.wav"))
        phone = PhoneCall(bridge.media_url, caller=timeline, duration=21.5)
        report = await phone.run()
        t0 = time.monotonic() - phone.now()
        await wait_for(lambda: bridge.live_calls == 0)
    print("\n" + report.timeline_text(marks=False))

    # Three turns, each transcribed from the speech the caller really made, one barge-in in the middle.
    # (A guess started at a pause between the caller's words is transcribed too: its part of the
    # speech matches no whole sentence here, so it asks the model nothing.)
    assert [t.text for t in api.transcriptions if t.text] == [SAID["caller_01.wav"], SAID["caller_02.wav"],
                                                             SAID["caller_05.wav"]]
    assert all(t.sample_rate == 8000 and t.fields["model"] == "whisper-1" for t in api.transcriptions)
    [barge] = report.barge_ins
    assert not barge.missed
    first, _, third = api.chats
    assert all(c.headers["authorization"] == "Bearer sk-local-test" and c.body["stream"] is True for c in api.chats)

    # The interrupted request was really aborted: the model server saw the client go away mid-reply.
    assert first.disconnected_at is not None and first.finished_at is None
    assert first.disconnected_at - (t0 + barge.clear_at) < 0.3

    # The history the model got on the third turn: only what the caller heard of the interrupted reply.
    messages = third.messages
    assert messages[0]["role"] == "system" and "[interrupted by the caller]" in messages[0]["content"]
    roles = [m["role"] for m in messages[1:]]
    assert roles == ["assistant", "user", "assistant", "user", "assistant", "user"]
    greeting, said1, cut, said2, sorry, said3 = (m["content"] for m in messages[1:])
    assert (greeting, said1, said2, sorry, said3) == (GREETING, SAID["caller_01.wav"], SAID["caller_02.wav"],
                                                      SORRY, SAID["caller_05.wav"])
    assert cut.endswith(INTERRUPTED)
    heard_part = cut.removesuffix(INTERRUPTED).strip()
    assert heard_part and LONG.startswith(heard_part) and len(heard_part) < len(LONG) / 2, cut
    assert "Tuesday" not in cut, "the second sentence was never heard"
    # ...and it matches what the phone actually played of that reply, to about a word.
    _, cid = first_text_of(fake_tts, "Of course")
    heard_chars = heard_seconds(phone, fake_tts.frequency_of(cid)) * 1000 / MS_PER_CHAR
    print(f"heard: {heard_part!r} ({len(heard_part)} chars); the phone played {heard_chars:.1f} chars' worth")
    assert abs(len(heard_part) - heard_chars) <= 10, (heard_part, heard_chars)

    # The first sentence reached the TTS, flushed, long before the model had finished writing the reply.
    _, cid3 = first_text_of(fake_tts, "Saturday")
    mine = [(t, m) for t, m in fake_tts.connections[0].messages if m.get("context_id") == cid3]
    upto = next(n for n, (_, m) in enumerate(mine) if m.get("flush"))
    flushed_at = mine[upto][0]
    assert "".join(m.get("text", "") for _, m in mine[: upto + 1]).strip() == "Saturday afternoon works well."
    assert third.finished_at is not None and flushed_at < third.finished_at - 1.0

    # Time from the caller's end of speech to the first text at the TTS, net of the fake's own delays.
    net = [first_text_of(fake_tts, r.text[:8])[0] - (t0 + rep.end) - own_delay(r)
           for r, rep in zip(replies, report.replies, strict=False)]
    print(f"\nspeech end -> first text at TTS, net of model delays (ms): {[round(n * 1000) for n in net]}")
    for r, rep, stt, chat in zip(replies, report.replies, api.transcriptions, api.chats, strict=False):
        steps = [t0 + rep.end, stt.received_at, stt.answered_at, chat.received_at, chat.first_chunk_at,
                 first_text_of(fake_tts, r.text[:8])[0]]
        print("  end->stt request, stt, ->chat request, first piece, ->tts (ms):",
              [round((b - a) * 1000) for a, b in itertools.pairwise(steps)])
    # The agent starts at the candidate end (a pause of CANDIDATE_MS), its reply held until the turn
    # is sure: the text reaches the TTS before the VAD's END_MS, never before the pause.
    assert all(CANDIDATE_MS / 1000 <= n < END_MS / 1000 + 0.3 for n in net), net


async def test_a_slow_or_failing_model_makes_the_caller_hear_the_apology(fake_tts, script: Path):
    replies = [Reply("Too late to matter.", first_delay=4.0), Reply("", status=500), Reply("Goodbye for now.")]
    env = {"BRIDGE_AGENT_TIMEOUT_S": "1.0", "BRIDGE_AGENT_APOLOGY": APOLOGY}
    async with (FakeOpenAI(replies, transcribe=lambda pcm, rate: "Yes.", api_key="sk-local-test") as api,
                serve(bridge_settings(fake_tts, script, **openai_env(api, **env))) as bridge):
        timeline = caller((1.8, "caller_04.wav"), (5.5, "caller_04.wav"), (8.3, "caller_04.wav"))
        phone = PhoneCall(bridge.media_url, caller=timeline, duration=11.0)
        report = await phone.run()
        await wait_for(lambda: bridge.live_calls == 0)

    texts = [ctx.text.strip() for ctx in fake_tts.contexts(0).values()]
    assert texts == [GREETING, APOLOGY, APOLOGY, "Goodbye for now."]
    slow = api.chats[0]
    assert slow.disconnected_at is not None and slow.first_chunk_at is None, "the timed-out request was aborted"
    apology_at, _ = first_text_of(fake_tts, "Sorry")
    # The 1 s timeout runs from the turn start; transcription comes first, so allow it some of that time.
    assert 0.8 < apology_at - slow.received_at < 1.5, "the apology comes at the configured timeout"
    # The caller heard every apology and the last reply: the call went on.
    assert [r.reply_at is not None for r in report.replies] == [True, True, True]
    assert report.barge_ins == () and (report.server_closed is None or report.server_closed > 10.5)
    # The model's memory holds the apology as said, since the caller heard it.
    assert api.chats[2].messages[-2] == {"role": "assistant", "content": APOLOGY}


async def test_keys_reach_the_agent_and_the_end_key_ends_the_turn_at_once(fake_tts, script: Path):
    async with (FakeOpenAI([Reply("Thanks, I have your code.")], api_key="sk-local-test") as api,
                serve(bridge_settings(fake_tts, script, **openai_env(api))) as bridge):
        phone = PhoneCall(bridge.media_url, caller=Timeline([]), duration=4.0)
        await phone.start()
        await asyncio.sleep(2.0)
        for digit in "42#":
            await phone.press(digit)
        pressed = time.monotonic()
        await api.wait_until(lambda: len(api.chats) == 1, timeout=2.0)
        reaction = api.chats[0].received_at - pressed
        report = await phone.wait()
        await wait_for(lambda: bridge.live_calls == 0)

    assert reaction < 0.2, "the turn began at the key, not after a silence timeout"
    assert api.transcriptions == [], "no speech, nothing to transcribe"
    assert api.chats[0].messages[-1] == {"role": "user", "content": "[keypad: 4 2 #]"}
    assert any(ctx.text.strip() == "Thanks, I have your code." for ctx in fake_tts.contexts(0).values())
    assert report.greeting_latency is not None
