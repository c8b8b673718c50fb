"""Telnyx Media Streaming: codec, the TeXML answer, and Ed25519 webhook signatures."""

__all__: list[str] = []
