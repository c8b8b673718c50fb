"""The bridge ends, hands over and winds down calls itself: real uvicorn, the Twilio-protocol phone
simulator, the local ElevenLabs and OpenAI stand-ins, and ``/twilio/after`` asked as Twilio would."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import httpx

from bridge.testing.fake_elevenlabs import FakeElevenLabs
from bridge.testing.fake_openai import EnvelopeMatcher, FakeOpenAI, Reply
from bridge.tools.simulator import PhoneCall, Timeline
from tests.e2e.conftest import API_KEY, RunningBridge, bridge_settings, serve, tone_share, window, write_script
from tests.support import SPEECH, load_wav

ALLOWED = "+15551234567"


async def after(bridge: RunningBridge, call_sid: str) -> str:
    """What Twilio gets when it asks the ``<Connect action>`` URL once the stream has closed."""
    async with httpx.AsyncClient() as client:
        response = await client.post(bridge.http + "/twilio/after", data={"CallSid": call_sid})
    assert response.status_code == 200
    return response.text


async def wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def texts(fake: FakeElevenLabs, conn: int = 0) -> list[str]:
    return [ctx.text.strip() for ctx in fake.contexts(conn).values()]


async def call(bridge: RunningBridge, duration: float, timeline: Timeline | None = None, **kw) -> PhoneCall:
    phone = PhoneCall(bridge.media_url, caller=timeline or Timeline([]), duration=duration, **kw)
    return phone


async def test_the_agent_says_goodbye_and_the_bridge_hangs_up_after_it(fake_tts, tmp_path: Path):
    script = write_script(tmp_path / "agent.txt", ["Thanks for calling the demo line. Goodbye! [hangup]"])
    async with serve(bridge_settings(fake_tts, script)) as bridge:
        phone = await call(bridge, duration=15.0)
        report = await phone.run()
        await wait_for(lambda: bridge.live_calls == 0)
        twiml = await after(bridge, phone.ids.call_sid)
    print("\n" + report.timeline_text(marks=False))
    assert texts(fake_tts) == ["Thanks for calling the demo line. Goodbye!"]
    assert report.server_closed is not None, "the bridge never hung up"
    heard_until = report.greeting_latency + report.agent_seconds
    assert report.agent_seconds > 2.0  # the whole goodbye was played
    assert heard_until <= report.server_closed <= heard_until + 1.5
    assert report.marks_unechoed == 0  # every mark, the last one too, came back before the close
    await wait_for(lambda: fake_tts.connections[0].closed_code is not None)  # the TTS socket was released
    assert "<Hangup" in twiml and "<Dial" not in twiml


async def test_a_transfer_by_tool_call_closes_the_stream_and_dials_the_allowed_number(fake_tts, script: Path):
    said = {"caller_01.wav": "Can I speak to a person please?"}
    replies = [Reply("Of course, connecting you now.", 0.05, 0.02, tool_calls=(("transfer_call", {"to": ALLOWED}),))]
    matcher = EnvelopeMatcher({text: load_wav(name) for name, text in said.items()})
    async with FakeOpenAI(replies, transcribe=matcher, api_key="sk-local-test") as api:
        env = {"BRIDGE_AGENT": "openai", "OPENAI_BASE_URL": api.base_url, "OPENAI_API_KEY": "sk-local-test",
               "BRIDGE_AGENT_GREETING": "Hello.", "BRIDGE_AGENT_LLM_MODEL": "local-llm",
               "BRIDGE_TRANSFER_NUMBERS": ALLOWED}
        async with serve(bridge_settings(fake_tts, script, **env)) as bridge:
            timeline = Timeline.from_files([(1.5, SPEECH / "caller_01.wav")])
            phone = await call(bridge, duration=20.0, timeline=timeline)
            report = await phone.run()
            await wait_for(lambda: bridge.live_calls == 0)
            twiml = await after(bridge, phone.ids.call_sid)
    print("\n" + report.timeline_text(marks=False))
    assert "Of course, connecting you now." in texts(fake_tts)
    assert report.server_closed is not None and report.server_closed < 15.0
    assert f"<Dial>{ALLOWED}</Dial>" in twiml.replace("\n", "").replace(" ", "") or ALLOWED in twiml
    assert "<Dial" in twiml


async def test_a_transfer_off_the_allow_list_ends_nothing(fake_tts, tmp_path: Path):
    script = write_script(tmp_path / "agent.txt", ["Hello there.", "Let me transfer you. [transfer +15550000000]",
                                                   "Anything else?"])
    async with serve(bridge_settings(fake_tts, script, BRIDGE_TRANSFER_NUMBERS=ALLOWED)) as bridge:
        timeline = Timeline.from_files([(1.5, SPEECH / "caller_01.wav"), (9.0, SPEECH / "caller_05.wav")])
        phone = await call(bridge, duration=16.0, timeline=timeline)
        report = await phone.run()
        await wait_for(lambda: bridge.live_calls == 0)
        twiml = await after(bridge, phone.ids.call_sid)
    assert report.server_closed is None  # the call went on to its end, as the caller chose
    assert texts(fake_tts)[:3] == ["Hello there.", "Let me transfer you.", "Anything else?"]
    assert "<Dial" not in twiml


async def test_a_silent_caller_is_prompted_then_the_bridge_says_goodbye_and_hangs_up(fake_tts, tmp_path: Path):
    script = write_script(tmp_path / "agent.txt", ["Hello, how can I help?", "Sure."])
    env = {"BRIDGE_IDLE_REPROMPT_S": "2", "BRIDGE_IDLE_HANGUP_S": "4"}
    async with serve(bridge_settings(fake_tts, script, **env)) as bridge:
        phone = await call(bridge, duration=30.0)
        report = await phone.run()
        await wait_for(lambda: bridge.live_calls == 0)
        twiml = await after(bridge, phone.ids.call_sid)
    print("\n" + report.timeline_text(marks=False))
    settings = bridge.settings.agent
    assert texts(fake_tts) == ["Hello, how can I help?", settings.idle_prompt, settings.goodbye]
    assert report.server_closed is not None and report.server_closed < 25.0
    assert "<Hangup" in twiml


async def test_voicemail_mode_leaves_the_message_once_and_hangs_up(fake_tts, script: Path):
    async with serve(bridge_settings(fake_tts, script)) as bridge:
        phone = await call(bridge, duration=30.0, custom_parameters={"mode": "voicemail"})
        report = await phone.run()
        await wait_for(lambda: bridge.live_calls == 0)
    assert texts(fake_tts) == [bridge.settings.agent.voicemail_message.strip()]
    assert report.server_closed is not None
    assert report.greeting_latency + report.agent_seconds <= report.server_closed


async def test_the_async_machine_verdict_switches_a_live_call_to_voicemail(fake_tts, script: Path):
    async with serve(bridge_settings(fake_tts, script)) as bridge:
        phone = await call(bridge, duration=40.0)
        await phone.start()
        await asyncio.sleep(1.0)
        async with httpx.AsyncClient() as client:
            response = await client.post(bridge.http + "/twilio/amd",
                                         data={"CallSid": phone.ids.call_sid, "AnsweredBy": "machine_end_beep"})
        assert response.status_code == 204
        report = await phone.wait()
        await wait_for(lambda: bridge.live_calls == 0)
    assert texts(fake_tts)[-1] == bridge.settings.agent.voicemail_message.strip()
    assert report.server_closed is not None and report.server_closed < 30.0


async def test_the_drain_says_goodbye_then_ends_the_call_by_its_deadline(fake_tts, script: Path):
    async with serve(bridge_settings(fake_tts, script)) as bridge:
        drainer = bridge.app.state.drainer
        drainer.timeout_s = 2.0
        phone = await call(bridge, duration=40.0)
        await phone.start()
        await asyncio.sleep(3.0)
        began = phone.now()
        await drainer.drain()
        report = await phone.wait()
    print("\n" + report.timeline_text(marks=False))
    greeting, goodbye = list(fake_tts.contexts(0))
    assert fake_tts.contexts(0)[goodbye].text.strip() == bridge.settings.server.drain_goodbye.strip()
    assert report.server_closed is not None
    deadline = began + 2.0
    assert deadline < report.server_closed <= deadline + 1.0, "none outlives the deadline by more than 1 s"
    # The greeting went on until the deadline, then the caller heard the goodbye before the hang-up.
    share = tone_share(window(phone.heard, began + 0.2, deadline - 0.2), fake_tts.frequency_of(greeting))
    assert share > 0.8
    heard_goodbye = window(phone.heard, deadline + 0.2, report.server_closed - 0.05)
    assert tone_share(heard_goodbye, fake_tts.frequency_of(goodbye)) > 0.5


async def test_a_refused_elevenlabs_key_fails_over_to_the_offline_voice(tmp_path: Path):
    script = write_script(tmp_path / "agent.txt", ["Hello from the bridge.", "Sure."])
    async with (FakeElevenLabs(api_key="sk-another-key-entirely") as fake,
                serve(bridge_settings(fake, script)) as bridge):
        timeline = Timeline.from_files([(4.0, SPEECH / "caller_01.wav")])
        phone = await call(bridge, duration=12.0, timeline=timeline)
        report = await phone.run()
        await wait_for(lambda: bridge.live_calls == 0)
        async with httpx.AsyncClient() as client:
            metrics = (await client.get(bridge.http + "/metrics")).text
    print("\n" + report.timeline_text(marks=False))
    assert report.server_closed is None  # the call was not ended
    assert report.greeting_latency is not None and len(report.replies) >= 1  # greeting and reply heard
    assert 'bridge_tts_failovers_total{from_voice="elevenlabs",to_voice="offline"}' in metrics
    assert API_KEY  # the bridge was given a key the fake refuses


async def test_keys_after_an_idle_prompt_reach_the_model_which_ends_the_call(fake_tts, script: Path):
    replies = [Reply("Are you still there?", 0.05, 0.02),
               Reply("Thanks, option seven it is. Goodbye!", 0.05, 0.02, tool_calls=(("end_call", {}),))]
    async with FakeOpenAI(replies, api_key="sk-local-test") as api:
        env = {"BRIDGE_AGENT": "openai", "OPENAI_BASE_URL": api.base_url, "OPENAI_API_KEY": "sk-local-test",
               "BRIDGE_AGENT_GREETING": "Hello.", "BRIDGE_AGENT_LLM_MODEL": "local-llm",
               "BRIDGE_IDLE_REPROMPT_S": "1.5", "BRIDGE_IDLE_HANGUP_S": "20"}
        async with serve(bridge_settings(fake_tts, script, **env)) as bridge:
            phone = await call(bridge, duration=20.0)
            await phone.start()
            await api.wait_until(lambda: len(api.chats) == 1, timeout=6.0)  # the idle turn
            await wait_for(lambda: "Are you still there?" in texts(fake_tts), timeout=3.0)
            await asyncio.sleep(2.0)
            for digit in "7#":
                await phone.press(digit)
            report = await phone.wait()
            await wait_for(lambda: bridge.live_calls == 0)
            twiml = await after(bridge, phone.ids.call_sid)
    print("\n" + report.timeline_text(marks=False))
    idle_chat, keys_chat = api.chats
    assert idle_chat.messages[-1]["content"] == "[the caller has said nothing for a while]"
    assert keys_chat.messages[-1] == {"role": "user", "content": "[keypad: 7 #]"}
    assert texts(fake_tts)[-1] == "Thanks, option seven it is. Goodbye!"
    assert report.server_closed is not None and report.server_closed < 15.0
    assert "<Hangup" in twiml


class _Lines(logging.Handler):
    """The bridge's log lines (its logging setup does not propagate to pytest's capture)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


