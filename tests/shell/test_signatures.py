"""With ``TWILIO_AUTH_TOKEN`` set, only requests Twilio signed are served, in-process.

twilio-python's ``RequestValidator`` (a test-only dependency) is the oracle: it computes the
signature Twilio would send for the webhook's URL and form, and for the media stream's ``wss://``
URL. Anything else (no signature, a wrong one, one for other parameters or another URL) gets
HTTP 403, and a refused media upgrade opens no TTS session.
"""

from __future__ import annotations

import pytest
from starlette.websockets import WebSocketDisconnect
from twilio.request_validator import RequestValidator

from tests.shell.conftest import Phone, build

TOKEN = "f00dfeedc0ffee0123456789abcdef01"
ORACLE = RequestValidator(TOKEN)
FORM = {"CallSid": "CA0123456789abcdef0123456789abcdef", "From": "+14155550100", "To": "+14155550199",
        "AccountSid": "AC0123456789abcdef0123456789abcdef", "CallStatus": "ringing"}
VOICE_URL = "http://testserver/twilio/voice"  # what the TestClient's requests are addressed to
MEDIA_URL = "wss://testserver/twilio/media"  # Twilio streams only to wss://, as the TwiML says


@pytest.fixture
def signed(tmp_path, client_for):
    shell = build(tmp_path, ["Hello, thanks for calling."], TWILIO_AUTH_TOKEN=TOKEN)
    return shell, client_for(shell)


@pytest.mark.parametrize(("signature", "form"), [
    (None, FORM),
    ("", FORM),
    ("not-a-signature", FORM),
    (ORACLE.compute_signature(VOICE_URL, {**FORM, "CallStatus": "completed"}), FORM),  # other parameters
    (ORACLE.compute_signature("http://attacker.example/twilio/voice", FORM), FORM),  # another URL
    (RequestValidator("another-account-token").compute_signature(VOICE_URL, FORM), FORM),
], ids=["none", "empty", "garbage", "other-params", "other-url", "other-token"])
def test_the_webhook_refuses_what_twilio_did_not_sign(signed, signature, form):
    _, client = signed
    headers = {} if signature is None else {"X-Twilio-Signature": signature}
    response = client.post("/twilio/voice", data=form, headers=headers)
    assert response.status_code == 403
    assert "<Stream" not in response.text


def test_the_webhook_serves_what_the_oracle_signed(signed):
    _, client = signed
    signature = ORACLE.compute_signature(VOICE_URL, FORM)
    assert ORACLE.validate(VOICE_URL, FORM, signature)
    response = client.post("/twilio/voice", data=FORM, headers={"X-Twilio-Signature": signature})
    assert response.status_code == 200
    assert '<Stream url="wss://testserver/twilio/media"' in response.text


@pytest.mark.parametrize("signature", [
    None,
    "not-a-signature",
    ORACLE.compute_signature("ws://testserver/twilio/media", {}),  # the scheme Twilio never uses
    ORACLE.compute_signature(VOICE_URL, FORM),  # the webhook's, replayed on the stream
], ids=["none", "garbage", "ws-scheme", "replayed-webhook"])
def test_the_media_upgrade_is_refused_without_twilios_signature(signed, signature):
    shell, client = signed
    headers = {} if signature is None else {"X-Twilio-Signature": signature}
    with pytest.raises(WebSocketDisconnect) as refused, client.websocket_connect("/twilio/media", headers=headers):
        pass
    # Closed before accept: the ASGI server answers the upgrade with HTTP 403 (uvicorn does).
    assert type(refused.value) is WebSocketDisconnect and refused.value.code == 1008
    assert shell.tts == [] and shell.agents == [], "a refused stream opens no TTS session and no agent"
    assert client.get("/healthz").json()["calls"] == 0


def test_a_signed_media_upgrade_is_served(signed):
    shell, client = signed
    headers = {"X-Twilio-Signature": ORACLE.compute_signature(MEDIA_URL, {})}
    with client.websocket_connect("/twilio/media", headers=headers) as ws:
        phone = Phone(ws)
        phone.start()
        greeted = phone.listen(3.0, until=lambda: bool(phone.media_pcm()))
        assert phone.hang_up() == 1000
    assert greeted and len(shell.tts) == 1
