"""The asyncio shell: the Starlette app, one session per call, signatures, drain, metrics."""

__all__: list[str] = []
