"""Text to speech behind one seam (`bridge.tts.base.TtsClient`): ElevenLabs, the offline voice, failover."""

__all__: list[str] = []
