"""Vonage Voice API WebSocket: codec, the NCCO answer, and signed-webhook JWTs."""

__all__: list[str] = []
