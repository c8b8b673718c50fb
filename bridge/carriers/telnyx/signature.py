"""Telnyx webhook signatures: Ed25519 over ``timestamp|body``.

Telnyx signs every webhook (https://developers.telnyx.com/docs/messaging/messages/receiving-webhooks,
"Webhook signing"): header ``telnyx-signature-ed25519`` is the base64 Ed25519 signature of
``f"{telnyx-timestamp}|{raw body}"`` by the account's key pair, whose public half (base64, 32 bytes)
the Mission Control portal shows; ``telnyx-timestamp`` is Unix seconds. Like the official SDK
(``client.webhooks.unwrap``, the tests' oracle), a timestamp more than 300 s from now is refused,
so a captured request cannot be replayed later. ``now`` is passed in: this module reads no clock.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

__all__ = ["SIGNATURE_HEADER", "TIMESTAMP_HEADER", "TOLERANCE_S", "is_valid_signature", "public_key"]

SIGNATURE_HEADER: Final = "telnyx-signature-ed25519"
TIMESTAMP_HEADER: Final = "telnyx-timestamp"
TOLERANCE_S: Final = 300


def public_key(encoded: str) -> Ed25519PublicKey:
    """The portal's base64 public key; ValueError if it is not 32 bytes of base64 (a config error)."""
    try:
        raw = base64.b64decode(encoded, validate=True)
    except binascii.Error:
        raise ValueError("not base64") from None
    if len(raw) != 32:
        raise ValueError(f"an Ed25519 public key is 32 bytes, this is {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


def is_valid_signature(key: Ed25519PublicKey, headers: Mapping[str, str], body: bytes, now: float) -> bool:
    """Whether the request's two headers sign ``body`` with ``key``, close enough to ``now``.

    Never raises for what the request carries: a missing, malformed or stale header is invalid."""
    lowered = {k.lower(): v for k, v in headers.items()}
    signature, stamp = lowered.get(SIGNATURE_HEADER), lowered.get(TIMESTAMP_HEADER)
    if signature is None or stamp is None or not stamp.isdigit() or abs(now - int(stamp)) > TOLERANCE_S:
        return False
    try:
        key.verify(base64.b64decode(signature, validate=True), stamp.encode("ascii") + b"|" + body)
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True
