"""SignalWire Compatibility (cXML) media streams: Twilio's JSON, so Twilio's codec.

Protocol: SignalWire, cXML ``<Stream>`` (https://developer.signalwire.com/compatibility-api/cxml/voice/stream):
``<Connect><Stream url="wss://...">`` opens a bidirectional stream whose WebSocket messages follow
Twilio Media Streams (``connected``, ``start`` with ``streamSid``, ``media``, ``dtmf``, ``mark``,
``stop``; outbound ``media``, ``mark`` and ``clear`` with ``streamSid``), PCMU at 8 kHz by default
(the ``codec`` attribute, which we leave alone). A subclass rather than an alias, so that a
divergence found on SignalWire's side has one place to go.
"""

from __future__ import annotations

from bridge.carriers.twilio.codec import TwilioCodec

__all__ = ["SignalWireCodec"]


class SignalWireCodec(TwilioCodec):
    """One SignalWire stream; the wire format is Twilio's."""
