"""Plivo request signatures, version 3 (``X-Plivo-Signature-V3`` and its nonce).

Plivo's scheme ("Validating requests", https://www.plivo.com/docs/voice/concepts/signature-validation,
and the official SDK's ``plivo.utils.validate_v3_signature``, the tests' oracle): the signed text is
the URL without its query, then ``?`` and the query's (and for GET the parameters') ``key=value``
pairs sorted by key and joined with ``&``; for a POST with a form body, that form's parameters
sorted by key follow as ``keyvalue`` with no separator (a ``.`` first when the URL had a query, a
bare ``?`` when it had none). Then ``.`` and the nonce header. The signature is
``base64(HMAC-SHA256(auth_token, text))``; the header may list several, comma-separated.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from typing import Final
from urllib.parse import parse_qsl, urlsplit, urlunsplit

__all__ = ["NONCE_HEADER", "SIGNATURE_HEADER", "compute_signature", "is_valid_signature"]

SIGNATURE_HEADER: Final = "X-Plivo-Signature-V3"
NONCE_HEADER: Final = "X-Plivo-Signature-V3-Nonce"

Params = Mapping[str, str | Sequence[str]]


def _pairs(params: Params) -> dict[str, list[str]]:
    return {k: sorted([v] if isinstance(v, str) else list(v)) for k, v in params.items()}


def _query(params: dict[str, list[str]]) -> str:
    return "&".join("&".join(f"{k}={v}" for v in params[k]) for k in sorted(params))


def compute_signature(auth_token: str, method: str, url: str, params: Params | None, nonce: str) -> str:
    """The V3 signature Plivo sends for a ``method`` request to ``url`` with form/query ``params``."""
    parts = urlsplit(url)
    base = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    query = _pairs({})
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        query.setdefault(key, []).append(value)
    body = _pairs(params or {})
    if method.upper() == "GET":
        query = {**body, **{k: sorted(v) for k, v in query.items()}}
        body = {}
    else:
        query = {k: sorted(v) for k, v in query.items()}
    text = _query(query)
    if text or body:
        base += "?" + text
    if text and body:
        base += "."
    base += "".join("".join(f"{k}{v}" for v in body[k]) for k in sorted(body))
    digest = hmac.new(auth_token.encode("utf-8"), f"{base}.{nonce}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def is_valid_signature(auth_token: str, method: str, url: str, params: Params | None, nonce: str | None,
                       signature: str | None) -> bool:
    """Whether one of the header's signatures is Plivo's for this request; constant-time per entry.

    Never raises for what the request carries."""
    if not nonce or not signature:
        return False
    try:
        expected = compute_signature(auth_token, method, url, params, nonce).encode("ascii")
        given = [s.strip().encode("utf-8") for s in signature.split(",")]
    except (ValueError, TypeError, UnicodeError):
        return False
    matches = False
    for candidate in given:
        matches |= hmac.compare_digest(expected, candidate)
    return matches
