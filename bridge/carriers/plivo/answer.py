"""Plivo XML for the answer URL: stream the call both ways over a WebSocket.

``<Stream>`` (https://www.plivo.com/docs/voice/xml/the-stream-element): the WebSocket URL is the
element's text, not an attribute. ``bidirectional="true"`` lets us play audio back,
``keepCallAlive="true"`` holds the call on this element for as long as the stream lives, and
``contentType="audio/x-mulaw;rate=8000"`` is the core's own format both ways.
"""

from __future__ import annotations

from typing import Final
from xml.sax.saxutils import escape

from bridge.carriers.plivo.codec import CONTENT_TYPE

__all__ = ["busy_xml", "stream_xml"]

_XML_DECL: Final = '<?xml version="1.0" encoding="UTF-8"?>'


def stream_xml(ws_url: str) -> str:
    if not ws_url.startswith(("wss://", "ws://")):
        raise ValueError("the stream URL must be ws:// or wss://")
    stream = (f'<Stream bidirectional="true" keepCallAlive="true" contentType="{CONTENT_TYPE}">'
              f"{escape(ws_url)}</Stream>")
    return f"{_XML_DECL}<Response>{stream}</Response>"


def busy_xml(message: str) -> str:
    """``<Speak>`` then ``<Hangup/>``, for when the bridge is at capacity."""
    return f"{_XML_DECL}<Response><Speak>{escape(message)}</Speak><Hangup/></Response>"
