"""Audio plumbing for the phone path: mu-law, resampling to the call's rate, fixed-size frames, levels.

Twilio media streams carry 8 kHz mu-law in 20 ms frames; Vonage's carry 16 kHz linear PCM;
ElevenLabs sends either mu-law or PCM16 at a rate of its own. A call works on little-endian signed
16-bit mono PCM ("PCM16") at the rate its carrier's line runs at (`AudioFormat`: 8 kHz, or 16 kHz
end to end on a wideband line) and converts at the edges with the helpers here.

Like the core, this module is pure: no clock, no I/O. The classes hold the per-stream state that
streaming needs (filter history, a dangling odd byte, a partial frame), so each call or TTS context
owns its own instances. The per-frame path runs for hundreds of calls per process, so it stays in C:
`audioop` for mu-law and levels, libsoxr (via `soxr`) for resampling, numpy only as soxr's buffer.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Final

import numpy as np
import soxr

# The standard library's audioop warns at import on 3.11-3.12 and is gone in 3.13, where the
# audioop-lts package provides the same module under the same name (and does not warn).
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

__all__ = [
    "FRAME_MS",
    "INPUT_RATES",
    "OUTPUT_FORMATS",
    "PCM_FRAME_BYTES",
    "PHONE",
    "RESAMPLE_QUALITY",
    "SAMPLE_RATE",
    "ULAW_FRAME_BYTES",
    "AudioFormat",
    "Framer",
    "Resampler",
    "TtsDecoder",
    "pcm_level_dbfs",
    "pcm_to_ulaw",
    "ulaw_to_pcm",
]


@dataclass(frozen=True, slots=True)
class AudioFormat:
    """The phone path's audio: 16-bit mono PCM at ``rate``, paced and judged in ``frame_ms`` frames.

    Every size and duration the core derives (a frame's bytes and seconds, bytes per second of
    speech) comes from here, so a carrier at another rate changes one value, not a dozen literals.
    """

    rate: int = 8000
    frame_ms: int = 20

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.frame_ms <= 0 or self.rate * self.frame_ms % 1000:
            raise ValueError(f"a {self.frame_ms} ms frame at {self.rate} Hz is not a whole number of samples")

    @property
    def frame_s(self) -> float:
        return self.frame_ms / 1000

    @property
    def frame_samples(self) -> int:
        return self.rate * self.frame_ms // 1000

    @property
    def pcm_frame_bytes(self) -> int:
        """One frame of PCM16 (320 bytes at 8 kHz and 20 ms)."""
        return self.frame_samples * 2

    @property
    def ulaw_frame_bytes(self) -> int:
        """One frame of mu-law, one byte a sample (160 bytes at 8 kHz and 20 ms)."""
        return self.frame_samples

    @property
    def pcm_bytes_per_s(self) -> int:
        return self.rate * 2

    def pcm_bytes(self, ms: int) -> int:
        """Bytes of PCM16 in ``ms`` whole milliseconds (an int, so comparisons stay exact)."""
        return self.pcm_bytes_per_s * ms // 1000


PHONE: Final = AudioFormat()
"""Twilio media streams: 8 kHz mu-law in 20 ms frames."""
SAMPLE_RATE: Final = PHONE.rate
"""The phone path's rate: Twilio media streams are 8 kHz mu-law."""
FRAME_MS: Final = PHONE.frame_ms
"""Twilio sends one media message per 20 ms; we pace our output in the same unit."""
PCM_FRAME_BYTES: Final = PHONE.pcm_frame_bytes
"""320: one 20 ms frame of 8 kHz PCM16."""
ULAW_FRAME_BYTES: Final = PHONE.ulaw_frame_bytes
"""160: one 20 ms frame of 8 kHz mu-law (one byte a sample)."""

INPUT_RATES: Final = (8000, 16000, 22050, 24000, 44100)
"""PCM rates `Resampler` accepts: ElevenLabs' PCM formats and espeak-ng's 22 050 Hz."""
OUTPUT_FORMATS: Final = ("ulaw_8000", "pcm_8000", "pcm_16000", "pcm_22050", "pcm_24000", "pcm_44100")
"""ElevenLabs ``output_format`` values `TtsDecoder` can turn into PCM16 at the call's rate."""

