"""TeXML for the Telnyx voice webhook: connect the call to a bidirectional media stream.

TeXML ``<Connect><Stream>`` (https://developers.telnyx.com/docs/voice/programmable-voice/texml-verbs/stream):
``bidirectionalMode="rtp"`` lets us play raw audio back on the same socket, and
``bidirectionalCodec="PCMU"`` keeps it in the core's own format (8 kHz mu-law), so no conversion.
"""

from __future__ import annotations

from typing import Final
from xml.sax.saxutils import escape, quoteattr

__all__ = ["busy_texml", "stream_texml"]

_XML_DECL: Final = '<?xml version="1.0" encoding="UTF-8"?>'


def stream_texml(ws_url: str) -> str:
    """``<Connect><Stream url=... bidirectionalMode="rtp" bidirectionalCodec="PCMU"/>``."""
    if not ws_url.startswith(("wss://", "ws://")):
        raise ValueError("the stream URL must be ws:// or wss://")
    stream = f'<Stream url={quoteattr(ws_url)} bidirectionalMode="rtp" bidirectionalCodec="PCMU"/>'
    return f"{_XML_DECL}<Response><Connect>{stream}</Connect></Response>"


def busy_texml(message: str) -> str:
    """A polite ``<Say>`` and a hang-up, for when the bridge is at capacity."""
    return f"{_XML_DECL}<Response><Say>{escape(message)}</Say><Hangup/></Response>"
