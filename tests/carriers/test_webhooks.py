"""Each carrier's webhook under real uvicorn: the right answer document, and with the carrier's
secret set, unsigned or wrongly signed requests refused (403), signed ones answered, and the media
socket opened only through the URL the answer named."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import time
from xml.etree import ElementTree

import httpx
import jwt
import pytest
from nacl.signing import SigningKey
from twilio.request_validator import RequestValidator
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from bridge.carriers.plivo.signature import compute_signature as plivo_signature
from bridge.tools.simulator.carriers import WEBHOOKS, stream_url_from_answer
from tests.e2e.conftest import bridge_settings, serve

TELNYX_KEY = SigningKey.generate()
SECRETS = {
    "signalwire": {"SIGNALWIRE_SIGNING_KEY": "PSK_signalwire-signing-key"},
    "telnyx": {"TELNYX_PUBLIC_KEY": base64.b64encode(bytes(TELNYX_KEY.verify_key)).decode()},
    "plivo": {"PLIVO_AUTH_TOKEN": "plivo-auth-token-0123456789"},
    "vonage": {"VONAGE_SIGNATURE_SECRET": "vonage-signature-secret-0123456789ab"},
    "exotel": {"EXOTEL_API_KEY": "exotel-key", "EXOTEL_API_TOKEN": "exotel-token-0123"},
}
FORM = {"CallSid": "CA1", "From": "+15550100", "To": "+15550199"}


def signed(carrier: str, url: str, *, wrong: bool = False) -> dict[str, str]:
    """The headers the carrier would send for the test request to ``url``."""
    secret = list(SECRETS[carrier].values())[-1] + ("x" if wrong else "")
    if carrier == "signalwire":
        return {"X-SignalWire-Signature": RequestValidator(secret).compute_signature(url, FORM)}
    if carrier == "telnyx":
        key = SigningKey.generate() if wrong else TELNYX_KEY
        stamp = str(int(time.time()))
        body = json.dumps(FORM)
        signature = key.sign(f"{stamp}|{body}".encode()).signature
        return {"telnyx-signature-ed25519": base64.b64encode(signature).decode(), "telnyx-timestamp": stamp}
    if carrier == "plivo":
        return {"X-Plivo-Signature-V3": plivo_signature(secret, "POST", url, FORM, "12345"),
                "X-Plivo-Signature-V3-Nonce": "12345"}
    if carrier == "vonage":
        claims = {"iat": int(time.time()), "jti": "1", "api_key": "k", "payload_hash": hashlib.sha256(b"").hexdigest()}
        return {"Authorization": "Bearer " + jwt.encode(claims, secret, algorithm="HS256")}
    key = SECRETS["exotel"]["EXOTEL_API_KEY"]
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:{secret}".encode()).decode()}


async def request(bridge, carrier: str, headers: dict[str, str] | None = None) -> httpx.Response:
    method, path = WEBHOOKS[carrier]
    async with httpx.AsyncClient() as http:
        if method == "GET":
            return await http.get(f"{bridge.http}{path}", headers=headers, params={"uuid": "u-1"})
        if carrier == "telnyx":
            return await http.post(f"{bridge.http}{path}", content=json.dumps(FORM),
                                   headers={**(headers or {}), "content-type": "application/json"})
        return await http.post(f"{bridge.http}{path}", data=FORM, headers=headers)


async def test_every_carrier_answers_its_own_document(fake_tts, script):
    async with serve(bridge_settings(fake_tts, script)) as bridge:
        docs = {c: await request(bridge, c) for c in WEBHOOKS if c != "twilio"}
    base = f"wss://127.0.0.1:{bridge.port}"
    for carrier, response in docs.items():
        assert response.status_code == 200, carrier
        assert stream_url_from_answer(carrier, response.text) == f"{base}/{carrier}/media", carrier
    sw = ElementTree.fromstring(docs["signalwire"].text)
    assert sw.find("./Connect/Stream") is not None
    tx = ElementTree.fromstring(docs["telnyx"].text).find("./Connect/Stream")
    assert tx is not None and tx.get("bidirectionalMode") == "rtp" and tx.get("bidirectionalCodec") == "PCMU"
    pv = ElementTree.fromstring(docs["plivo"].text).find("./Stream")
    assert pv is not None and pv.attrib == {"bidirectional": "true", "keepCallAlive": "true",
                                            "contentType": "audio/x-mulaw;rate=8000"}
    [connect_action] = docs["vonage"].json()
    [endpoint] = connect_action["endpoint"]
    assert connect_action["action"] == "connect" and endpoint["type"] == "websocket"
    assert endpoint["content-type"] == "audio/l16;rate=16000" and endpoint["headers"] == {"call_uuid": "u-1"}
    assert docs["exotel"].json() == {"url": f"{base}/exotel/media"}
    assert docs["vonage"].headers["content-type"].startswith("application/json")


@pytest.mark.parametrize("carrier", list(SECRETS))
async def test_signed_webhooks_and_media_sockets(carrier, fake_tts, script, caplog):
    settings = bridge_settings(fake_tts, script, **SECRETS[carrier])
    async with serve(settings) as bridge:
        _, path = WEBHOOKS[carrier]
        url = f"http://127.0.0.1:{bridge.port}{path}"
        with caplog.at_level(logging.WARNING, logger="bridge"):
            unsigned = await request(bridge, carrier)
            wrong = await request(bridge, carrier, signed(carrier, url, wrong=True))
        good = await request(bridge, carrier, signed(carrier, url))
        assert (unsigned.status_code, wrong.status_code, good.status_code) == (403, 403, 200)
        stream = stream_url_from_answer(carrier, good.text)
        assert stream.startswith(f"wss://127.0.0.1:{bridge.port}/{carrier}/media/"), "a token in the path"
        local = "ws://" + stream.removeprefix("wss://")
        with pytest.raises(InvalidStatus) as refused:
            async with connect(f"ws://127.0.0.1:{bridge.port}/{carrier}/media"):
                pass
        assert refused.value.response.status_code == 403
        with pytest.raises(InvalidStatus):
            async with connect(local[:-4] + "0000"):
                pass
        async with connect(local) as ws:
            await ws.close()
    logged = caplog.text
    assert "refused" in logged
    for secret in SECRETS[carrier].values():
        assert secret not in logged


async def test_exotel_static_url_with_basic_auth(fake_tts, script):
    """Exotel's documented alternative: a fixed wss:// URL with the key and token in it (Basic auth)."""
    settings = bridge_settings(fake_tts, script, **SECRETS["exotel"])
    async with serve(settings) as bridge:
        url = f"ws://127.0.0.1:{bridge.port}/exotel/media"
        async with connect(url, additional_headers=signed("exotel", url)) as ws:
            await ws.close()
        with pytest.raises(InvalidStatus):
            async with connect(url, additional_headers=signed("exotel", url, wrong=True)):
                pass
