"""The tools people run, per carrier: `bridge call --carrier NAME`, `bridge tunnel`'s console steps,
and the carrier settings' checks."""

from __future__ import annotations

import asyncio

import pytest

from bridge.config import ConfigError, load_settings
from bridge.server import guard
from bridge.tools import cli
from bridge.tools.tunnel import console_steps
from tests.e2e.conftest import bridge_settings, serve


@pytest.mark.parametrize("carrier", ["plivo", "vonage"])
async def test_bridge_call_dials_as_the_carrier(carrier, fake_tts, script, tmp_path, capsys):
    async with serve(bridge_settings(fake_tts, script)) as bridge:
        argv = ["call", bridge.http, "--carrier", carrier, "--duration", "4", "--out", str(tmp_path / "c.wav")]
        code = await asyncio.to_thread(cli.main, argv)
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"dialing {bridge.http}/{'vonage/answer' if carrier == 'vonage' else 'plivo/voice'} as {carrier}" in out
    assert f"media stream ws://127.0.0.1:{bridge.port}/{carrier}/media" in out
    assert "greeting latency" in out and (tmp_path / "c.wav").stat().st_size > 44


@pytest.mark.parametrize(("carrier", "path"), [("twilio", "/twilio/voice"), ("signalwire", "/signalwire/voice"),
                                               ("telnyx", "/telnyx/voice"), ("plivo", "/plivo/voice"),
                                               ("vonage", "/vonage/answer"), ("exotel", "/exotel/voice")])
def test_tunnel_prints_the_configured_carriers_webhook(carrier, path):
    steps = "\n".join(console_steps("https://abc.ngrok.app", carrier))
    assert f"https://abc.ngrok.app{path}" in steps


@pytest.mark.parametrize(("env", "value"), [("EXOTEL_ALLOWED_IPS", "10.0.0.0/8, not-an-ip"),
                                            ("TELNYX_PUBLIC_KEY", "short"), ("VONAGE_RATE", "44100"),
                                            ("BRIDGE_CARRIER", "skype"), ("PLIVO_AUTH_TOKEN", "has space")])
def test_bad_carrier_settings_stop_start_up_in_one_line_without_secrets(env, value):
    with pytest.raises(ConfigError) as error:
        load_settings({env: value}, dotenv=False)
    assert env in str(error.value) and "\n" not in str(error.value)
    if env == "PLIVO_AUTH_TOKEN":
        assert value not in str(error.value)


def test_secrets_never_show_in_the_settings_repr():
    settings = load_settings({"PLIVO_AUTH_TOKEN": "plivo-token-xyz", "VONAGE_SIGNATURE_SECRET": "vonage-secret-xyz",
                              "SIGNALWIRE_SIGNING_KEY": "PSK_sw-xyz", "EXOTEL_API_TOKEN": "exotel-xyz"}, dotenv=False)
    shown = repr(settings)
    assert not any(s in shown for s in ("plivo-token-xyz", "vonage-secret-xyz", "PSK_sw-xyz", "exotel-xyz"))


def test_media_tokens_expire_and_belong_to_one_carrier():
    settings = load_settings({"PLIVO_AUTH_TOKEN": "plivo-token-xyz"}, dotenv=False)
    token = guard.media_token(settings, "plivo", 1000.0)
    assert guard._token_ok(settings, "plivo", token, 1000.0)
    assert not guard._token_ok(settings, "plivo", token, 1000.0 + guard.MEDIA_TOKEN_TTL_S + 1)
    assert not guard._token_ok(settings, "vonage", token, 1000.0)
    assert not guard._token_ok(settings, "plivo", token.replace(".", ".0"), 1000.0)
