"""Speech-to-text behind one streaming interface (`bridge.agents.stt.base`).

Implementations: `DeepgramTranscriber` (live WebSocket, interim and final results as the caller
speaks) and `BatchTranscriber` (any batch `Transcriber`, such as the OpenAI-compatible one, which
transcribes each utterance after it ends).
"""

from bridge.agents.stt.base import (
    SpeechStarted,
    StreamingTranscriber,
    SttClosed,
    SttError,
    SttEvent,
    SttStream,
    Transcript,
    UtteranceEnd,
)
from bridge.agents.stt.batch import BatchTranscriber
from bridge.agents.stt.deepgram import DeepgramTranscriber

__all__ = [
    "BatchTranscriber",
    "DeepgramTranscriber",
    "SpeechStarted",
    "StreamingTranscriber",
    "SttClosed",
    "SttError",
    "SttEvent",
    "SttStream",
    "Transcript",
    "UtteranceEnd",
]
