"""The NCCO for the Vonage answer URL: connect the call to our WebSocket.

NCCO ``connect`` with a ``websocket`` endpoint (https://developer.vonage.com/en/voice/voice-api/ncco-reference):
``uri`` (wss://), ``content-type`` (``audio/l16;rate=16000`` or ``8000``) and ``headers``, which
Vonage echoes at the top level of its first message, ``websocket:connected``: the call's uuid
travels that way, so the stream knows which call it carries.
"""

from __future__ import annotations

from typing import Any

from bridge.carriers.vonage.codec import CALL_HEADER, content_type

__all__ = ["busy_ncco", "connect_ncco"]


def connect_ncco(ws_url: str, rate: int, call_uuid: str = "") -> list[dict[str, Any]]:
    if not ws_url.startswith(("wss://", "ws://")):
        raise ValueError("the stream URL must be ws:// or wss://")
    endpoint: dict[str, Any] = {"type": "websocket", "uri": ws_url, "content-type": content_type(rate)}
    if call_uuid:
        endpoint["headers"] = {CALL_HEADER: call_uuid[:128]}
    return [{"action": "connect", "endpoint": [endpoint]}]


def busy_ncco(message: str) -> list[dict[str, Any]]:
    """A ``talk`` action alone: the call ends when it is done."""
    return [{"action": "talk", "text": message}]
