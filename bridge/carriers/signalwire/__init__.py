"""SignalWire Compatibility (cXML) streams: Twilio's wire format, SignalWire's signatures."""

__all__: list[str] = []