RESAMPLE_QUALITY: Final = "MQ"
"""libsoxr preset, chosen by measurement (tests/test_audio.py checks the claims).

Tones above 4 kHz come out more than 90 dB down from 16, 22.05, 24 and 44.1 kHz input (the int16
noise floor) and the 300-3400 Hz phone band is flat. CPU is within ~20 % across the filtering
presets. "LQ" holds back about half as much audio but is already 8 dB down at 3.4 kHz (muffled
voices); "HQ"/"VHQ" buy precision below what mu-law can carry, for the same or more delay and CPU.
"QQ" does not filter at all: a 5 kHz tone folds to 3 kHz at full level.
"""


def ulaw_to_pcm(data: bytes) -> bytes:
    """Decode G.711 mu-law (Twilio's inbound payload, ElevenLabs' ``ulaw_8000``) to PCM16."""
    return audioop.ulaw2lin(data, 2)


def pcm_to_ulaw(data: bytes) -> bytes:
    """Encode PCM16 to G.711 mu-law for Twilio; ``data`` must hold whole samples (even length)."""
    return audioop.lin2ulaw(data, 2)


def pcm_level_dbfs(pcm: bytes) -> float:
    """RMS level of PCM16 in dB relative to full scale (a full-scale sine reads about -3 dBFS).

    Digital silence gives ``-inf``, so "quieter than X dBFS" needs no special case. A dangling odd
    byte is ignored rather than rejected: a level is a measurement, not a decode.
    """
    rms = audioop.rms(memoryview(pcm)[: len(pcm) & ~1], 2)
    return 20.0 * math.log10(rms / 32768.0) if rms else -math.inf


class Resampler:
    """Streaming PCM16 mono resampler from ``in_rate`` to ``out_rate`` (the phone path's rate, 8 kHz
    unless the carrier's is 16), for one continuous stream.

    Why not `audioop.ratecv`: it interpolates without a low-pass filter, so a 5 kHz sibilant in
    16 kHz speech folds to 3 kHz at full strength. libsoxr filters first, and keeps its filter
    history across calls to `process`, so chunk borders leave no clicks. Chunks may have any size,
    odd byte counts included: a trailing half sample is held until the next chunk completes it.

    The filter works in blocks, so some output lags the input (see `delay_ms`); `flush` releases it
    at the end of the stream and leaves the resampler ready for a new, unrelated stream.
    Input at ``out_rate`` passes through unchanged (still re-pairing odd bytes).
    """

    __slots__ = ("_carry", "_stream", "in_rate", "out_rate")

    def __init__(self, in_rate: int, out_rate: int = SAMPLE_RATE) -> None:
        if in_rate not in INPUT_RATES:
            raise ValueError(f"unsupported input rate {in_rate} Hz; expected one of {INPUT_RATES}")
        self.in_rate: Final = in_rate
        self.out_rate: Final = out_rate
        self._carry = b""
        self._stream: soxr.ResampleStream | None = None
        if in_rate != out_rate:
            # int16 in and out: no numpy conversions on the hot path. libsoxr dithers its int16
            # output (TPDF, about 1 LSB), so different chunkings may differ by a couple of LSB.
            self._stream = soxr.ResampleStream(
                in_rate, out_rate, 1, dtype="int16", quality=RESAMPLE_QUALITY
            )

    def process(self, pcm: bytes) -> bytes:
        """Resample the next chunk; returns whatever audio at ``out_rate`` is ready (possibly ``b""``)."""
        if self._carry:
            pcm = self._carry + pcm
            self._carry = b""
        if len(pcm) & 1:
            self._carry = pcm[-1:]
        if self._stream is None:
            return pcm[:-1] if self._carry else pcm
        samples = len(pcm) >> 1
        if not samples:
            return b""
        out: np.ndarray = self._stream.resample_chunk(np.frombuffer(pcm, dtype=np.int16, count=samples))
        return out.tobytes()

    def flush(self) -> bytes:
        """End of stream: the audio still inside the filter. A lone dangling byte is dropped."""
        self._carry = b""
        if self._stream is None:
            return b""
        tail: np.ndarray = self._stream.resample_chunk(np.empty(0, dtype=np.int16), last=True)
        self._stream.clear()
        return tail.tobytes()

    @property
    def delay_ms(self) -> float:
        """Audio fed in but not yet returned, in ms of output (libsoxr's own count).

        It swings with libsoxr's block processing: at MQ, from about 10 ms (the filter's delay) to
        75-120 ms just before a block completes, 45-65 ms on average. `flush` returns it.
        """
        if self._stream is None:
            return 0.0
        return float(self._stream.delay()) * 1000.0 / self.out_rate


