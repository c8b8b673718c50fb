"""End-of-turn judges on the labelled clips of tests/audio/turns (see its README)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from bench.turn_model import Candidate, candidates, load_clips
from bridge.turn import HeuristicJudge, TurnVerdict, WaitPolicy, best_judge
from bridge.turn.features import FRAMES, N_MELS, WINDOW_SAMPLES, log_mel, mel_filters, window
from bridge.turn.heuristic import PitchTrack, audio_prob, text_prob
from tests.support import load_wav


def all_candidates() -> list[Candidate]:
    return [c for clip in load_clips() for c in candidates(clip)]


def test_every_clip_gives_its_candidate_ends_with_the_silence_that_follows() -> None:
    cands = all_candidates()
    assert len(cands) == 24 and sum(c.complete for c in cands) == 12
    mid_sentence = [c for c in cands if c.clip.file.startswith("pause_") and not c.complete]
    assert len(mid_sentence) == 4 and all(0.4 <= c.silence_after_s <= 0.5 for c in mid_sentence)
    assert all(c.silence_after_s >= 0.95 for c in cands if c not in mid_sentence)


def test_features_are_80_mels_by_800_frames_left_padded() -> None:
    one_second = (np.sin(2 * np.pi * 300 * np.arange(16000) / 16000) * 0.3).astype(np.float32)
    padded = window(one_second)
    assert padded.shape == (WINDOW_SAMPLES,) and not padded[:-16000].any() and padded[-1] == one_second[-1]
    mel = log_mel(padded)
    assert mel.shape == (N_MELS, FRAMES) == (80, 800) and mel.dtype == np.float32
    assert mel[:, -50:].max() > mel[:, :600].max() + 0.5, "the tone is at the end, silence before it"
    peak_band = int(np.argmax(mel[:, -50:].mean(axis=1)))
    centre_hz = np.argmax(mel_filters()[peak_band]) * 8000 / 200  # 201 FFT bins over 0-8 kHz
    assert peak_band < 10 and abs(centre_hz - 300) <= 40, "the loudest band is the one around 300 Hz"
    assert window(np.ones(WINDOW_SAMPLES + 5, dtype=np.float32)).shape == (WINDOW_SAMPLES,)
    with pytest.raises(ValueError):
        log_mel(one_second)


@pytest.mark.parametrize(("text", "complete"), [
    ("What time do you open?", True),
    ("I need to cancel my order.", True),
    ("that is all thank you", True),
    ("I would like to book an appointment for", False),
    ("um so I was wondering if", False),
    ("my number is five five five two", False),
    ("and then", False),
    ("my account number is", False),
    ("I was going to say,", False),
    ("uh", False),
])
def test_text_rules(text: str, complete: bool) -> None:
    prob = text_prob(text)
    assert prob is not None and (prob >= 0.5) == complete
    assert (prob >= 0.8 or prob <= 0.2) == (not text[-1].isalpha() or not complete), "decisive when sure"


def test_no_words_is_no_text_evidence() -> None:
    assert text_prob("") is None and text_prob(" ... ") is None


@pytest.mark.parametrize("seconds", [1.0, 30.0])
def test_a_falling_end_sounds_complete_and_a_rising_end_does_not(seconds: float) -> None:
    """As much on a turn of half a minute (its pitch read from a sample of its frames) as on one second."""
    def glide(f_end: float) -> bytes:
        t = np.arange(int(8000 * seconds)) / 8000
        start = seconds - 0.4
        f = np.where(t < start, 180.0 + 10 * np.sin(t), 180.0 + (f_end - 180.0) * (t - start) / 0.4)
        loud = np.where(t < start, 0.5, 0.5 * (0.15 if f_end < 180 else 1.0) ** ((t - start) / 0.4))
        x = loud * np.sign(np.sin(2 * np.pi * np.cumsum(f) / 8000))  # a buzz: harmonics like a voice
        return (np.concatenate([x, np.zeros(2000)]) * 12000).astype("<i2").tobytes()

    falling, rising = audio_prob(glide(120.0), 8000), audio_prob(glide(240.0), 8000)
    assert falling is not None and rising is not None and falling >= 0.75 > 0.5 > rising
    assert audio_prob(b"\x00\x00" * 4000, 8000) is None


def test_the_heuristic_judges_the_labelled_candidates_and_never_cuts_a_number_short() -> None:
    judge = HeuristicJudge()
    verdicts = [(c, judge.judge(c.pcm, 8000, c.words)) for c in all_candidates()]
    right = sum(v.complete == c.complete for c, v in verdicts)
    false_ends = [c.words for c, v in verdicts if v.complete and not c.complete]
    assert right >= 18 and len(false_ends) <= 2, (right, false_ends)
    numbers = [v for c, v in verdicts if "number" in c.words and not c.complete]
    assert numbers and all(not v.complete and v.wait_ms == 1250 for v in numbers)


def test_a_verdict_carries_the_wait_for_its_call() -> None:
    policy = WaitPolicy(threshold=0.6, short_ms=50, long_ms=900)
    assert policy.verdict(0.7, "x") == TurnVerdict(0.7, 50, True, "x")
    assert policy.verdict(0.59, "x") == TurnVerdict(0.59, 900, False, "x")
    assert policy.verdict(1.7, "x").complete_prob == 1.0


def test_without_the_model_the_best_judge_is_the_heuristic(monkeypatch: pytest.MonkeyPatch) -> None:
    import bridge.turn.smart_turn as smart_turn

    def missing() -> None:
        raise smart_turn.TurnModelUnavailable("no model here")

    monkeypatch.setattr(smart_turn, "find_model", missing)
    assert isinstance(best_judge(), HeuristicJudge)


def test_the_judge_of_a_growing_utterance_answers_as_if_it_heard_each_whole() -> None:
    """Candidate ends of one turn hand the judge the turn so far: what it kept from the shorter
    versions changes no answer, and audio that is not a continuation is judged afresh."""
    speech = load_wav("caller_02.wav")
    track = PitchTrack()
    for end in range(8000, len(speech) + 1, 3200):  # every 100 ms from 0.5 s on
        assert audio_prob(speech[:end], 8000, track) == audio_prob(speech[:end], 8000)
    other = load_wav("caller_07.wav")
    assert audio_prob(other, 8000, track) == audio_prob(other, 8000)
    long_turn = b"".join(load_wav(f"caller_0{n}.wav") for n in (5, 6, 8))  # 10 s: pitch from a sample
    track = PitchTrack()
    for end in range(len(long_turn) // 2, len(long_turn) + 1, 8000):
        assert audio_prob(long_turn[:end], 8000, track) == audio_prob(long_turn[:end], 8000)


class Sure:
    """A judge that can be sure from audio alone (as the model can)."""

    name = "sure"
    audio_most = 1.0

    def judge(self, pcm: bytes, rate: int, transcript: str | None = None) -> TurnVerdict:
        return TurnVerdict(0.95, 0, True, self.name)


async def test_without_words_a_judge_whose_verdict_could_change_nothing_is_not_asked() -> None:
    """The heuristic's prosody never reaches the core's ``confident_audio``: without a transcriber
    no candidate costs a thread or a pitch track; a judge that can be that sure is still asked."""
    from bridge.core.actions import JudgeTurn
    from bridge.core.events import TurnVerdict as Verdict
    from bridge.server.listening import Listening

    utterance = load_wav("caller_02.wav")
    for judge, asked in ((HeuristicJudge(), False), (HeuristicJudge(use_text=False), False), (Sure(), True),
                         (HeuristicJudge(audio=Sure()), True)):
        put: list[object] = []
        listening = Listening(judge, None, put.append, lambda: 1.0, lambda: "CA1")
        listening.ask(JudgeTurn(1, utterance, 1, sure_audio=0.9))
        listening.ask(JudgeTurn(2, utterance, 2, sure_audio=0.0))  # max_ms below vad.end_ms: every verdict counts
        expected = [1, 2] if asked else [2]
        for _ in range(500):  # every judgement asked has answered (a loaded machine: up to 5 s)
            await asyncio.sleep(0.01)
            if not listening._tasks:
                break
        await listening.aclose()
        assert [v.candidate for v in put if isinstance(v, Verdict)] == expected, judge.name


def test_the_cost_benchmark_times_every_judgement_it_lists() -> None:
    from bench.turn_model import cost

    rows = [line for line in cost(1).splitlines() if ".wav" in line]
    assert len(rows) == 5 and all(float(row.split("|")[2]) > 0 for row in rows), rows
