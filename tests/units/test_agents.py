"""The agent layer without a network: heard-text memory, the conversation wrapper, the wire
formats of the openai and webhook agents, dotted-path loading, and how settings build an agent."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridge.agents.base import AgentError, Message, Turn
from bridge.agents.conversation import IDLE_NOTE, ConversationAgent
from bridge.agents.loader import load_factory
from bridge.agents.memory import INTERRUPTED, History, caller_text
from bridge.agents.openai import OpenAIAgent, SseParser, chat_messages, delta_text, wav_bytes
from bridge.agents.scripted import ScriptedAgent
from bridge.agents.webhook import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookAgent,
    sign,
    text_of_line,
    turn_body,
    verify_signature,
)
from bridge.config import ConfigError, load_settings
from bridge.server.factories import call_settings, make_agent

# ---------------------------------------------------------------------------- memory


def test_an_interrupted_reply_is_remembered_as_heard_with_a_marker() -> None:
    history = History()
    history.agent("Hello there.", interrupted=False)
    history.caller("I need to move my appointment.")
    history.agent("Of course, I can", interrupted=True)
    assert history.messages[-1] == Message("assistant", f"Of course, I can {INTERRUPTED}")
    assert "[interrupted by the caller]" in INTERRUPTED


def test_a_reply_heard_not_at_all_leaves_no_trace_and_the_callers_words_join() -> None:
    history = History()
    history.caller("I want to")
    history.agent("", interrupted=True)  # cut off before a word was heard
    history.caller("change my address")
    assert history.messages == (Message("user", "I want to change my address"),)


def test_history_keeps_roles_alternating_when_trimmed() -> None:
    history = History(max_messages=3)
    for n in range(5):
        history.caller(f"question {n}")
        history.agent(f"answer {n}", interrupted=False)
    assert len(history.messages) <= 3 and history.messages[0].role == "user"
    assert history.messages[-1] == Message("assistant", "answer 4")


@pytest.mark.parametrize(("transcript", "digits", "text"), [
    ("Yes, please.", "", "Yes, please."),
    ("My code is", "42#", "My code is [keypad: 4 2 #]"),
    (None, "1", "[keypad: 1]"),
    ("  ", "", ""),
])
def test_caller_text(transcript: str | None, digits: str, text: str) -> None:
    assert caller_text(transcript, digits) == text


# ---------------------------------------------------------------------------- the conversation layer


class Recorder:
    """An inner agent that records the turns it gets and streams a fixed reply, slowly if asked."""

    def __init__(self, reply: str = "Sure. Anything else?", delay: float = 0.0) -> None:
        self.turns: list[Turn] = []
        self.heard_calls: list[tuple[int, str, bool]] = []
        self.text, self.delay = reply, delay
        self.closed_streams = 0

    async def reply(self, turn: Turn) -> AsyncIterator[str]:
        self.turns.append(turn)
        try:
            for word in self.text.split(" "):
                await asyncio.sleep(self.delay)
                yield word + " "
        finally:
            self.closed_streams += 1

    def heard(self, turn: int, text: str, interrupted: bool) -> None:
        self.heard_calls.append((turn, text, interrupted))


class Words:
    """A transcriber that answers from a list, and can be made to wait (to cancel it midway)."""

    def __init__(self, *answers: str, wait: asyncio.Event | None = None) -> None:
        self.answers, self.wait, self.audio, self.rates = list(answers), wait, [], list[int]()

    async def transcribe(self, pcm: bytes, rate: int = 8000) -> str:
        self.audio.append(pcm)
        self.rates.append(rate)
        if self.wait is not None:
            await self.wait.wait()
        return self.answers.pop(0)


async def collect(agent: ConversationAgent, turn: Turn) -> str:
    return "".join([text async for text in agent.reply(turn)])


async def test_the_inner_agent_gets_transcript_digits_and_the_heard_history() -> None:
    inner = Recorder()
    agent = ConversationAgent(inner, transcriber=Words("I'd like a table."), greeting="Hi! How can I help?")
    assert await collect(agent, Turn(0)) == "Hi! How can I help?"
    assert inner.turns == [], "a configured greeting needs no agent"
    agent.heard(0, "Hi! How can I help?", False)
    await collect(agent, Turn(1, b"\x01\x00" * 800, "7"))
    [turn] = inner.turns
    assert turn.transcript == "I'd like a table." and turn.digits == "7" and turn.utterance == b"\x01\x00" * 800
    assert turn.history == (Message("assistant", "Hi! How can I help?"),
                            Message("user", "I'd like a table. [keypad: 7]"))
    agent.heard(1, "Sure.", True)
    assert agent.history.messages[-1] == Message("assistant", f"Sure. {INTERRUPTED}")
    assert inner.heard_calls[-1] == (1, "Sure.", True)


async def test_a_16_khz_turn_is_transcribed_at_16_khz_and_reaches_the_agent_so() -> None:
    words, inner = Words("Hello."), Recorder()
    agent = ConversationAgent(inner, transcriber=words)
    await collect(agent, Turn(1, b"\x01\x00" * 3200, rate=16000))
    assert words.rates == [16000] and words.audio == [b"\x01\x00" * 3200]
    assert inner.turns[0].rate == 16000


async def test_speech_cut_off_before_its_transcript_is_carried_into_the_next_turn() -> None:
    gate = asyncio.Event()
    words = Words("I want to change my address", wait=gate)
    inner = Recorder()
    agent = ConversationAgent(inner, transcriber=words)
    first = asyncio.create_task(collect(agent, Turn(1, b"AA", "1")))
    await asyncio.sleep(0.01)
    first.cancel()  # the caller went on talking: barge-in while transcribing
    with pytest.raises(asyncio.CancelledError):
        await first
    gate.set()
    await collect(agent, Turn(2, b"BB"))
    assert words.audio[-1] == b"AABB", "both pieces of speech are transcribed together"
    assert inner.turns[-1].digits == "1"
    assert inner.turns[-1].history == (Message("user", "I want to change my address [keypad: 1]"),)


async def test_speech_already_answered_by_the_apology_is_not_carried() -> None:
    words = Words("first", "second", wait=asyncio.Event())
    agent = ConversationAgent(Recorder(), transcriber=words)
    slow = asyncio.create_task(collect(agent, Turn(1, b"AA")))
    await asyncio.sleep(0.01)
    slow.cancel()  # the session's timeout: the caller then hears the apology
    with pytest.raises(asyncio.CancelledError):
        await slow
    agent.heard(1, "Sorry, could you say that again?", False)
    words.wait.set()  # type: ignore[union-attr]
    await collect(agent, Turn(2, b"BB"))
    assert words.audio[-1] == b"BB", "the caller repeats themselves; the old audio would double it"


async def test_a_turn_with_no_words_gets_no_reply() -> None:
    inner = Recorder()
    agent = ConversationAgent(inner, transcriber=Words(""))
    assert await collect(agent, Turn(1, b"\x00\x00" * 100)) == ""
    assert inner.turns == [] and agent.history.messages == ()


async def test_closing_the_reply_early_closes_the_inner_stream_at_once() -> None:
    inner = Recorder("one two three four", delay=0.0)
    agent = ConversationAgent(inner)
    stream = agent.reply(Turn(1))
    assert await anext(stream) == "one "
    await stream.aclose()  # what the session does on barge-in
    assert inner.closed_streams == 1


# ---------------------------------------------------------------------------- openai wire format


def test_sse_parser_and_chunks() -> None:
    parser = SseParser()
    lines = [": keep-alive", "", 'data: {"choices":[{"delta":{"role":"assistant","content":""}}]}', "",
             'data: {"choices":[{"delta":{"content":"Hel"}}]}', "", "data: [DONE]", ""]
    datas = [d for line in lines if (d := parser.feed(line)) is not None]
    assert [delta_text(d) for d in datas] == ["", "Hel", None]
    assert delta_text('{"choices":[]}') == ""
    with pytest.raises(AgentError):
        delta_text("not json")
    with pytest.raises(AgentError, match="server_error"):
        delta_text('{"error":{"message":"boom sk-secret","type":"server_error"}}')


def test_chat_messages_explain_the_marker_to_the_model() -> None:
    messages = chat_messages("Be brief.", (Message("user", "Hi"),))
    assert messages[0]["role"] == "system" and messages[0]["content"].startswith("Be brief.")
    assert "[interrupted by the caller]" in messages[0]["content"]
    assert messages[1:] == [{"role": "user", "content": "Hi"}]


def test_wav_bytes_is_a_mono_8k_wav() -> None:
    data = wav_bytes(b"\x01\x02" * 80)
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE" and len(data) == 44 + 160
    assert int.from_bytes(data[24:28], "little") == 8000


# ---------------------------------------------------------------------------- webhook wire format


def test_signature_is_hmac_sha256_over_timestamp_dot_body() -> None:
    body = b'{"turn":1}'
    expected = hmac.new(b"s3cret", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign("s3cret", "1700000000", body) == f"sha256={expected}"
    headers = {TIMESTAMP_HEADER: "1700000000", SIGNATURE_HEADER: f"sha256={expected}"}
    assert verify_signature("s3cret", headers, body, now=1700000100)
    assert not verify_signature("s3cret", headers, body + b" ", now=1700000100)
    assert not verify_signature("other", headers, body, now=1700000100)
    assert not verify_signature("s3cret", headers, body, now=1700009999), "an old request is refused"


def test_turn_body_carries_the_turn_and_audio_only_when_asked() -> None:
    turn = Turn(3, b"\x01\x00", "9", "hello", (Message("user", "hello"),))
    body = turn_body("c1", turn, audio=False)
    assert body == {"conversation": "c1", "turn": 3, "transcript": "hello", "digits": "9",
                    "history": [{"role": "user", "content": "hello"}]}
    assert turn_body("c1", turn, audio=True)["audio"] == {"encoding": "pcm_s16le", "sample_rate": 8000,
                                                          "base64": "AQA="}
    json.dumps(body)


def test_ndjson_lines() -> None:
    assert text_of_line('"Hello. "') == "Hello. "
    assert text_of_line('{"text": "Hi"}') == "Hi"
    assert text_of_line("  ") == ""
    with pytest.raises(AgentError):
        text_of_line("[1]")


# ---------------------------------------------------------------------------- loading and settings


def plugin_factory(settings: object) -> Recorder:
    """Used by the dotted-path tests below: ``tests.units.test_agents:plugin_factory``."""
    plugin_factory.got = settings  # type: ignore[attr-defined]
    return Recorder("From the plugin.")


def test_load_factory_names_what_is_wrong() -> None:
    assert load_factory("tests.units.test_agents:plugin_factory") is plugin_factory
    for spec, why in [("tests.nope:f", "cannot import"), ("tests.units.test_agents:nope", "no attribute"),
                      ("tests.units.test_agents:INTERRUPTED", "not callable"), ("no-colon", "form")]:
        with pytest.raises(ValueError, match=why):
            load_factory(spec)


def settings(**env: str):
    return load_settings(env, config_path=Path(__file__).resolve().parents[2] / "config" / "bridge.toml",
                         dotenv=False)


async def test_make_agent_builds_each_kind_behind_the_conversation_layer() -> None:
    scripted = make_agent(settings())
    assert isinstance(scripted, ConversationAgent) and isinstance(scripted.inner, ScriptedAgent)
    assert scripted.transcriber is None

    openai = make_agent(settings(BRIDGE_AGENT="openai", OPENAI_BASE_URL="http://127.0.0.1:1/v1",
                                 BRIDGE_AGENT_GREETING="Hi."))
    assert isinstance(openai, ConversationAgent) and isinstance(openai.inner, OpenAIAgent)
    assert openai.transcriber is not None and openai.greeting == "Hi."
    await openai.aclose()

    hook = make_agent(settings(BRIDGE_AGENT="webhook", BRIDGE_AGENT_WEBHOOK_URL="http://127.0.0.1:1/agent"))
    assert isinstance(hook, ConversationAgent) and isinstance(hook.inner, WebhookAgent)
    assert hook.transcriber is None

    loaded = settings(BRIDGE_AGENT="tests.units.test_agents:plugin_factory", BRIDGE_AGENT_STT="openai",
                      OPENAI_BASE_URL="http://127.0.0.1:1/v1")
    plugin = make_agent(loaded)
    assert isinstance(plugin, ConversationAgent) and isinstance(plugin.inner, Recorder)
    assert plugin_factory.got is loaded and plugin.transcriber is not None  # type: ignore[attr-defined]
    await plugin.aclose()


def test_call_settings_carry_apology_end_key_and_timeout() -> None:
    cs = call_settings(settings(BRIDGE_AGENT_APOLOGY="One moment.", BRIDGE_AGENT_TIMEOUT_S="3"))
    assert (cs.apology, cs.turn_end_digit, cs.agent_timeout_s) == ("One moment.", "#", 3.0)
    assert call_settings(settings(BRIDGE_AGENT_TURN_END_DIGIT="off")).turn_end_digit == ""


def test_settings_that_agents_need_together() -> None:
    with pytest.raises(ConfigError, match="webhook_url"):
        settings(BRIDGE_AGENT="webhook")
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        settings(BRIDGE_AGENT="openai")
    assert settings(BRIDGE_AGENT="openai", OPENAI_BASE_URL="http://localhost:11434/v1").agent.kind == "openai"


def test_describe_shows_no_secret_and_no_webhook_path() -> None:
    s = settings(BRIDGE_AGENT="webhook", BRIDGE_AGENT_WEBHOOK_URL="https://hooks.example.com/t0ken/agent",
                 BRIDGE_AGENT_WEBHOOK_SECRET="Zq9Xj7Wv3Kp2Lm8NtR4s", OPENAI_API_KEY="Hb6Yc1Dg5Fe0Ja3Kd7Qw")
    text = "\n".join(s.describe()) + repr(s)
    assert "hooks.example.com" in text and "signed" in text
    for secret in ("t0ken", "Zq9Xj7", "Hb6Yc1"):
        assert secret not in text


async def test_an_idle_turn_notes_the_silence_and_the_scripted_agent_prompts() -> None:
    agent = ConversationAgent(ScriptedAgent(["Hello.", "Fine."], delay_s=0, idle_prompt="Still there?"))
    said = [t async for t in agent.reply(Turn(1, idle=True)) if isinstance(t, str)]
    assert "".join(said) == "Still there?"
    assert agent.history.messages[-1].content == IDLE_NOTE
