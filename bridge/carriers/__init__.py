"""One package per phone carrier: a pure media-stream codec, the webhook's answer, the request signature."""

__all__: list[str] = []
