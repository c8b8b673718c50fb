"""A judge without a model: the transcript's last words, and the fall of pitch and loudness at the end.

Always available (numpy only), and cheap (well under a millisecond of text rules, about a
millisecond of pitch tracking for a turn of a few seconds, not much more for a minute). What it uses:

**Text** (when an STT gives a transcript), on its last words:

* ends with ``?`` → 0.9; with ``.`` or ``!`` → 0.8 (an STT that punctuates has heard a sentence end);
* ends with a comma, a dash or an ellipsis → 0.15 (the STT heard the caller mid-sentence);
* ends with a word that rarely ends an English sentence: a conjunction (and, but, or, so,
  because, if...), a filler (um, uh, er, like), a preposition (for, to, of, with...), an article
  or a possessive (a, the, my, your...) → 0.1; "and then", "so then" and the like count too.
  Pronouns, modals and "that" stay out ("thank you", "yes I can", "I want that"); a stranded
  preposition ("what is it for") is the known miss;
* ends with numbers being read out (two or more number words or digits in a row, or one after
  "number", "code", "card"...), or with "my number is" and the like → 0.2: phone and card
  numbers come in groups with pauses;
* anything else → 0.6: most turns end where people stop, but without punctuation we cannot tell.

**Audio** (always): the caller's last 300 ms of voiced speech against the whole turn.

* pitch: the median F0 (autocorrelation, 60-400 Hz, 40 ms frames every 10 ms, voiced when the
  normalised peak passes 0.5) of the end against the turn's median (every frame of a turn up to
  2.6 s of speech, an even sample of a longer one; `prosody`). English statements and
  wh-questions end in a fall; a level or rising end (list intonation, "for...", "and...") keeps
  the floor. A fall of 8 % or more scores +1, a rise of 3 % or more -1, in between 0;
* loudness: the last 200 ms against the turn's median speech level: 6 dB down or more scores +1
  (speakers trail off at a sentence end), within 2 dB scores -1.

The audio score maps to 0.5 ± 0.25 (pitch) ± 0.1 (loudness): at most 0.85 (`AUDIO_MOST`), short of
the core's ``turn.confident_audio`` (0.9 by default), so without words its verdict changes nothing and the shell
does not ask for it (`bridge.server.listening`). With text, the verdict leans on the
text when the text is decisive (≤ 0.2 or ≥ 0.8: 80 % text) and averages the two otherwise.
"""

from __future__ import annotations

import re
from typing import Final

import numpy as np
from numpy.typing import NDArray

from bridge.turn.base import TurnJudge, TurnVerdict, WaitPolicy

__all__ = ["AUDIO_MOST", "HeuristicJudge", "PitchTrack", "audio_prob", "prosody", "text_prob"]



def _set(words: str) -> frozenset[str]:
    return frozenset(words.split())


_CONTINUING: Final = _set(
    "and but or nor so because cause if when while although though unless until than whether "
    "um uh er erm ah hmm like "
    "for to of with from about into onto at in on by as per via "
    "a an the my your our their "
    "i gonna wanna"
)
_CONTINUING_PAIRS: Final = frozenset({("and", "then"), ("so", "then"), ("and", "also"), ("but", "then")})
_NUMBERS: Final = _set("zero oh one two three four five six seven eight nine ten double triple")
_NUMBER_CUES: Final = _set("number numbers phone card code zip postcode account digits pin extension")
_WORD = re.compile(r"[a-z0-9']+")


def text_prob(transcript: str) -> float | None:
    """P(complete) from the words alone; None when there are no words."""
    text = transcript.strip().lower()
    words = _WORD.findall(text)
    if not words:
        return None
    if text.endswith("?"):
        return 0.9
    if text.endswith((",", "-", "…", "...", ";", ":")):
        return 0.15
    if text.endswith((".", "!")):
        return 0.8
    if words[-1] in _CONTINUING or tuple(words[-2:]) in _CONTINUING_PAIRS:
        return 0.1
    if words[-1] in ("is", "was", "s") and any(w in _NUMBER_CUES for w in words[-3:]):
        return 0.2  # "my number is", "the code was": the digits are coming
    if _is_number(words[-1]) and (
        (len(words) >= 2 and _is_number(words[-2])) or any(w in _NUMBER_CUES for w in words[-6:])
    ):
        return 0.2
    return 0.6


def _is_number(word: str) -> bool:
    return word in _NUMBERS or word.isdigit()


