"""cXML for the SignalWire voice webhook: SignalWire's dialect of TwiML, so Twilio's builders.

cXML ``<Connect><Stream url="wss://...">`` (https://developer.signalwire.com/compatibility-api/cxml/voice/stream)
is bidirectional, PCMU at 8 kHz unless ``codec`` says otherwise.
"""

from __future__ import annotations

from bridge.carriers.twilio.twiml import busy_twiml, stream_twiml

__all__ = ["busy_cxml", "stream_cxml"]


def stream_cxml(ws_url: str) -> str:
    """``<Connect><Stream url=...>``; the URL carries no query (as on Twilio)."""
    return stream_twiml(ws_url)


def busy_cxml(message: str) -> str:
    return busy_twiml(message)
