"""Each carrier's request signature, proven against that carrier's official SDK as the oracle.

Telnyx: ``telnyx`` (``client.webhooks.unwrap``) with keys made by PyNaCl; Plivo: ``plivo``
(``validate_v3_signature``); Vonage: ``vonage-jwt`` (``verify_signature``); SignalWire: its SDK pins
an old twilio-python, so twilio-python's ``RequestValidator`` with a SignalWire key, and the vector
from SignalWire's own SDK tests for JSON webhooks; Exotel: HTTP Basic as its applet sends it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time

import jwt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey
from plivo.utils.signature_v3 import validate_v3_signature
from telnyx import Telnyx
from twilio.request_validator import RequestValidator
from vonage_jwt.verify_jwt import verify_signature

from bridge.carriers.exotel import signature as exotel
from bridge.carriers.plivo import signature as plivo
from bridge.carriers.signalwire import signature as signalwire
from bridge.carriers.telnyx import signature as telnyx
from bridge.carriers.vonage import signature as vonage

text = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="&=%#?+"), max_size=12)
params = st.dictionaries(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghij", min_size=1, max_size=10), text,
                         max_size=6)


# ------------------------------------------------------------------ Telnyx

def telnyx_request(body: str, stamp: int, key: SigningKey) -> dict[str, str]:
    signature = key.sign(f"{stamp}|{body}".encode()).signature
    return {"telnyx-signature-ed25519": base64.b64encode(signature).decode(), "telnyx-timestamp": str(stamp)}


def sdk_accepts_telnyx(body: str, headers: dict[str, str], public: str) -> bool:
    client = Telnyx(api_key="KEY-test", public_key=public)
    try:
        client.webhooks.unwrap(body, headers=headers, key=public)
    except ValueError:
        return False
    return True


@settings(max_examples=25, deadline=None)
@given(data=st.text(max_size=200), tamper=st.booleans(), age=st.sampled_from([0, 100, 290, 310, 10_000]))
def test_telnyx_ed25519_agrees_with_the_sdk(data, tamper, age):
    key = SigningKey.generate()
    public = base64.b64encode(bytes(key.verify_key)).decode()
    now = int(time.time())
    body = json.dumps({"data": data})  # the SDK parses what it verified as JSON
    headers = telnyx_request(body, now - age, key)
    received = json.dumps({"data": data + "x"}) if tamper else body
    expected = not tamper and age <= 300
    assert sdk_accepts_telnyx(received, headers, public) == expected
    assert telnyx.is_valid_signature(telnyx.public_key(public), headers, received.encode(), now) == expected


def test_telnyx_refuses_a_missing_or_foreign_signature():
    key, other = SigningKey.generate(), SigningKey.generate()
    public = telnyx.public_key(base64.b64encode(bytes(key.verify_key)).decode())
    now = int(time.time())
    assert not telnyx.is_valid_signature(public, {}, b"{}", now)
    assert not telnyx.is_valid_signature(public, telnyx_request("{}", now, other), b"{}", now)
    bad_stamp = {**telnyx_request("{}", now, key), "telnyx-timestamp": "x"}
    assert not telnyx.is_valid_signature(public, bad_stamp, b"{}", now)
    with pytest.raises(ValueError):
        telnyx.public_key("not base64!")


# ------------------------------------------------------------------ Plivo

@settings(max_examples=80, deadline=None)
@given(method=st.sampled_from(["GET", "POST"]), form=params, query=params,
       nonce=st.text(alphabet="0123456789", min_size=1, max_size=20), token=text.filter(bool))
def test_plivo_v3_agrees_with_the_sdk(method, form, query, nonce, token):
    query_string = "&".join(f"{k}={v}" for k, v in query.items())
    url = "https://bridge.example.com/plivo/voice" + (f"?{query_string}" if query else "")
    ours = plivo.compute_signature(token, method, url, form, nonce)
    assert validate_v3_signature(method, url, nonce, token, ours, dict(form))
    assert plivo.is_valid_signature(token, method, url, form, nonce, f"other,{ours}")
    assert not plivo.is_valid_signature(token + "x", method, url, form, nonce, ours)
    assert not validate_v3_signature(method, url, nonce, token + "x", ours, dict(form))


def test_plivo_refuses_missing_headers():
    assert not plivo.is_valid_signature("token", "POST", "https://x/plivo/voice", {}, None, "sig")
    assert not plivo.is_valid_signature("token", "POST", "https://x/plivo/voice", {}, "123", None)


# ------------------------------------------------------------------ Vonage

def vonage_token(secret: str, body: bytes, **claims: object) -> str:
    payload = {"iat": int(time.time()), "jti": "a7a0bde4", "iss": "Vonage", "api_key": "abcd1234",
               "application_id": "aaaaaaaa-bbbb-cccc-dddd-0123456789ab",
               "payload_hash": hashlib.sha256(body).hexdigest(), **claims}
    return jwt.encode(payload, secret, algorithm="HS256")


@settings(max_examples=25, deadline=None)
@given(suffix=text, body=st.binary(max_size=200), wrong=st.booleans())
def test_vonage_jwt_agrees_with_the_sdk(suffix, body, wrong):
    secret = "0123456789abcdef0123456789abcdef" + suffix  # Vonage's secrets are 32+ characters
    token = vonage_token(secret + "x" if wrong else secret, body)
    assert verify_signature(token, secret) == (not wrong)
    assert vonage.is_valid_token(secret, f"Bearer {token}", body or None) == (not wrong)


def test_vonage_checks_the_body_against_payload_hash():
    secret = "signature-secret-of-32-characters"
    token = vonage_token(secret, b'{"uuid": "1"}')
    assert vonage.is_valid_token(secret, f"Bearer {token}", b'{"uuid": "1"}')
    assert not vonage.is_valid_token(secret, f"Bearer {token}", b'{"uuid": "2"}')
    assert not vonage.is_valid_token(secret, token, None), "Bearer is required"
    assert not vonage.is_valid_token(secret, None, None)


# ------------------------------------------------------------------ SignalWire

@settings(max_examples=50, deadline=None)
@given(form=params, key=text.filter(bool))
def test_signalwire_form_signature_is_twilios_with_the_signing_key(form, key):
    url = "https://bridge.example.com/signalwire/voice"
    expected = RequestValidator("PSK_" + key).compute_signature(url, form)
    assert signalwire.is_valid_signature("PSK_" + key, url, form, expected)
    assert not signalwire.is_valid_signature("PSK_" + key + "x", url, form, expected)


def test_signalwire_json_signature_matches_the_sdk_vector():
    # From signalwire-python's tests/test_request_validator.py (test_should_validate_no_compatibility).
    url = "https://81f2-2-45-18-191.ngrok-free.app/"
    key = "PSK_7TruNcSNTxp4zNrykMj4EPzF"
    body = ('{"call":{"call_id":"b5d63b2e-f75b-4dc8-b6d4-269b635f96c0","node_id":"fa3570ae-f8bd-42c2-83f4-9950d906c91b'
            '@us-west","segment_id":"b5d63b2e-f75b-4dc8-b6d4-269b635f96c0","call_state":"created","direction":"inbound",'
            '"type":"phone","from":"+12135877632","to":"+12089806814","from_number":"+12135877632","to_number":'
            '"+12089806814","project_id":"4b7ae78a-d02e-4889-a63b-08b156d5916e","space_id":"62615f44-2a34-4235-b38b-'
            '76b5a1de6ef8"},"vars":{}}')
    signature = "b18500437ebb010220ddd770cbe6fd531ea0ba0d"
    assert signalwire.is_valid_json_signature(key, url, body.encode(), signature)
    assert not signalwire.is_valid_json_signature(key, url, body.encode() + b" ", signature)


def test_signalwire_form_vector_from_the_sdk_tests():
    params = {"CallSid": "CA1234567890ABCDE", "Caller": "+14158675309", "Digits": "1234", "From": "+14158675309",
              "To": "+18005551212"}
    assert signalwire.is_valid_signature("12345", "https://mycompany.com/myapp.php?foo=1&bar=2", params,
                                         "RSOYDt4T1cUTdK1PDd93/VVr8B8=")


# ------------------------------------------------------------------ Exotel

def test_exotel_basic_auth_and_allow_list():
    header = "Basic " + base64.b64encode(b"api-key:api-token").decode()
    assert exotel.is_valid_basic(header, "api-key", "api-token")
    assert not exotel.is_valid_basic(header, "api-key", "other")
    assert not exotel.is_valid_basic("Basic %%%", "api-key", "api-token")
    assert not exotel.is_valid_basic(None, "api-key", "api-token")
    networks = exotel.parse_networks("182.76.0.0/16, 10.1.2.3")
    assert exotel.ip_allowed("182.76.3.4", networks) and exotel.ip_allowed("10.1.2.3", networks)
    assert not exotel.ip_allowed("10.1.2.4", networks) and not exotel.ip_allowed("nonsense", networks)
