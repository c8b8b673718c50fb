"""Vonage signed webhooks: an HS256 JWT in ``Authorization: Bearer``, keyed by the signature secret.

Vonage's scheme ("Signed webhooks", https://developer.vonage.com/en/getting-started/concepts/webhooks#decoding-signed-webhooks,
and the Voice API guide https://developer.vonage.com/en/voice/voice-api/guides/signed-webhooks):
the token is signed with the account's signature secret (HS256); its claims carry ``iat``,
``jti``, ``api_key``, ``application_id`` and ``payload_hash``, the SHA-256 (hex) of the body.
The official helper ``vonage_jwt.verify_signature`` (the tests' oracle) checks the signature;
we also check ``payload_hash`` against a POST's raw body when the claim is there, so a genuine
token cannot be replayed with another body. PyJWT does the JWT work.
"""

from __future__ import annotations

import hashlib
import hmac
import warnings
from typing import Final

import jwt

__all__ = ["is_valid_token"]

_BEARER: Final = "bearer "


def is_valid_token(secret: str, authorization: str | None, body: bytes | None) -> bool:
    """Whether ``authorization`` is ``Bearer <JWT>`` signed with ``secret`` (and, for a body, over it).

    Never raises for what the request carries."""
    if not authorization or not authorization.lower().startswith(_BEARER):
        return False
    token = authorization[len(_BEARER):].strip()
    try:
        with warnings.catch_warnings():  # the secret's length is Vonage's choice, not a per-request problem
            warnings.simplefilter("ignore")
            claims = jwt.decode(token, secret, algorithms=["HS256"], options={"verify_aud": False})
    except jwt.PyJWTError:
        return False
    expected = claims.get("payload_hash")
    if body is None or not body or not isinstance(expected, str):
        return True
    return hmac.compare_digest(hashlib.sha256(body).hexdigest().encode(), expected.lower().encode("utf-8", "replace"))
