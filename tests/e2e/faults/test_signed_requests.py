"""Signed requests: with TWILIO_AUTH_TOKEN set, only what Twilio signed is served.

twilio-python's ``RequestValidator`` (a test-only dependency) is the oracle: it signs the requests
the tests send, and for every request the test checks the bridge's verdict against its own. The
TTS is the local protocol-faithful fake, so a refused request must also open no TTS session.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import httpx
import pytest
from twilio.request_validator import RequestValidator
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from bridge.testing.fake_elevenlabs import FakeElevenLabs
from bridge.tools.simulator import PhoneCall, Timeline
from tests.e2e.conftest import API_KEY, RunningBridge, bridge_settings, serve
from tests.e2e.faults.conftest import LogLines, no_leaks

TOKEN = "f00dfeedc0ffee0123456789abcdef01"
ORACLE = RequestValidator(TOKEN)
FORM = {"CallSid": "CA0123456789abcdef0123456789abcdef", "From": "+14155550100", "To": "+14155550199",
        "AccountSid": "AC0123456789abcdef0123456789abcdef", "CallStatus": "ringing"}


@contextlib.asynccontextmanager
async def running(script: Path, **env: str) -> AsyncIterator[tuple[FakeElevenLabs, RunningBridge]]:
    # A webhook answered opens its call's TTS socket; with no stream to take it, it closes after
    # BRIDGE_WARM_TTS_S, well within what `no_leaks` waits.
    env = {"BRIDGE_WARM_TTS_S": "1", **env}
    async with FakeElevenLabs(api_key=API_KEY, seed=12) as fake:  # noqa: SIM117  (fake is needed below)
        async with serve(bridge_settings(fake, script, TWILIO_AUTH_TOKEN=TOKEN, **env)) as bridge:
            async with no_leaks(bridge, fake):
                yield fake, bridge


async def post_voice(bridge: RunningBridge, signed_url: str | None, form: Mapping[str, str] = FORM,
                     headers: Mapping[str, str] | None = None, path: str = "/twilio/voice"
                     ) -> tuple[httpx.Response, str | None]:
    """POST the webhook; the signature (if any) is the oracle's for ``signed_url`` and ``FORM``."""
    sent = dict(headers or {})
    signature = None if signed_url is None else ORACLE.compute_signature(signed_url, dict(FORM))
    if signature is not None:
        sent["X-Twilio-Signature"] = signature
    async with httpx.AsyncClient() as http:
        return await http.post(f"{bridge.http}{path}", data=dict(form), headers=sent), signature


def no_secret_in(log: LogLines, signatures: list[str]) -> None:
    text = "\n".join(r.getMessage() for r in log.records)
    assert TOKEN not in text
    assert not [s for s in signatures if s in text], "no signature is logged"


async def test_the_voice_webhook_needs_twilios_signature_over_the_public_url(script, bridge_log):
    async with running(script) as (_, bridge):
        local = f"http://127.0.0.1:{bridge.port}/twilio/voice"
        ngrok = "https://abc.ngrok.app/twilio/voice"
        proxied = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "abc.ngrok.app"}
        cases = [  # what, URL signed, form sent, headers, path, URL Twilio requested, expected verdict
            ("signed", local, FORM, None, "/twilio/voice", local, True),
            ("with a query string", local + "?lang=en", FORM, None, "/twilio/voice?lang=en", local + "?lang=en", True),
            ("unsigned", None, FORM, None, "/twilio/voice", local, False),
            ("a parameter changed", local, {**FORM, "From": "+14155550666"}, None, "/twilio/voice", local, False),
            ("a parameter added", local, {**FORM, "Digits": "1"}, None, "/twilio/voice", local, False),
            ("behind a proxy", ngrok, FORM, proxied, "/twilio/voice", ngrok, True),
            ("signed for the proxy, sent direct", ngrok, FORM, None, "/twilio/voice", local, False),
        ]
        signatures = []
        for what, signed, form, headers, path, requested, expected in cases:
            response, signature = await post_voice(bridge, signed, form, headers, path)
            oracle = signature is not None and ORACLE.validate(requested, dict(form), signature)
            assert oracle == expected, f"{what}: the test's expectation disagrees with the oracle"
            assert response.status_code == (200 if expected else 403), what
            assert ("<Stream url=" in response.text) == expected
            signatures += [signature] if signature else []
    refusals = bridge_log.matching("refused /twilio/voice")
    assert len(refusals) == 4 and all("X-Twilio-Signature" in line for line in refusals), refusals
    no_secret_in(bridge_log, signatures)


async def test_public_url_is_what_the_signature_covers(script):
    async with running(script, PUBLIC_URL="https://bridge.example.com") as (_, bridge):
        good, _ = await post_voice(bridge, "https://bridge.example.com/twilio/voice")
        local, _ = await post_voice(bridge, f"http://127.0.0.1:{bridge.port}/twilio/voice")
    assert good.status_code == 200 and 'url="wss://bridge.example.com/twilio/media"' in good.text
    assert local.status_code == 403


@pytest.mark.parametrize("public_url", [None, "https://bridge.example.com"])
async def test_the_media_upgrade_needs_twilios_signature_over_its_wss_url(script, bridge_log, public_url):
    env = {"PUBLIC_URL": public_url} if public_url else {}
    async with running(script, **env) as (fake, bridge):
        host = "bridge.example.com" if public_url else f"127.0.0.1:{bridge.port}"
        wss = f"wss://{host}/twilio/media"
        phone = PhoneCall(bridge.media_url, caller=Timeline([]), duration=1.5, auth_token=TOKEN, signed_url=wss)
        assert ORACLE.validate(wss, {}, phone.headers["X-Twilio-Signature"]), "signed as Twilio signs"
        report = await phone.run()
        refused = []
        bad = [RequestValidator("0" * 32).compute_signature(wss, {}), ORACLE.compute_signature(bridge.media_url, {})]
        for what, headers in [
            ("unsigned", {}),
            ("wrong token", {"X-Twilio-Signature": bad[0]}),
            ("signed for ws://", {"X-Twilio-Signature": bad[1]}),
        ]:
            with pytest.raises(InvalidStatus) as refusal:
                async with connect(bridge.media_url, additional_headers=headers):
                    pass
            refused.append((what, refusal.value.response.status_code))
    print(f"\n[media upgrade, PUBLIC_URL={public_url}] signed: greeting after "
          f"{report.greeting_latency * 1000:.0f} ms; refused: {refused}")
    assert report.greeting_latency is not None, "the signed call is served"
    assert [code for _, code in refused] == [403, 403, 403]
    assert len(fake.connections) == 1, "a refused upgrade opens no TTS session"
    assert len(bridge_log.matching("refused /twilio/media")) == 3
    no_secret_in(bridge_log, [phone.headers["X-Twilio-Signature"], *bad])


async def test_without_a_token_the_server_starts_with_one_loud_warning(script, bridge_log):
    async with FakeElevenLabs(api_key=API_KEY) as fake, serve(bridge_settings(fake, script)) as bridge, \
            httpx.AsyncClient() as http:
        unsigned = await http.post(f"{bridge.http}/twilio/voice", data=FORM)
    warnings = [r for r in bridge_log.records if "TWILIO_AUTH_TOKEN is not set" in r.getMessage()]
    assert [r.levelno for r in warnings] == [logging.WARNING]
    assert unsigned.status_code == 200, "without a token nothing is checked"
