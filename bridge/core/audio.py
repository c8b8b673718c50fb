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


def _half_band_taps() -> np.ndarray:
    """A low-pass FIR for 2:1 decimation: Kaiser-windowed sinc, cut-off 0.247 of the input rate
    (3.95 kHz from 16 kHz), 65 taps, beta 5.65 (about 60 dB down in the stop band).

    Measured (tests/core/test_audio.py): 300-3400 Hz within 1 dB of 1 kHz; tones of 4.5 kHz
    and up folded back at least 60 dB down (4.5 kHz 62, 5 kHz 72, 7 kHz 79)."""
    n = np.arange(HalfBand.TAPS) - HalfBand.DELAY
    taps = 2 * 0.247 * np.sinc(2 * 0.247 * n) * np.kaiser(HalfBand.TAPS, 5.65)
    out: np.ndarray = (taps / taps.sum()).astype(np.float32)
    return out


class HalfBand:
    """Streaming 2:1 decimator (16 kHz to 8 kHz) with a fixed delay of 2 ms, as libsoxr's
    interface (`resample_chunk`, `clear`, `delay`) so that `Resampler` can use either.

    libsoxr ("MQ") filters in blocks and holds 10-120 ms of a stream back, releasing it in bursts:
    the first audio of every TTS context came late, and the playout's lead held less than it
    counted on (docs/benchmarks.md, "short calls"). A 65-tap FIR holds back exactly its 32-sample
    half (2 ms at 16 kHz), chunk after chunk. Its output is trimmed by that half, so the output
    lines up with the input from the first sample and a flushed stream is exactly half as long
    as what went in (odd counts round up); chunk borders change nothing but the rounding of a
    sample now and then (the filter's history carries over; `_band_matrix`)."""

    TAPS: Final = 65
    DELAY: Final = 32  # input samples: the filter's centre

    __slots__ = ("_history", "_phase", "_skip")

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        """A new stream: no history, output starts at its first sample."""
        self._history = np.zeros(self.TAPS - 1, np.float32)
        self._phase = 0  # where in the next input the next kept (even) sample falls: 0 or 1
        self._skip = self.DELAY // 2  # outputs that only hold the filter's start-up

    def delay(self) -> float:
        """Output samples fed in but not yet returned (libsoxr's ``delay()``): the filter's half."""
        return float(self.DELAY // 2 - self._skip)

    def resample_chunk(self, x: np.ndarray, last: bool = False) -> np.ndarray:
        if last:  # push the held half through with silence
            x = np.concatenate((x, np.zeros(self.DELAY, dtype=np.int16)))
        n, phase = len(x), self._phase
        count = (n - phase + 1) // 2  # output k is the neighbourhood of input 2k + phase (after the history)
        # Only the kept outputs are computed, in blocks of `_BLOCK`: the input (history first, then
        # zeros past its end) cut into rows of two blocks' samples, each row times the band matrix,
        # the next row's first 64 samples times its tail. Two matrix products for the whole chunk:
        # numpy's per-call cost, not the arithmetic, is what a 2:1 FIR of 65 taps costs here.
        rows = -(-count // _BLOCK) + 1
        buf = np.zeros(phase + rows * 2 * _BLOCK, np.float32)
        buf[: self.TAPS - 1] = self._history
        buf[self.TAPS - 1 : self.TAPS - 1 + n] = x
        self._history = buf[n : n + self.TAPS - 1].copy()
        blocks = buf[phase : phase + rows * 2 * _BLOCK].reshape(rows, 2 * _BLOCK)
        filtered = blocks[:-1] @ _HEAD
        filtered += blocks[1:, : self.TAPS - 1] @ _TAIL
        filtered = filtered.reshape(-1)[:count]
        self._phase = (phase + n) % 2
        if self._skip:
            cut = min(self._skip, len(filtered))
            filtered = filtered[cut:]
            self._skip -= cut
        out: np.ndarray = np.clip(np.rint(filtered), -32768, 32767).astype(np.int16)
        if last:
            self.clear()
        return out


def _band_matrix() -> tuple[np.ndarray, np.ndarray]:
    """`HalfBand`'s filter as the matrix that maps two blocks' input (and the 64 samples after
    them) to one block's output: column k holds the taps from row 2k. Split at the block's end.
    In float32, a third of float64's cost on every TTS chunk of a 16 kHz voice (the largest part
    of the short calls' TTS path in the load's profile): the sums are off by up to 0.005 of an
    int16 step, so now and then a sample (one in ten thousand, over six speech clips) rounds to
    the step beside the exact one (-96 dB, where µ-law's own steps are 30 dB coarser), and chunk
    borders move it by no more."""
    band = np.zeros((2 * _BLOCK + HalfBand.TAPS - 1, _BLOCK))
    for k in range(_BLOCK):
        band[2 * k : 2 * k + HalfBand.TAPS, k] = _TAPS[::-1]
    return band[: 2 * _BLOCK].astype(np.float32), band[2 * _BLOCK :].astype(np.float32)


_TAPS: Final = _half_band_taps()
_BLOCK: Final = 32  # outputs per row of the matrix products (measured fastest of 32, 64, 128)
_HEAD, _TAIL = _band_matrix()


class Resampler:
    """Streaming PCM16 mono resampler from ``in_rate`` to ``out_rate`` (the phone path's rate, 8 kHz
    unless the carrier's is 16), for one continuous stream.

    Why not `audioop.ratecv`: it interpolates without a low-pass filter, so a 5 kHz sibilant in
    16 kHz speech folds to 3 kHz at full strength. libsoxr filters first, and keeps its filter
    history across calls to `process`, so chunk borders leave no clicks. Chunks may have any size,
    odd byte counts included: a trailing half sample is held until the next chunk completes it.

    libsoxr filters in blocks, so some output lags the input (see `delay_ms`); `flush` releases it
    at the end of the stream and leaves the resampler ready for a new, unrelated stream. From
    exactly twice ``out_rate`` (16 kHz TTS audio or a 16 kHz carrier, to 8 kHz) a `HalfBand` FIR
    does it instead, holding back a fixed 2 ms rather than libsoxr's 10-120 ms.
    Input at ``out_rate`` passes through unchanged (still re-pairing odd bytes).
    """

    __slots__ = ("_carry", "_stream", "in_rate", "out_rate")

    def __init__(self, in_rate: int, out_rate: int = SAMPLE_RATE) -> None:
        if in_rate not in INPUT_RATES:
            raise ValueError(f"unsupported input rate {in_rate} Hz; expected one of {INPUT_RATES}")
        self.in_rate: Final = in_rate
        self.out_rate: Final = out_rate
        self._carry = b""
        self._stream: soxr.ResampleStream | HalfBand | None = None
        if in_rate == 2 * out_rate:
            self._stream = HalfBand()
        elif in_rate != out_rate:
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
        75-120 ms just before a block completes, 45-65 ms on average; 2 ms for `HalfBand` (2:1).
        `flush` returns it.
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