class TtsDecoder:
    """Turns one ElevenLabs context's audio chunks into PCM16 at ``rate`` (8 kHz, or the carrier's 16),
    whatever ``output_format`` was asked (mu-law is 8 kHz: it is for an 8 kHz phone path only).

    One decoder per context: PCM formats carry resampler state from chunk to chunk, and contexts
    interleave on the same socket. mu-law needs no state; it is decoded as it comes.
    """

    __slots__ = ("_resampler", "output_format")

    def __init__(self, output_format: str, rate: int = SAMPLE_RATE) -> None:
        if output_format not in OUTPUT_FORMATS:
            raise ValueError(
                f"unsupported ElevenLabs output_format {output_format!r}; expected one of {OUTPUT_FORMATS}"
            )
        self.output_format: Final = output_format
        codec, _, sample_rate = output_format.partition("_")
        if codec == "ulaw" and rate != SAMPLE_RATE:
            raise ValueError(f"{output_format!r} is 8 kHz audio; a {rate} Hz call needs a pcm_ format")
        self._resampler = None if codec == "ulaw" else Resampler(int(sample_rate), rate)

    def decode(self, chunk: bytes) -> bytes:
        """The PCM16 ready after this chunk (``b""`` while the resampler fills)."""
        if self._resampler is None:
            return ulaw_to_pcm(chunk)
        return self._resampler.process(chunk)

    def flush(self) -> bytes:
        """End of the context's audio (``isFinal``): the resampler's tail, if any."""
        return b"" if self._resampler is None else self._resampler.flush()

    @property
    def delay_ms(self) -> float:
        """Audio received but not yet returned by `decode`, in ms (0 for mu-law and ``pcm_8000``)."""
        return 0.0 if self._resampler is None else self._resampler.delay_ms


class Framer:
    """Re-slices a byte stream into fixed-size frames, carrying the remainder to the next push.

    TTS audio arrives in chunks of any size; Twilio pacing (20 ms = `PCM_FRAME_BYTES`) and VAD
    want exact frames. One framer per stream, since the remainder belongs to that stream.
    """

    __slots__ = ("_pending", "frame_bytes")

    def __init__(self, frame_bytes: int) -> None:
        if frame_bytes <= 0:
            raise ValueError(f"frame_bytes must be positive, got {frame_bytes}")
        self.frame_bytes: Final = frame_bytes
        self._pending = b""

    @property
    def pending(self) -> int:
        """Bytes held back, always fewer than one frame."""
        return len(self._pending)

    def push(self, data: bytes) -> list[bytes]:
        """Append ``data``; returns the frames it completes, oldest first."""
        if self._pending:
            data = self._pending + data
        size = self.frame_bytes
        end = len(data) - len(data) % size
        self._pending = data[end:]
        return [data[i : i + size] for i in range(0, end, size)]

    def flush(self, pad: bytes = b"\x00") -> bytes | None:
        """The held partial frame filled to full size with repeats of ``pad``, or None if empty.

        The default pads PCM16 with silence; pass ``b"\\xff"`` for mu-law silence.
        """
        if not pad:
            raise ValueError("pad must not be empty")
        if not self._pending:
            return None
        missing = self.frame_bytes - len(self._pending)
        frame = self._pending + (pad * (missing // len(pad) + 1))[:missing]
        self._pending = b""
        return frame

    def reset(self) -> None:
        """Drop the partial frame (barge-in: the rest of that audio will never play)."""
        self._pending = b""
