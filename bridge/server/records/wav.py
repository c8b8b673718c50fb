"""The stereo recording: caller on the left, the agent on the right as the caller heard it.

Caller audio is laid down in arrival order (the carrier sends it paced, 20 ms a message); each
agent frame at the moment the caller started hearing it, with what a barge-in cleared already
taken out by the recorder. Built in a worker thread at the end of the call, off the event loop.
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from bridge.server.records.model import StereoAudio

__all__ = ["write_stereo_wav"]


def write_stereo_wav(path: Path, audio: StereoAudio) -> None:
    """At the call's rate: 16 kHz for a wideband call, as the caller heard it."""
    rate = audio.rate
    caller = np.frombuffer(b"".join(audio.caller), dtype="<i2")
    agent_end = max((round(at * rate) + len(frame) // 2 for at, frame in audio.agent), default=0)
    frames = max(len(caller), agent_end)
    stereo = np.zeros((frames, 2), dtype="<i2")
    stereo[: len(caller), 0] = caller
    for at, frame in audio.agent:
        start = round(at * rate)
        pcm = np.frombuffer(frame, dtype="<i2")
        stereo[start:start + len(pcm), 1] = pcm
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part")
    with wave.open(str(tmp), "wb") as out:
        out.setnchannels(2)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(stereo.tobytes())
    tmp.replace(path)
