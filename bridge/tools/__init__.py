"""The ``bridge`` command and the tools around the server: tunnel, dial, VAD tuning, phone simulator."""

__all__: list[str] = []
