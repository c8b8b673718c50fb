"""A judge without a model: the transcript's last words, and the fall of pitch and loudness at the end.

Always available (numpy only), and cheap (well under a millisecond of text rules, a few ms of
pitch tracking). What it uses:

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
  normalised peak passes 0.5) of the end against the turn's median. English statements and
  wh-questions end in a fall; a level or rising end (list intonation, "for...", "and...") keeps
  the floor. A fall of 8 % or more scores +1, a rise of 3 % or more -1, in between 0;
* loudness: the last 200 ms against the turn's median speech level: 6 dB down or more scores +1
  (speakers trail off at a sentence end), within 2 dB scores -1.

The audio score maps to 0.5 ± 0.25 (pitch) ± 0.1 (loudness). With text, the verdict leans on the
text when the text is decisive (≤ 0.2 or ≥ 0.8: 80 % text) and averages the two otherwise.
"""

from __future__ import annotations

import re
from typing import Final

import numpy as np
from numpy.typing import NDArray

from bridge.turn.base import TurnJudge, TurnVerdict, WaitPolicy

__all__ = ["HeuristicJudge", "PitchTrack", "audio_prob", "text_prob"]



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
    x = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").astype(np.float64) / 32768.0
    hop, size = rate // 100, rate * 40 // 1000
    if x.size < size * 4:
        return None
    frames = np.lib.stride_tricks.sliding_window_view(x, size)[::hop]
    level = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
    speech = level > level.max() - 30.0
    last = int(np.flatnonzero(speech)[-1])
    if track is not None:
        f0 = track.f0(pcm, frames, rate)
    else:
        f0 = np.zeros(len(frames))
        f0[speech] = _pitch(frames[speech], rate)  # only speech frames can count as voiced
    voiced = speech & (f0 > 0)
    if voiced.sum() < 10:
        return None
    end_voiced = np.flatnonzero(voiced[: last + 1])[-30:]  # the last ~300 ms of voiced frames
    fall = float(np.median(f0[end_voiced]) / np.median(f0[voiced]))
    pitch_score = 1 if fall <= 0.92 else -1 if fall >= 1.03 else 0
    drop = float(np.median(level[speech]) - np.mean(level[max(0, last - 19) : last + 1]))
    loud_score = 1 if drop >= 6.0 else -1 if drop <= 2.0 else 0
    return 0.5 + 0.25 * pitch_score + 0.1 * loud_score


def _pitch(frames: NDArray[np.float64], rate: int) -> NDArray[np.float64]:
    """F0 per frame by normalised autocorrelation (0 where unvoiced), 60-400 Hz."""
    lo, hi = rate // 400, rate // 60
    centred = frames - frames.mean(axis=1, keepdims=True)
    n = frames.shape[1]
    spectrum = np.fft.rfft(centred, 2 * n, axis=1)
    ac = np.fft.irfft(np.abs(spectrum) ** 2, axis=1)[:, : hi + 1]
    energy = ac[:, :1] + 1e-12
    lags = np.arange(lo, hi + 1)
    norm = ac[:, lo : hi + 1] / energy * (n / (n - lags))  # unbiased, so long lags are not penalised
    top = norm.max(axis=1, keepdims=True)
    best = np.argmax(norm >= 0.9 * top, axis=1)  # the shortest lag near the top: not an octave below
    peak = norm[np.arange(norm.shape[0]), best]
    return np.where(peak > 0.5, rate / (best + lo), 0.0)


class PitchTrack:
    """The pitch of one caller's utterance as it grows, kept from one candidate end to the next.

    A call asks the judge at every candidate end of a turn, each time with the turn so far: the
    same audio and a little more. Each 40 ms frame's pitch depends on that frame alone, so the
    frames of the audio already judged keep theirs and only the new ones are tracked. (Before,
    the whole utterance was tracked at every candidate: the judge was a fifth of a saturated
    worker's CPU, docs/benchmarks.md.) Audio that does not begin with the last is tracked anew.
    One per call (its judge's). Two judgements of a call may overlap in worker threads: the state
    is read and replaced whole, so an overlap only costs a recomputation."""

    __slots__ = ("_state",)

    def __init__(self) -> None:
        self._state: tuple[bytes, NDArray[np.float64]] = (b"", np.zeros(0))

    def f0(self, pcm: bytes, frames: NDArray[np.float64], rate: int) -> NDArray[np.float64]:
        """F0 of every frame of ``pcm`` (``frames``, as `audio_prob` cuts them), 0 where unvoiced."""
        seen, known = self._state
        reuse = min(len(known), len(frames)) if seen and pcm.startswith(seen) else 0
        f0 = np.empty(len(frames))
        f0[:reuse] = known[:reuse]
        if reuse < len(frames):
            f0[reuse:] = _pitch(frames[reuse:], rate)
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