def audio_prob(pcm: bytes, rate: int, track: PitchTrack | None = None) -> float | None:
    """P(complete) from the end's pitch and loudness; None when there is too little voiced speech.
    ``track``: the pitch already found in an earlier, shorter version of the same utterance."""
    found = prosody(pcm, rate, track)
    if found is None:
        return None
    fall, drop = found
    pitch_score = 1 if fall <= 0.92 else -1 if fall >= 1.03 else 0
    loud_score = 1 if drop >= 6.0 else -1 if drop <= 2.0 else 0
    return 0.5 + _PITCH * pitch_score + _LOUDNESS * loud_score


_PITCH: Final = 0.25
_LOUDNESS: Final = 0.1
AUDIO_MOST: Final = 0.5 + _PITCH + _LOUDNESS  # the surest `audio_prob`: a fall of both


_END_VOICED: Final = 30  # the end's voiced frames (~300 ms) whose median pitch is compared
_BODY_FRAMES: Final = 256  # most speech frames read for the utterance's median pitch (see `prosody`)
_BATCH_BYTES: Final = 128 * 1024  # an FFT batch's spectrum (31 frames at 8 kHz; see `_fill`)


def prosody(pcm: bytes, rate: int, track: PitchTrack | None = None) -> tuple[float, float] | None:
    """The end's pitch against the utterance's (``fall``: the ratio of their medians) and the fall
    of loudness over the last 200 ms (``drop``, dB); None when there is too little voiced speech.

    Pitch is tracked only where the verdict reads it, so a long turn costs about what a short one
    does: the end's last 30 voiced frames, every one, back from the last frame of speech; and for
    the utterance's median, every speech frame of a turn up to 256 of them (2.6 s of speech), and
    of a longer one every 2nd, 4th... (the frames whose index is a multiple of that power of two,
    so a growing turn keeps those it already has). On 20 s and 15 s of one espeak-ng voice, cut
    every 100 ms, that sample moved the fall by 2.7 % at most and changed no verdict; a 20 s turn
    costs 1.6 ms instead of 12 (docs/benchmarks.md)."""
    x = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").astype(np.float64) / 32768.0
    hop = rate // 100
    size = 4 * hop  # 40 ms frames every 10 ms
    if x.size < size * 4:
        return None
    level = 10 * np.log10(_energies(x, hop, size) + 1e-12)
    speech = np.flatnonzero(level > level.max() - 30.0)
    last = int(speech[-1])
    f0 = (track or PitchTrack()).start(pcm, len(level))
    frames = np.lib.stride_tricks.sliding_window_view(x, size)[::hop]
    # the end: speech frames back from the last, a batch at a time, until 30 of them are voiced
    reach = 0
    while True:
        reach = min(len(speech), reach + 2 * _END_VOICED)
        end = speech[-reach:]
        _fill(f0, end, frames, rate)
        end_voiced = end[f0[end] > 0][-_END_VOICED:]
        if len(end_voiced) == _END_VOICED or reach == len(speech):
            break
    stride = 1 << max(0, int(np.ceil(np.log2(len(speech) / _BODY_FRAMES))))
    body = speech[speech % stride == 0] if stride > 1 else speech
    _fill(f0, body, frames, rate)
    voiced = body[f0[body] > 0]
    if len(voiced) < 10:
        return None
    fall = float(np.median(f0[end_voiced]) / np.median(f0[voiced]))
    drop = float(np.median(level[speech]) - np.mean(level[max(0, last - 19) : last + 1]))
    return fall, drop


def _energies(x: NDArray[np.float64], hop: int, size: int) -> NDArray[np.float64]:
    """Mean square of each ``size``-sample frame every ``hop`` samples, from the hops' own sums
    (a frame is ``size // hop`` whole hops), so no sample is squared more than once."""
    per_frame = size // hop
    count = (x.size - size) // hop + 1
    hops = x[: (count + per_frame - 1) * hop].reshape(-1, hop)
    sums = np.convolve(np.einsum("ij,ij->i", hops, hops), np.ones(per_frame), "valid")
    return np.asarray(sums / size)


