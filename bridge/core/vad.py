"""When is the caller talking? webrtcvad per frame, an optional gate, and hysteresis in time.

A single frame's verdict is noisy: a click, a breath or a burst of line noise can be flagged
as speech. A turn needs a steadier signal, so speech *starts* only after ``start_ms`` of
voiced frames in a row and *ends* only after ``end_ms`` of unvoiced frames in a row. A fresh
webrtcvad flags noise in its first few frames (measured: 4–6 frames), so the first
``warmup_ms`` of a call never count.

Between start and end sits the *confirmation* that soft barge-in needs: a sound that stops
(``gap_ms`` of silence) within ``confirm_ms`` of its start is `SpeechDropped` (a cough, a
click, an "mhm"); one still going by then is `SpeechConfirmed`. ``confirm_ms = 0`` confirms
every start at once; ``None`` (the default) reports only starts and ends. The detector
reports; its owner decides, and only `discard` forgets a sound.

webrtcvad cannot tell the caller from noise it likes, keypad tones or the agent's own echo, so
a *gate* (``bridge.core.bargein.LineGate``) judges every frame. A frame is then silent, *voiced*
(surely the caller) or *masked*: speech-like, but no louder than our echo could be. Masked
frames keep a run going without proving anything: a start needs half of its ``start_ms``
voiced, confirmation needs a voiced frame, and a masked frame neither confirms a tentative
sound nor counts towards the silence that drops it. With no echo around, nothing is masked
and this is the plain "``start_ms`` voiced in a row" rule.

The detector has no clock: each chunk of audio comes with the time it arrived, and every
frame inside it gets a time from its position in the stream. That is what lets the tuning
tool replay a recording through the very code the live path runs.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass
from typing import Protocol

import webrtcvad

from bridge.core.limits import one_of, within
from bridge.core.voicing import measure

__all__ = [
    "Change",
    "FrameGate",
    "FrameVerdict",
    "SpeechConfirmed",
    "SpeechDetector",
    "SpeechDropped",
    "SpeechEnded",
    "SpeechPaused",
    "SpeechResumed",
    "SpeechStarted",
    "VadConfig",
]

SAMPLE_RATE = 8000
BYTES_PER_MS = SAMPLE_RATE * 2 // 1000
_EPS = 1e-6
TAIL_DB = 28.0
"""While the caller speaks, a frame this far below the sound's loudest voiced frame is silence, even
if webrtcvad says "speech": it is the voice's decay or a breath. Measured on tests/audio/turns (20
clips, eight voices): the end of speech then falls on the last frame above -40 dBFS on every clip
(``python -m bench.pipeline``); 24 dB cut real quiet words, 32 dB left 60-100 ms of tail on 5 clips."""


@dataclass(frozen=True, slots=True)
class VadConfig:
    aggressiveness: int = one_of(3, 0, 1, 2, 3)
    frame_ms: int = one_of(20, 10, 20, 30)
    start_ms: int = within(100, 10, 10_000)
    end_ms: int = within(600, 10, 60_000)
    warmup_ms: int = within(200, 0, 10_000)
    snr_db: float = within(6.0, 0.0, 40.0)  # a voiced frame's least lead over the line's noise floor (0: no gate)
    reject_tones: bool = True  # DTMF keypad tones are never speech

    def __post_init__(self) -> None:
        if self.aggressiveness not in (0, 1, 2, 3):
            raise ValueError("aggressiveness must be 0, 1, 2 or 3")
        if self.frame_ms not in (10, 20, 30):
            raise ValueError("frame_ms must be 10, 20 or 30 (webrtcvad's frame sizes)")
        if self.start_ms < self.frame_ms or self.end_ms < self.frame_ms:
            raise ValueError("start_ms and end_ms must be at least one frame")


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """Caller sound at ``at``; it began at ``onset`` (first voiced frame of the run)."""

    at: float
    onset: float


@dataclass(frozen=True, slots=True)
class SpeechConfirmed:
    """The sound that began at ``onset`` lasted past the confirmation window: it is speech."""

    at: float
    onset: float


@dataclass(frozen=True, slots=True)
class SpeechDropped:
    """The sound that began at ``onset`` stopped inside the confirmation window, at ``offset``."""

    at: float
    onset: float
    offset: float


@dataclass(frozen=True, slots=True)
class SpeechEnded:
    """Caller silent for ``end_ms`` by ``at``; the speech stopped at ``offset``."""

    at: float
    offset: float


@dataclass(frozen=True, slots=True)
class SpeechPaused:
    """Speech went quiet for ``pause_ms`` by ``at`` (it stopped at ``offset``): a candidate end of
    turn, reported before `SpeechEnded` so the owner can start thinking about a reply early.
    ``silence``: the seconds of audio heard since ``offset`` (whole frames, whatever the clock did)."""

    at: float
    offset: float
    silence: float = 0.0


@dataclass(frozen=True, slots=True)
class SpeechResumed:
    """Speech came back at ``at`` after a `SpeechPaused`, before `SpeechEnded`: no end of turn."""

    at: float


Change = SpeechStarted | SpeechConfirmed | SpeechDropped | SpeechEnded | SpeechPaused | SpeechResumed


@dataclass(frozen=True, slots=True)
class FrameVerdict:
    """One frame's decision and why, for tuning tools and plots (levels in dBFS).

    ``vad`` is webrtcvad's own answer, ``voiced`` the one after the gate; ``floor`` is the noise
    floor and ``echo`` the echo guard's threshold (None: nothing of ours could echo; or, where the
    verdicts are not kept, the threshold could veto nothing in this frame and was not worked out).
    """

    end: float
    voiced: bool
    counted: bool
    vad: bool = False
    level: float = -80.0
    floor: float = -80.0
    echo: float | None = None
    tone: bool = False
    masked: bool = False  # speech-like, but no louder than our own echo could be
    faint: bool = False  # speech-like, but no louder than the line's noise: nobody is talking


class FrameGate(Protocol):
    """Vetoes frames webrtcvad calls speech; sees every frame, voiced or not."""

    def judge(self, frame: bytes, end: float, vad: bool, strict: bool) -> FrameVerdict: ...

    def settled(self, verdict: FrameVerdict, idle: bool) -> None: ...


class _Phase(enum.Enum):
    IDLE = "idle"
    TENTATIVE = "tentative"  # started, not yet confirmed or dropped
    SPEAKING = "speaking"


class SpeechDetector:
    """webrtcvad, a gate and hysteresis over a stream of PCM16 chunks at ``rate`` (8 or 16 kHz:
    webrtcvad takes both, and the phone path's rate is the carrier's, `CallSettings.audio`)."""

    def __init__(
        self,
        config: VadConfig,
        *,
        gate: FrameGate | None = None,
        confirm_ms: int | None = None,
        gap_ms: int = 100,
        commit_ms: int = 0,
        pause_ms: int = 0,
        keep_verdicts: bool = False,
        rate: int = SAMPLE_RATE,
    ) -> None:
        """``pause_ms`` (0: off; below ``end_ms``): report `SpeechPaused` after this much silence
        within speech, and `SpeechResumed` if speech comes back before its end."""
        self.config = config
        self._rate = rate
        self._vad = webrtcvad.Vad(config.aggressiveness)
        self._gate = gate
        self._frame_bytes = config.frame_ms * rate * 2 // 1000
        self._frame_s = config.frame_ms / 1000
        self._start_frames = -(-config.start_ms // config.frame_ms)
        self._end_frames = -(-config.end_ms // config.frame_ms)
        self._gap_frames = max(1, min(-(-gap_ms // config.frame_ms), self._end_frames))
        self._warmup_frames = -(-config.warmup_ms // config.frame_ms)
        pause_frames = -(-pause_ms // config.frame_ms)
        self._pause_frames = pause_frames if 0 < pause_frames < self._end_frames else 0
        self._confirm_s = None if confirm_ms is None else confirm_ms / 1000
        self._commit_s = commit_ms / 1000 if commit_ms and confirm_ms else None
        self._run_frames: deque[bytes] = deque(maxlen=self._start_frames)  # the speech-like run's audio
        self._sound_frames: list[bytes] = []  # a tentative sound's voiced audio, for the early commit
        self._shape_judged = False
        self._pending = b""
        self._frames_seen = 0
        self._need = -(-self._start_frames // 2)  # sure frames a start needs when echo masks some
        self._run = 0  # speech-like frames in a row
        self._recent: deque[float | None] = deque(maxlen=self._start_frames)  # their ends, None if masked
        self._silent_run = 0
        self._last_voiced_end = 0.0
        self._phase = _Phase.IDLE
        self._onset = 0.0
        self._started_at = 0.0
        self._peak = -200.0  # the loudest voiced frame of the sound in progress (dBFS)
        self.verdicts: list[FrameVerdict] | None = [] if keep_verdicts else None

    @property
    def speaking(self) -> bool:
        """A sound has started and not yet ended (confirmed or not)."""
        return self._phase is not _Phase.IDLE

    def discard(self) -> None:
        """Forget the sound in progress: it was nothing. The next voiced run starts afresh."""
        self._phase = _Phase.IDLE
        self._run = 0
        self._recent.clear()
        self._run_frames.clear()
        self._silent_run = 0

    def feed(self, pcm: bytes, at: float) -> list[Change]:
        """Take a chunk that arrived at ``at`` (its last sample); return any change of state."""
        data = self._pending + pcm if self._pending else pcm
        size = self._frame_bytes
        whole = len(data) - len(data) % size
        self._pending = data[whole:]
        changes: list[Change] = []
        for start in range(0, whole, size):
            # The chunk's last sample arrived at `at`; earlier frames ended earlier.
            end = at - (len(data) - start - size) / (2 * self._rate)
            change = self._frame(data[start : start + size], end)
            if change is not None:
                changes.extend(change)
        return changes

    def _frame(self, frame: bytes, end: float) -> list[Change] | None:
        self._frames_seen += 1
        counted = self._frames_seen > self._warmup_frames
        vad = counted and self._vad.is_speech(frame, self._rate)
        if self._gate is None:
            verdict = FrameVerdict(end, vad, counted, vad)
        else:  # a tentative sound is judged strictly: it is about to stop the agent for good
            verdict = self._gate.judge(frame, end, vad, self._phase is _Phase.TENTATIVE)
        if self.verdicts is not None:
            self.verdicts.append(verdict)
        if (verdict.voiced or verdict.masked) and not self._trailing(verdict):
            self._keep(frame, verdict.voiced)
            changes = self._sound(end, verdict.voiced)
        else:
            changes = self._silent(end)
        if self._gate is not None:
            self._gate.settled(verdict, self._phase is _Phase.IDLE)
        return changes

    def _trailing(self, verdict: FrameVerdict) -> bool:
        """Whether a frame webrtcvad may call speech is the tail after the caller stopped.

        webrtcvad goes on saying "speech" for ~100 ms after a voice stops (five frames of digital
        silence after every clip of tests/audio/turns), and through a voice's quiet decay. While
        the caller speaks, such frames (no louder than the line's noise, or `TAIL_DB` below the
        sound's loudest) count as silence, so the pause, the candidate end and the end of turn are
        timed from where the voice really stopped, ~100 ms sooner."""
        if self._phase is not _Phase.SPEAKING:
            return False
        if verdict.voiced:
            self._peak = max(self._peak, verdict.level)
        return verdict.faint or verdict.level < self._peak - TAIL_DB

    def _keep(self, frame: bytes, voiced: bool) -> None:
        """Hold the audio an early commit would judge: the run before a start, then the sound's voiced frames."""
        if self._commit_s is None:
            return
        if self._phase is _Phase.IDLE:
            self._run_frames.append(frame)
        elif self._phase is _Phase.TENTATIVE and voiced:
            self._sound_frames.append(frame)

    def _commits_early(self, end: float) -> bool:
        """``commit_ms`` after its onset, a tentative sound that is voiced and articulated is
        somebody talking, not a cough or an "mhm": judged once, on the audio so far."""
        if self._commit_s is None or self._shape_judged or end < self._onset + self._commit_s - _EPS:
            return False
        self._shape_judged = True
        return measure(self._sound_frames, self._rate).is_speech()

    def _sound(self, end: float, voiced: bool) -> list[Change] | None:
        """A speech-like frame: ``voiced`` if it is surely the caller, else masked (maybe our echo)."""
        self._run += 1
        self._recent.append(end if voiced else None)
        if self._phase is _Phase.IDLE:
            return self._maybe_start(end)
        if self._phase is _Phase.SPEAKING:
            paused = self._pause_frames and self._silent_run >= self._pause_frames
            self._silent_run = 0
            self._last_voiced_end = end
            return [SpeechResumed(at=end)] if paused else None
        elif voiced:  # tentative: a masked frame neither confirms the sound nor ends it
            self._silent_run = 0
            self._last_voiced_end = end
            confirmed = self._confirm_s is not None and end >= self._started_at + self._confirm_s - _EPS
            if confirmed or self._commits_early(end):
                self._phase = _Phase.SPEAKING
                return [SpeechConfirmed(at=end, onset=self._onset)]
        return None

    def _maybe_start(self, end: float) -> list[Change] | None:
        """Start once ``start_ms`` of speech-like frames hold enough that are surely the caller.

        Without echo every speech-like frame is sure, so this is ``start_ms`` voiced in a row.
        """
        proofs = [e for e in self._recent if e is not None]
        if self._run < self._start_frames or len(proofs) < self._need:
            return None
        self._silent_run = 0
        self._last_voiced_end = end
        self._onset = proofs[0] - self._frame_s
        self._peak = -200.0
        self._started_at = end
        self._sound_frames = list(self._run_frames)
        self._shape_judged = False
        started = SpeechStarted(at=end, onset=self._onset)
        if self._confirm_s is None:
            self._phase = _Phase.SPEAKING  # no confirmation asked for: starts and ends only
        elif self._confirm_s <= _EPS:
            self._phase = _Phase.SPEAKING
            return [started, SpeechConfirmed(at=end, onset=self._onset)]
        else:
            self._phase = _Phase.TENTATIVE
        return [started]

    def _silent(self, end: float) -> list[Change] | None:
        self._run = 0
        self._recent.clear()
        self._silent_run += 1
        if self._phase is _Phase.TENTATIVE and self._silent_run == self._gap_frames:
            # Reported once; the owner discards the sound, or lets it run to its normal end.
            self._phase = _Phase.SPEAKING
            return [SpeechDropped(at=end, onset=self._onset, offset=self._last_voiced_end)]
        if self._phase is _Phase.SPEAKING and self._silent_run >= self._end_frames:
            self._phase = _Phase.IDLE
            return [SpeechEnded(at=end, offset=self._last_voiced_end)]
        if self._phase is _Phase.SPEAKING and self._pause_frames and self._silent_run == self._pause_frames:
            return [SpeechPaused(at=end, offset=self._last_voiced_end, silence=self._silent_run * self._frame_s)]
        return None
