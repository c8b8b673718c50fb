"""Plivo Audio Streams: codec, the answer URL's XML, and request signatures."""

__all__: list[str] = []
