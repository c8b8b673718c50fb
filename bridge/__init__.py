"""bridge: a voice agent on the phone. The packages and their arrows: docs/architecture.md."""

__all__: list[str] = []
