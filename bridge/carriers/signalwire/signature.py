"""SignalWire request signatures (``X-SignalWire-Signature``).

SignalWire's Compatibility API signs cXML webhooks exactly as Twilio does (the official SDK's
``signalwire.request_validator.RequestValidator`` hands form posts to twilio-python's
``RequestValidator``): ``base64(HMAC-SHA1(signing key, url + sorted name+value pairs))``, with the
project's Signing Key as the key. Its JSON webhooks (SWML, RELAY) sign ``url + raw body`` instead,
as lowercase hex. The official ``signalwire`` package pins an old twilio-python, so it cannot sit
beside the project's own; the tests check the form scheme against twilio-python's validator with
a SignalWire key, and the JSON scheme against the vector in SignalWire's SDK tests.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any, Final

from bridge.carriers.twilio import signature as twilio_signature

__all__ = ["SIGNATURE_HEADER", "is_valid_json_signature", "is_valid_signature"]

SIGNATURE_HEADER: Final = "X-SignalWire-Signature"


def is_valid_signature(signing_key: str, url: str, params: Mapping[str, Any] | None, signature: str) -> bool:
    """A cXML (form) webhook or the media upgrade: Twilio's algorithm with the SignalWire key."""
    return twilio_signature.is_valid_signature(signing_key, url, params, signature)


def is_valid_json_signature(signing_key: str, url: str, body: bytes, signature: str) -> bool:
    """A JSON webhook: lowercase hex HMAC-SHA1 over ``url`` followed by the raw body."""
    digest = hmac.new(signing_key.encode("utf-8"), url.encode("utf-8") + body, hashlib.sha1).hexdigest()
    return hmac.compare_digest(digest.encode("ascii"), signature.strip().lower().encode("utf-8", "replace"))
