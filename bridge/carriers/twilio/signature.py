"""Twilio request signatures (``X-Twilio-Signature``), for the voice webhook and the media socket.

Twilio signs ``base64(HMAC-SHA1(auth_token, url + name1 + value1 + name2 + value2 ...))`` with the
parameter names sorted, and a repeated name's values sorted too (protocols.md §2.7). For the media
WebSocket the URL is ``wss://host/path`` and there are no parameters.

`is_valid_signature` accepts exactly what twilio-python's ``RequestValidator.validate`` accepts
(the tests check this against it on random input): the URL is re-serialised by ``urlparse``, and
tried both without its port and with one (":443" for https, ":80" for anything else), because
Twilio's own signing is inconsistent about ports. The SDK stays a test-only dependency.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import ParseResult, urlparse

__all__ = ["SIGNATURE_HEADER", "Params", "compute_signature", "is_valid_signature"]

SIGNATURE_HEADER = "X-Twilio-Signature"

Params = Mapping[str, str | Sequence[str]]
"""Form parameters: a value or all values of a repeated name; multi-dicts with ``getlist`` work too."""


def _values(params: Mapping[str, Any], name: str) -> list[str]:
    """Every value of ``name``; multi-dicts (Starlette's FormData, Django's QueryDict) give all."""
    for method in ("getall", "getlist"):
        getter = getattr(params, method, None)
        if callable(getter):
            return list(getter(name))
    value = params[name]
    return [value] if isinstance(value, str) else list(value)


def compute_signature(auth_token: str, url: str, params: Params | None = None) -> str:
    """The signature Twilio sends for a request to ``url`` with form ``params`` (URL used as given).

    Raises TypeError if a value is neither text nor a sequence of text."""
    parts = [url]
    for name in sorted(set(params or {})):
        for value in sorted(set(_values(params or {}, name))):
            parts.append(name + value)
    digest = hmac.new(auth_token.encode("utf-8"), "".join(parts).encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def _url_variants(url: str) -> tuple[str, str]:
    """The URL without and with an explicit port, as ``RequestValidator`` builds them.

    Like the SDK, the port is cut at the first ":" of the netloc; that is wrong for IPv6 hosts
    and user:password@ netlocs, neither of which Twilio calls.
    """
    parsed: ParseResult = urlparse(url)
    if parsed.port:  # raises ValueError for a port that is not a number in range
        return parsed._replace(netloc=parsed.netloc.split(":", 1)[0]).geturl(), parsed.geturl()
    default_port = "443" if parsed.scheme == "https" else "80"
    return parsed.geturl(), parsed._replace(netloc=f"{parsed.netloc}:{default_port}").geturl()


def is_valid_signature(auth_token: str, url: str, params: Mapping[str, Any] | None, signature: str) -> bool:
    """Whether ``signature`` (the header's value) is Twilio's for this request; constant-time.

    ``params`` may be the request's form as it comes (Starlette's ``FormData`` included). Never
    raises for what the request carries: a malformed URL or a non-text value is just invalid.
    """
    try:
        candidates = [compute_signature(auth_token, variant, params) for variant in _url_variants(url)]
        given = signature.encode("utf-8")
    except (ValueError, TypeError, UnicodeError):
        return False
    matches = False
    for candidate in candidates:  # check both, so the time does not depend on which one matched
        matches |= hmac.compare_digest(candidate.encode("ascii"), given)
    return matches
