"""``bridge vad``: the live detector over a recording, its report, its plot."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from bridge.core.actions import ConfirmTurn, StartTurn
from bridge.core.events import AgentDone
from bridge.tools.cli import main
from tests.support import SPEECH, Driver, load_wav, silence
from tests.turntaking import agent_voice, cough, gain


def write_wav(path: Path, pcm: bytes, rate: int = 8000, channels: int = 1) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return path


def run_tool(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str]]:
    code = main(["vad", *args])
    return code, capsys.readouterr().out.splitlines()


def test_speech_segments_of_a_shared_recording(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run_tool(capsys, str(SPEECH / "caller_04.wav"))
    assert code == 0
    assert out[0] == "caller_04.wav: 0.44 s at 8 kHz"
    assert out[2] == "sound   0.00 -   0.44 s  detected at 0.10; caller turn, ends at 1.04"


def test_the_tool_decides_what_the_call_decides(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The same line through the core and through the tool: the turn starts at the same moment."""
    line = silence(0.6) + load_wav("caller_03.wav") + silence(1.0)
    d = Driver.started()
    d.send(AgentDone(0.01, 0))  # a silent greeting: the call listens
    d.caller(line, start=0.0)
    # The turn is taken when the agent's reply may play: a plain start, or a tentative turn's confirmation.
    [turn_at] = [at for at, a in d.log if (isinstance(a, StartTurn) and a.turn >= 1 and not a.tentative)
                 or isinstance(a, ConfirmTurn)]
    _, out = run_tool(capsys, str(write_wav(tmp_path / "line.wav", line)))
    assert out[2].endswith(f"ends at {turn_at:.2f}")


def test_barge_ins_over_the_agent_with_its_echo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    agent = agent_voice()[: 8000 * 2 * 8]
    mix = np.zeros(8000 * 9)
    a = np.frombuffer(agent, "<i2").astype(float)
    mix[960 : 960 + len(a)] += a * 0.1  # echo: 120 ms late, 20 dB down
    c = np.frombuffer(cough(0.2), "<i2").astype(float)
    mix[16000 : 16000 + len(c)] += c  # a cough at 2.0 s
    s = np.frombuffer(gain(load_wav("caller_03.wav"), -6.0), "<i2").astype(float)
    mix[36000 : 36000 + len(s)] += s  # the caller cuts in at 4.5 s
    line = write_wav(tmp_path / "line.wav", np.clip(mix, -32768, 32767).astype("<i2").tobytes())
    code, out = run_tool(capsys, str(line), "--agent", str(write_wav(tmp_path / "agent.wav", agent)))
    assert code == 0
    sounds = [line for line in out if line.startswith("sound")]
    assert len(sounds) == 2, out
    assert "BARGE-IN" in sounds[0] and "agent resumes" in sounds[0]
    assert "BARGE-IN" in sounds[1] and "agent stops" in sounds[1]
    assert "barge-ins: 2 pauses, 1 interruptions, 1 resumed" in out
    [loss] = [line for line in out if line.startswith("echo loss: ")]
    assert 17.0 <= float(loss.split()[2]) <= 20.5, "learnt, and never more than the true 20 dB"


def test_any_wav_is_resampled_and_mixed_down(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import soxr

    speech = np.frombuffer(silence(0.3) + load_wav("caller_07.wav") + silence(0.3), "<i2").astype(np.float64)
    wide = soxr.resample(speech, 8000, 44100)
    stereo = np.repeat(np.clip(wide, -32768, 32767).astype("<i2"), 2).tobytes()
    _, narrow = run_tool(capsys, str(write_wav(tmp_path / "a.wav", silence(0.3) + load_wav("caller_07.wav")
                                               + silence(0.3))))
    _, out = run_tool(capsys, str(write_wav(tmp_path / "b.wav", stereo, rate=44100, channels=2)))
    assert out[0] == "b.wav: 2.45 s at 8 kHz"
    assert [line.split("detected")[0] for line in out[2:]] == [line.split("detected")[0] for line in narrow[2:]]


def test_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    png = tmp_path / "out.png"
    code, out = run_tool(capsys, str(SPEECH / "caller_01.wav"), "--plot", str(png))
    assert code == 0 and out[-1] == f"plot: {png}"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000


def test_not_a_wav(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "x.wav"
    bad.write_bytes(b"not audio")
    assert main(["vad", str(bad)]) == 2
    assert "cannot read a PCM WAV" in capsys.readouterr().err
