"""The Twilio side of call control, in-process (httpx's ASGI transport, no socket to the app): what
``/twilio/after`` answers once a stream ends, outbound calls through ``POST /calls`` against
``bridge.testing.fake_twilio`` (a protocol-faithful stand-in for Twilio's REST API on 127.0.0.1),
and voicemail mode when machine detection reports a machine."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from bridge.config import load_settings
from bridge.server.app import create_app
from bridge.server.call_control import Outcome
from bridge.testing.fake_twilio import FakeTwilio

ADMIN = "admin-Qm4x8Zr2Lw9V"


def settings(**env: str) -> object:
    base = {"BRIDGE_TTS": "local", "PUBLIC_URL": "https://voice.example.com", "BRIDGE_ADMIN_TOKEN": ADMIN,
            "BRIDGE_TRANSFER_NUMBERS": "+15550001111"}
    return load_settings(base | env, dotenv=False)


@pytest.fixture
async def twilio() -> AsyncIterator[FakeTwilio]:
    async with FakeTwilio() as api:
        yield api


def client_for(app: object) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bridge")  # type: ignore[arg-type]


async def test_after_the_stream_twilio_is_told_to_hang_up_or_dial_an_allowed_number() -> None:
    app = create_app(settings())  # type: ignore[arg-type]
    outcomes = app.state.bridge.outcomes
    outcomes.record("CA-transfer", Outcome("transfer", "+15550001111"))
    outcomes.record("CA-premium", Outcome("transfer", "+19005550123"))
    async with client_for(app) as http:
        hangup = await http.post("/twilio/after", data={"CallSid": "CA-unknown"})
        dial = await http.post("/twilio/after", data={"CallSid": "CA-transfer"})
        premium = await http.post("/twilio/after", data={"CallSid": "CA-premium"})
    assert "<Hangup/>" in hangup.text
    assert "<Dial>+15550001111</Dial>" in dial.text
    assert "<Dial>" not in premium.text and "<Hangup/>" in premium.text, "only allow-listed numbers are dialled"


async def test_the_webhook_names_the_action_and_sends_a_machine_to_voicemail_mode() -> None:
    app = create_app(settings())  # type: ignore[arg-type]
    async with client_for(app) as http:
        human = await http.post("/twilio/voice", data={"CallSid": "CA1", "AnsweredBy": "human"})
        machine = await http.post("/twilio/voice", data={"CallSid": "CA2", "AnsweredBy": "machine_end_beep"})
    assert '<Connect action="https://voice.example.com/twilio/after">' in human.text
    assert "voicemail" not in human.text
    assert '<Parameter name="mode" value="voicemail"/>' in machine.text


async def test_post_calls_places_a_call_through_twilio(twilio: FakeTwilio) -> None:
    env = {"TWILIO_ACCOUNT_SID": twilio.account_sid, "TWILIO_AUTH_TOKEN": twilio.auth_token,
           "TWILIO_FROM_NUMBER": "+15557654321", "TWILIO_API_BASE_URL": twilio.base_url}
    app = create_app(settings(**env))  # type: ignore[arg-type]
    async with client_for(app) as http:
        placed = await http.post("/calls", json={"to": "+15551234567", "machine_detection": True},
                                 headers={"Authorization": f"Bearer {ADMIN}"})
    assert placed.status_code == 201 and placed.json()["sid"].startswith("CA")
    [call] = twilio.calls
    assert call.form["To"] == "+15551234567" and call.form["From"] == "+15557654321"
    assert call.form["Url"] == "https://voice.example.com/twilio/voice", "the answered call runs the same agent"
    assert call.form["MachineDetection"] == "DetectMessageEnd"
    assert call.form["AsyncAmd"] == "true", "the verdict comes later, so the callee hears no silence"
    assert call.form["AsyncAmdStatusCallback"] == "https://voice.example.com/twilio/amd"


class _Live:
    def __init__(self, call_sid: str) -> None:
        self.call_sid, self.switched = call_sid, 0

    def voicemail(self) -> None:
        self.switched += 1


async def test_the_async_machine_verdict_reaches_only_its_own_live_call() -> None:
    app = create_app(settings())  # type: ignore[arg-type]
    ours, other = _Live("CA-ours"), _Live("CA-other")
    app.state.bridge.calls.update({ours, other})
    async with client_for(app) as http:
        human = await http.post("/twilio/amd", data={"CallSid": "CA-ours", "AnsweredBy": "human"})
        started = await http.post("/twilio/amd", data={"CallSid": "CA-ours", "AnsweredBy": "machine_start"})
        beep = await http.post("/twilio/amd", data={"CallSid": "CA-ours", "AnsweredBy": "machine_end_beep"})
        gone = await http.post("/twilio/amd", data={"CallSid": "CA-gone", "AnsweredBy": "machine_end_beep"})
    assert {r.status_code for r in (human, started, beep, gone)} == {204}
    assert (ours.switched, other.switched) == (1, 0)  # only once the beep says the message may be left


async def test_post_calls_needs_the_admin_token_and_a_real_number(twilio: FakeTwilio) -> None:
    env = {"TWILIO_ACCOUNT_SID": twilio.account_sid, "TWILIO_AUTH_TOKEN": twilio.auth_token,
           "TWILIO_FROM_NUMBER": "+15557654321", "TWILIO_API_BASE_URL": twilio.base_url}
    app = create_app(settings(**env))  # type: ignore[arg-type]
    async with client_for(app) as http:
        none = await http.post("/calls", json={"to": "+15551234567"})
        wrong = await http.post("/calls", json={"to": "+15551234567"}, headers={"Authorization": "Bearer nope"})
        bad = await http.post("/calls", json={"to": "555-1234"}, headers={"Authorization": f"Bearer {ADMIN}"})
    assert none.status_code == 401 and wrong.status_code == 401
    assert bad.status_code == 400 and "E.164" in bad.json()["error"]
    assert not twilio.calls, "nothing was dialled"


async def test_twilio_refusing_the_call_is_a_clear_error_without_credentials(twilio: FakeTwilio) -> None:
    env = {"TWILIO_ACCOUNT_SID": twilio.account_sid, "TWILIO_AUTH_TOKEN": "wrong-token-Zk3",
           "TWILIO_FROM_NUMBER": "+15557654321", "TWILIO_API_BASE_URL": twilio.base_url}
    app = create_app(settings(**env))  # type: ignore[arg-type]
    async with client_for(app) as http:
        refused = await http.post("/calls", json={"to": "+15551234567"}, headers={"Authorization": f"Bearer {ADMIN}"})
    assert refused.status_code == 502 and "20003" in refused.json()["error"]
    assert "wrong-token" not in refused.text


async def test_bridge_dial_places_a_call_and_refuses_a_bad_number(
    twilio: FakeTwilio, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: object
) -> None:
    import asyncio

    from bridge.tools.cli import main

    monkeypatch.chdir(tmp_path)  # type: ignore[arg-type]
    for name, value in {"TWILIO_ACCOUNT_SID": twilio.account_sid, "TWILIO_AUTH_TOKEN": twilio.auth_token,
                        "TWILIO_FROM_NUMBER": "+15557654321", "TWILIO_API_BASE_URL": twilio.base_url,
                        "PUBLIC_URL": "https://voice.example.com", "BRIDGE_TTS": "local"}.items():
        monkeypatch.setenv(name, value)
    ok = await asyncio.to_thread(main, ["dial", "+15551234567", "--detect-machine"])
    out = capsys.readouterr()
    bad = await asyncio.to_thread(main, ["dial", "0800-FLOWERS"])
    err = capsys.readouterr().err
    assert ok == 0 and "call CA" in out.out and twilio.calls[0].form["MachineDetection"] == "DetectMessageEnd"
    assert bad == 2 and "E.164" in err and len(twilio.calls) == 1
    assert twilio.auth_token not in out.out + out.err + err
