"""Smart Turn v3.2, run directly with onnxruntime: P(the caller's turn is complete) from audio alone.

Smart Turn (BSD-2-Clause, by Daily) is a Whisper-encoder classifier trained on the last 8 s of
a speaker's audio; it hears intonation and trailing words ("...for", "um") rather than silence.
Its int8 CPU build ships inside the ``pipecat-ai`` wheel as
``pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx`` (8.7 MB). Importing ``pipecat``
would pull its heavy dependencies, so the file is located without importing the package
(`importlib.util.find_spec` of the top-level name executes nothing) and loaded by onnxruntime;
the features are `bridge.turn.features`. Install: ``pip install 'bridge[turn]'`` and
``pip install --no-deps pipecat-ai`` (or pass ``model_path`` to a copy of the file).

Input ``input_features`` ``[1, 80, 800]`` float32; output the probability, sigmoid applied.
8 kHz phone audio is upsampled to 16 kHz with libsoxr first: the model was trained on wideband
speech, so expect it to be less sure on the phone band (see docs/benchmarks.md for how it does).
One session serves every call: onnxruntime's ``run`` is thread-safe, and one intra-op thread per
inference keeps one judgement from taking a whole core from the calls beside it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Final

import numpy as np
import soxr
from numpy.typing import NDArray

from bridge.turn.base import TurnVerdict, WaitPolicy
from bridge.turn.features import RATE, log_mel, window

__all__ = ["MODEL_FILE", "SmartTurnJudge", "TurnModelUnavailable", "find_model"]

MODEL_FILE: Final = "smart-turn-v3.2-cpu.onnx"
_IN_WHEEL: Final = ("audio", "turn", "smart_turn", "data", MODEL_FILE)
INSTALL_HINT: Final = "pip install 'bridge[turn]' && pip install --no-deps pipecat-ai"


class TurnModelUnavailable(RuntimeError):
    """onnxruntime or the model file is missing; the message says how to get them."""


def find_model() -> Path:
    """The model file inside an installed ``pipecat-ai`` wheel, found without importing pipecat."""
    spec = importlib.util.find_spec("pipecat")
    for root in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(root).joinpath(*_IN_WHEEL)
        if path.is_file():
            return path
    raise TurnModelUnavailable(f"no {MODEL_FILE} found (is pipecat-ai installed?): {INSTALL_HINT}")


class SmartTurnJudge:
    """``SmartTurnJudge().judge(pcm, 8000)``: blocking (~tens of ms of CPU); run it off the event loop."""

    name = "smart-turn-v3.2"
    audio_most = 1.0

    def __init__(self, model_path: str | Path | None = None, *, policy: WaitPolicy | None = None,
                 threads: int = 1) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise TurnModelUnavailable(f"the end-of-turn model needs onnxruntime: {INSTALL_HINT}") from None
        path = Path(model_path) if model_path is not None else find_model()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session: Any = ort.InferenceSession(str(path), sess_options=options,
                                                  providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        self.policy = policy or WaitPolicy()
        self.model_path = path

    def features(self, pcm: bytes, rate: int) -> NDArray[np.float32]:
        """``[1, 80, 800]``: the last 8 s at 16 kHz, left-padded, as log-mel."""
        return log_mel(window(_to_16k(pcm, rate)))[None, :, :]

    def probability(self, pcm: bytes, rate: int) -> float:
        (out,) = self._session.run(None, {self._input: self.features(pcm, rate)})
        return float(np.asarray(out).reshape(-1)[0])

    def judge(self, pcm: bytes, rate: int, transcript: str | None = None) -> TurnVerdict:
        """The model hears only the audio; ``transcript`` is accepted for the common signature."""
        return self.policy.verdict(self.probability(pcm, rate), self.name)


def _to_16k(pcm: bytes, rate: int) -> NDArray[np.float32]:
    samples = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").astype(np.float32) / 32768.0
    if rate == RATE or samples.size == 0:
        return samples
    return np.asarray(soxr.resample(samples, rate, RATE, quality="HQ"), dtype=np.float32)
