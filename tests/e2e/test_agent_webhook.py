"""The webhook agent on a whole call: the documented example webhook under uvicorn, transcription
by the local OpenAI-compatible stand-in (``stt = "openai"``), and the local ElevenLabs stand-in.
All servers are protocol-faithful local fakes started by the test."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.testing import webhook_example
from bridge.testing.fake_openai import FakeOpenAI
from bridge.tools.simulator import PhoneCall
from tests.e2e.conftest import bridge_settings, serve
from tests.e2e.test_agent_openai import caller, wait_for
from tests.units.test_agents_webhook import running

SECRET = "whsec-e2e-Lm8NtR4s"


@pytest.mark.parametrize("secret", [SECRET, "a-wrong-secret"])
async def test_a_call_answered_by_the_example_webhook(fake_tts, script: Path, monkeypatch, secret: str):
    monkeypatch.setattr(webhook_example, "SECRET", SECRET.encode())
    async with running(webhook_example.app) as hook, FakeOpenAI(transcribe=lambda pcm, rate: "Yes.") as stt:
        env = {"BRIDGE_AGENT": "webhook", "BRIDGE_AGENT_WEBHOOK_URL": f"{hook}/agent",
               "BRIDGE_AGENT_WEBHOOK_SECRET": secret, "BRIDGE_AGENT_STT": "openai",
               "OPENAI_BASE_URL": stt.base_url, "BRIDGE_AGENT_APOLOGY": "Sorry, try again."}
        async with serve(bridge_settings(fake_tts, script, **env)) as bridge:
            phone = PhoneCall(bridge.media_url, caller=caller((4.5, "caller_04.wav")), duration=7.5)
            report = await phone.run()
            await wait_for(lambda: bridge.live_calls == 0)

    texts = [" ".join(ctx.text.split()) for ctx in fake_tts.contexts(0).values()]
    if secret == SECRET:
        assert texts == ["Hello! This is the webhook agent. How can I help?",
                         "You said: Yes.. What else can I do for you?"]
    else:  # the webhook refuses the signature: the caller hears the apology, turn after turn
        assert texts == ["Sorry, try again.", "Sorry, try again."]
    assert [t.text for t in stt.transcriptions] == ["Yes."]
    assert report.greeting_latency is not None and all(r.reply_at is not None for r in report.replies)