async def test_quota_running_out_mid_call_moves_the_call_to_the_offline_voice(tmp_path: Path):
    lines = _Lines()
    logging.getLogger("bridge").addHandler(lines)
    script = write_script(tmp_path / "agent.txt", ["Hello from the bridge.", "Sure, I can help with that."])
    async with (FakeElevenLabs(api_key=API_KEY) as fake, serve(bridge_settings(fake, script)) as bridge):
        timeline = Timeline.from_files([(4.0, SPEECH / "caller_01.wav")])
        phone = await call(bridge, duration=12.0, timeline=timeline)
        await phone.start()
        await wait_for(lambda: bool(fake.connections) and phone.now() > 2.5, timeout=5.0)
        fake.error_on_connect = {"error": "quota_exceeded", "message": "You have no character quota left."}
        await fake.drop_all(1011, "server restart")  # the reconnect then hears the quota error
        report = await phone.wait()
        await wait_for(lambda: bridge.live_calls == 0)
    print("\n" + report.timeline_text(marks=False))
    assert report.server_closed is None  # the call was not ended
    [reply] = report.replies
    assert reply.reply_at is not None, "the reply after the failover was heard"
    logging.getLogger("bridge").removeHandler(lines)
    logged = "\n".join(lines.lines)
    assert "turn 0 voiced by elevenlabs" in logged and "turn 1 voiced by offline" in logged
    assert "going on with offline" in logged