def _fill(f0: NDArray[np.float64], idx: NDArray[np.intp], frames: NDArray[np.float64], rate: int) -> None:
    """Track the pitch of the frames ``idx`` not yet tracked (NaN in ``f0``), in batches of about
    128 KiB of spectrum. Larger ones cost page faults: with 64 frames at 8 kHz (260 KiB) a fresh
    process took ~500 faults and twice the CPU per judgement, glibc mapping arrays that large
    anew or trimming the heap under them at every batch; smaller ones cost more numpy calls."""
    todo = idx[np.isnan(f0[idx])]
    rows = max(1, _BATCH_BYTES // (16 * (_padded(frames.shape[1], rate) // 2 + 1)))
    for at in range(0, len(todo), rows):
        batch = todo[at : at + rows]
        f0[batch] = _pitch(frames[batch], rate)


def _padded(n: int, rate: int) -> int:
    """The FFT size for ``n``-sample frames: a power of two past the frame and its longest lag, so
    the circular autocorrelation is the plain one at every lag read."""
    return 1 << (n + rate // 60).bit_length()


def _pitch(frames: NDArray[np.float64], rate: int) -> NDArray[np.float64]:
    """F0 per frame by normalised autocorrelation (0 where unvoiced), 60-400 Hz."""
    lo, hi = rate // 400, rate // 60
    n = frames.shape[1]
    centred = frames - frames.mean(axis=1, keepdims=True)
    padded = _padded(n, rate)
    spectrum = np.fft.rfft(centred, padded, axis=1)
    spectrum *= spectrum.conj()  # the power, kept complex: irfft converts a real input slowly
    ac = np.fft.irfft(spectrum, padded, axis=1)[:, : hi + 1]
    energy = ac[:, :1] + 1e-12
    lags = np.arange(lo, hi + 1)
    norm = ac[:, lo : hi + 1] * ((n / (n - lags)) / energy)  # unbiased, so long lags are not penalised
    top = norm.max(axis=1, keepdims=True)
    best = np.argmax(norm >= 0.9 * top, axis=1)  # the shortest lag near the top: not an octave below
    peak = norm[np.arange(norm.shape[0]), best]
    return np.where(peak > 0.5, rate / (best + lo), 0.0)


class PitchTrack:
    """The pitch of one caller's utterance as it grows, kept from one candidate end to the next.

    A call asks the judge at every candidate end of a turn, each time with the turn so far: the
    same audio and a little more. Each 40 ms frame's pitch depends on that frame alone, so the
    frames of the audio already judged keep theirs and only the new ones are tracked. Audio that
    does not begin with the last is tracked anew. One per call (its judge's). Two judgements of a
    call may overlap in worker threads: the state is replaced whole, and its pitch is filled in
    only with final values (NaN until then), so an overlap only costs a recomputation."""

    __slots__ = ("_state",)

    def __init__(self) -> None:
        self._state: tuple[bytes, NDArray[np.float64]] = (b"", np.zeros(0))

    def start(self, pcm: bytes, count: int) -> NDArray[np.float64]:
        """The F0 of ``pcm``'s ``count`` frames as far as known (NaN: not tracked yet), to be
        filled in place; it becomes what the next, longer version of ``pcm`` starts from."""
        seen, known = self._state
        reuse = min(len(known), count) if seen and pcm.startswith(seen) else 0
        f0 = np.full(count, np.nan)
        f0[:reuse] = known[:reuse]
        self._state = (pcm, f0)
        return f0


class HeuristicJudge:
    """Text rules plus the end's prosody; ``use_text=False`` judges the audio alone.

    ``audio``: another judge (the model) to hear the audio instead of the prosody rules, so the
    text rules can overrule it where the words are decisive: ``HeuristicJudge(audio=SmartTurnJudge())``.
    """

    name = "heuristic"

    def __init__(self, *, policy: WaitPolicy | None = None, use_text: bool = True,
                 audio: TurnJudge | None = None) -> None:
        self.policy = policy or WaitPolicy()
        self.use_text = use_text
        self.audio = audio
        self.track = PitchTrack()  # one judge per call: its utterances grow from candidate to candidate
        self.audio_most = audio.audio_most if audio is not None else AUDIO_MOST
        base = audio.name if audio is not None else "heuristic"
        self.name = f"{base}+text" if use_text and audio is not None else base if use_text else f"{base}-audio"

    def judge(self, pcm: bytes, rate: int, transcript: str | None = None) -> TurnVerdict:
        by_text = text_prob(transcript) if self.use_text and transcript is not None else None
        by_audio: float | None
        if self.audio is not None:
            by_audio = self.audio.judge(pcm, rate).complete_prob
        else:
            by_audio = audio_prob(pcm, rate, self.track)
        if by_text is None:
            prob = by_audio if by_audio is not None else 0.5
        elif by_audio is None:
            prob = by_text
        elif by_text <= 0.2 or by_text >= 0.8:
            prob = 0.8 * by_text + 0.2 * by_audio
        else:
            prob = (by_text + by_audio) / 2
        return self.policy.verdict(prob, self.name)
