"""Exotel's two ways to know a request is Exotel's: HTTP Basic auth, or its source address.

Exotel signs nothing. Its Voicebot applet documents Basic auth written into the URL
(``wss://API_KEY:API_TOKEN@host/path``, sent as ``Authorization: Basic base64(key:token)``), or an
IP allow-list agreed with Exotel (https://developer.exotel.com/docs/agentstream/stream-voicebot-applet).
Both are checked here; the addresses are the operator's setting (Exotel gives them on request).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
from collections.abc import Iterable

__all__ = ["ip_allowed", "is_valid_basic", "parse_networks"]


def is_valid_basic(authorization: str | None, api_key: str, api_token: str) -> bool:
    """Whether ``authorization`` is ``Basic base64(api_key:api_token)``; constant-time."""
    if not authorization or not authorization.lower().startswith("basic "):
        return False
    try:
        given = base64.b64decode(authorization[6:].strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    return hmac.compare_digest(given, f"{api_key}:{api_token}".encode())


def parse_networks(text: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """``"1.2.3.4, 10.0.0.0/24"`` as networks; ValueError names the first bad entry."""
    out = []
    for item in (part.strip() for part in text.split(",")):
        if item:
            out.append(ipaddress.ip_network(item, strict=False))
    return out


def ip_allowed(host: str | None, networks: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    try:
        address = ipaddress.ip_address(host or "")
    except ValueError:
        return False
    return any(address in network for network in networks)
