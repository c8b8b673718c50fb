"""Twilio Media Streams: codec, TwiML, request signatures and the REST API for outbound calls."""

__all__: list[str] = []
