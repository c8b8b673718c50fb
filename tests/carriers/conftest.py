"""Carrier tests share the end-to-end fixtures: real uvicorn, the protocol-faithful ElevenLabs."""

from tests.e2e.conftest import fake_tts, script

__all__ = ["fake_tts", "script"]
