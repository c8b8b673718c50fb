"""Where reply text comes from: the agents, their conversation memory, their tools and speech-to-text."""

__all__: list[str] = []
