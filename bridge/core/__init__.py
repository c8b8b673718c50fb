"""The pure, Sans-I/O core: a call as a state machine, events in with timestamps, actions out."""

__all__: list[str] = []
