"""Exotel Voicebot (AgentStream): codec, the applet's answer, and its request checks."""

__all__: list[str] = []
