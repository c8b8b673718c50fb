"""bridge.core.audio: what a caller would hear go wrong if these failed.

Aliasing (a hiss folded into the voice band), clicks at chunk borders, audio that comes out too
short, too long or at the wrong pitch, and frames of the wrong size all end up on the phone line.
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from bridge.core.audio import (
    FRAME_MS,
    INPUT_RATES,
    OUTPUT_FORMATS,
    PCM_FRAME_BYTES,
    SAMPLE_RATE,
    ULAW_FRAME_BYTES,
    Framer,
    Resampler,
    TtsDecoder,
    pcm_level_dbfs,
    pcm_to_ulaw,
    ulaw_to_pcm,
)
from tests.support import load_wav

RESAMPLED_RATES = [rate for rate in INPUT_RATES if rate != SAMPLE_RATE]
# Tones above 4 kHz that a careless 8 kHz conversion folds back into the voice band.
ALIAS_CASES = [
    (16000, 4500),
    (16000, 5000),
    (16000, 7000),
    (22050, 5000),
    (22050, 6000),
    (22050, 9000),
    (24000, 5000),
    (24000, 6000),
    (24000, 9000),
    (44100, 5000),
    (44100, 6000),
    (44100, 9000),
    (44100, 15000),
]


def sine(freq: float, seconds: float, rate: int, amplitude: float = 16000.0) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    return np.rint(amplitude * np.sin(2 * np.pi * freq * t)).astype(np.int16).tobytes()


def samples(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype=np.int16).astype(np.float64)


def random_chunks(data: bytes, seed: int, largest: int = 1500) -> list[bytes]:
    """``data`` cut at random places, odd byte counts and empty chunks included."""
    rng = random.Random(seed)
    chunks, at = [], 0
    while at < len(data):
        size = rng.randint(0, largest)
        chunks.append(data[at : at + size])
        at += size
    return chunks


def resample_chunked(rate: int, data: bytes, seed: int) -> bytes:
    resampler = Resampler(rate)
    return b"".join(resampler.process(chunk) for chunk in random_chunks(data, seed)) + resampler.flush()


def resample_once(rate: int, data: bytes) -> bytes:
    resampler = Resampler(rate)
    return resampler.process(data) + resampler.flush()


def spectrum_peak(pcm: bytes) -> tuple[float, float]:
    """(frequency in Hz, level in dB) of the strongest component, ignoring 50 ms at each end."""
    x = samples(pcm)[400:-400]
    magnitude = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    peak = int(np.argmax(magnitude))
    return float(np.fft.rfftfreq(len(x), 1 / SAMPLE_RATE)[peak]), 20 * math.log10(magnitude[peak] + 1e-9)


# mu-law


def test_ulaw_round_trip_of_speech_keeps_it_clean() -> None:
    speech = load_wav("caller_01.wav")
    ulaw = pcm_to_ulaw(speech)
    assert len(ulaw) == len(speech) // 2
    back = ulaw_to_pcm(ulaw)
    original, error = samples(speech), samples(back) - samples(speech)
    snr = 10 * math.log10(np.sum(original**2) / np.sum(error**2))
    print(f"mu-law round trip SNR on caller_01.wav: {snr:.1f} dB")
    assert snr > 30


def test_one_frame_of_pcm_is_one_frame_of_ulaw() -> None:
    assert PCM_FRAME_BYTES == SAMPLE_RATE * FRAME_MS // 1000 * 2 == 2 * ULAW_FRAME_BYTES
    assert len(pcm_to_ulaw(bytes(PCM_FRAME_BYTES))) == ULAW_FRAME_BYTES
    assert pcm_level_dbfs(ulaw_to_pcm(b"\xff" * ULAW_FRAME_BYTES)) == -math.inf  # mu-law silence


# Resampler


@pytest.mark.parametrize(("rate", "freq"), ALIAS_CASES)
def test_tones_above_4khz_do_not_fold_into_the_voice_band(rate: int, freq: int) -> None:
    _, reference = spectrum_peak(resample_chunked(rate, sine(1000, 1.0, rate), seed=rate))
    alias_at, alias = spectrum_peak(resample_chunked(rate, sine(freq, 1.0, rate), seed=freq))
    attenuation = reference - alias
    print(f"{rate} Hz input, {freq} Hz tone: {attenuation:.1f} dB below 1 kHz (peak at {alias_at:.0f} Hz)")
    assert attenuation >= 40


@pytest.mark.parametrize("rate", RESAMPLED_RATES)
def test_the_phone_band_passes_at_full_level(rate: int) -> None:
    _, reference = spectrum_peak(resample_once(rate, sine(1000, 1.0, rate)))
    for freq in (300, 3000, 3400):
        at, level = spectrum_peak(resample_once(rate, sine(freq, 1.0, rate)))
        assert at == pytest.approx(freq, abs=2)
        assert level == pytest.approx(reference, abs=1.0), f"{freq} Hz"


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("rate", RESAMPLED_RATES)
def test_chunk_borders_are_inaudible(rate: int, seed: int) -> None:
    amplitude = 20000.0
    data = sine(440, 1.5, rate, amplitude)
    chunked, once = resample_chunked(rate, data, seed), resample_once(rate, data)
    assert len(chunked) == len(once)
    assert np.max(np.abs(samples(chunked) - samples(once))) <= 2
    steady = samples(chunked)[200:-200]  # the filter's start-up ring is not a border
    max_step = 2 * math.pi * 440 / SAMPLE_RATE * amplitude
    assert np.max(np.abs(np.diff(steady))) <= max_step + 4


def test_8khz_passes_through_unchanged_even_in_odd_chunks() -> None:
    data = sine(440, 0.5, SAMPLE_RATE)
    resampler = Resampler(SAMPLE_RATE)
    out = b"".join(resampler.process(chunk) for chunk in random_chunks(data, seed=7, largest=11))
    assert out + resampler.flush() == data
    assert resampler.delay_ms == 0.0


def test_delay_is_what_flush_gives_back_and_flush_starts_a_new_stream() -> None:
    resampler = Resampler(24000)
    data = sine(1000, 0.7, 24000)
    head = resampler.process(data)
    held_ms = resampler.delay_ms
    tail = resampler.flush()
    assert held_ms > 0
    assert len(tail) / 2 / SAMPLE_RATE * 1000 == pytest.approx(held_ms, abs=0.25)
    assert (len(head) + len(tail)) // 2 == SAMPLE_RATE * 0.7
    assert resampler.delay_ms == 0.0
    again = resampler.process(data) + resampler.flush()
    assert np.max(np.abs(samples(again) - samples(head + tail))) <= 2


def test_unsupported_rate_is_refused() -> None:
    with pytest.raises(ValueError, match="48000"):
        Resampler(48000)


# TtsDecoder


def encoded_tone(output_format: str, seconds: float) -> bytes:
    rate = int(output_format.partition("_")[2])
    pcm = sine(1000, seconds, rate, amplitude=12000)
    return pcm_to_ulaw(pcm) if output_format.startswith("ulaw") else pcm


@pytest.mark.parametrize("output_format", OUTPUT_FORMATS)
def test_every_format_decodes_to_8khz_at_the_right_length_and_pitch(output_format: str) -> None:
    decoder = TtsDecoder(output_format)
    chunks = random_chunks(encoded_tone(output_format, 1.0), seed=3, largest=9000)
    out = b"".join(decoder.decode(chunk) for chunk in chunks) + decoder.flush()
    seconds = len(out) / 2 / SAMPLE_RATE
    assert seconds == pytest.approx(1.0, abs=0.001)  # soxr trims its own delay: not even one ms off
    freq, _ = spectrum_peak(out)
    assert freq == pytest.approx(1000, abs=2)
    expected = 20 * math.log10(12000 / math.sqrt(2) / 32768)
    assert pcm_level_dbfs(out[800:-800]) == pytest.approx(expected, abs=0.5)


@pytest.mark.parametrize("name", ["mp3_44100_128", "pcm_48000", "ulaw", ""])
def test_unknown_format_is_refused_by_name(name: str) -> None:
    with pytest.raises(ValueError, match=f"'{name}'"):
        TtsDecoder(name)


# Framer


def test_framer_emits_exact_frames_and_carries_the_rest() -> None:
    framer = Framer(PCM_FRAME_BYTES)
    data = bytes(range(256)) * 10  # 2560 bytes: exactly 8 frames
    frames: list[bytes] = []
    pushed = 0
    for chunk in random_chunks(data, seed=11, largest=700):
        frames += framer.push(chunk)
        pushed += len(chunk)
        assert framer.pending < PCM_FRAME_BYTES
        assert len(frames) * PCM_FRAME_BYTES + framer.pending == pushed
    assert all(len(frame) == PCM_FRAME_BYTES for frame in frames)
    assert b"".join(frames) == data
    assert framer.pending == 0


def test_framer_keeps_byte_order_across_pushes() -> None:
    framer = Framer(4)
    assert framer.push(b"abc") == []
    assert framer.pending == 3
    assert framer.push(b"defghij") == [b"abcd", b"efgh"]
    assert framer.pending == 2
    assert framer.push(b"kl") == [b"ijkl"]
    assert framer.pending == 0


def test_framer_flush_pads_the_last_frame() -> None:
    framer = Framer(ULAW_FRAME_BYTES)
    framer.push(b"\x01" * 200)
    assert framer.flush(pad=b"\xff") == b"\x01" * 40 + b"\xff" * 120
    assert framer.pending == 0
    assert framer.flush() is None
    framer.push(b"\x01" * 3)
    assert framer.flush(pad=b"\x00\x00") == b"\x01" * 3 + b"\x00" * 157


def test_framer_reset_drops_the_partial_frame() -> None:
    framer = Framer(PCM_FRAME_BYTES)
    framer.push(b"\x01" * 100)
    framer.reset()
    assert framer.pending == 0
    assert framer.push(b"\x02" * PCM_FRAME_BYTES) == [b"\x02" * PCM_FRAME_BYTES]


# Levels


def test_level_in_dbfs() -> None:
    assert pcm_level_dbfs(bytes(PCM_FRAME_BYTES)) == -math.inf
    assert pcm_level_dbfs(sine(1000, 0.1, SAMPLE_RATE, 32767)) == pytest.approx(-3.01, abs=0.05)
    assert pcm_level_dbfs(sine(1000, 0.1, SAMPLE_RATE, 3277)) == pytest.approx(-23.0, abs=0.05)
    assert pcm_level_dbfs(b"\x00\x10\x00") == pcm_level_dbfs(b"\x00\x10")  # dangling byte ignored


# 16 kHz to 8 kHz: a fixed short delay


def test_16khz_audio_comes_out_as_it_goes_in_not_in_bursts() -> None:
    """Every chunk of a 16 kHz stream gives back all but 2 ms of itself at once, from the first."""
    resampler = Resampler(16000)
    data = sine(1000, 1.0, 16000)
    fed = out = 0
    for chunk in random_chunks(data, seed=5, largest=1200):
        fed += len(chunk) // 2
        out += len(resampler.process(chunk)) // 2
        if fed >= 64:
            assert (fed - out * 2) / 16 <= 2.2, "no more than 2 ms held back"
    assert resampler.delay_ms <= 2.0


def test_16khz_flush_delivers_every_sample_in_place() -> None:
    data = sine(1000, 0.5, 16000, amplitude=12000)
    resampler = Resampler(16000)
    out = resampler.process(data) + resampler.flush()
    assert len(out) // 2 == 4000, "half as many samples, none lost"
    assert resampler.delay_ms == 0.0
    reference = np.frombuffer(sine(1000, 0.5, 8000, amplitude=12000), dtype=np.int16).astype(np.float64)
    middle = slice(80, -80)  # the same tone at the same moments: no shift
    assert np.max(np.abs(samples(out)[middle] - reference[middle])) < 120
    again = resampler.process(data) + resampler.flush()
    assert again == out, "flush leaves the resampler ready for a new stream"


def test_16khz_keeps_a_1khz_tone_at_its_level_and_rejects_5khz() -> None:
    tone = resample_once(16000, sine(1000, 1.0, 16000, amplitude=12000))
    expected = 20 * math.log10(12000 / math.sqrt(2) / 32768)
    assert pcm_level_dbfs(tone[800:-800]) == pytest.approx(expected, abs=0.2)
    above = resample_once(16000, sine(5000, 1.0, 16000, amplitude=12000))
    assert pcm_level_dbfs(above[800:-800]) < expected - 60
