"""The picture ``bridge vad --plot`` draws: what the detector heard, frame by frame, and why.

Three panels on one time axis: the waveform (the caller's line, and the agent's audio when
given); each 20 ms frame's level with the noise floor plus ``snr_db`` and the echo guard's
threshold, the two lines a frame must clear; and the verdicts (webrtcvad, surely the caller,
masked by possible echo, keypad tone), with the detector's starts, confirmations, drops and ends.
matplotlib is the optional ``plot`` extra; only this module imports it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, never a window: the tool runs on servers
import matplotlib.pyplot as plt
import numpy as np

from bridge.tools.vad_analysis import RATE, Analysis

__all__ = ["plot"]


def plot(analysis: Analysis, path: Path, *, title: str = "", snr_db: float = 6.0) -> None:
    """Write the PNG at ``path``."""
    fig, (wave_ax, level_ax, verdict_ax) = plt.subplots(
        3, 1, figsize=(14, 8), sharex=True, gridspec_kw={"height_ratios": [2, 2, 1]}
    )
    _waveform(wave_ax, analysis)
    _levels(level_ax, analysis, snr_db)
    _verdicts(verdict_ax, analysis)
    for ax in (wave_ax, level_ax, verdict_ax):
        _decisions(ax, analysis)
    wave_ax.set_title(title)
    verdict_ax.set_xlabel("seconds")
    verdict_ax.set_xlim(0, analysis.duration)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _waveform(ax: Any, a: Analysis) -> None:
    t = np.arange(len(a.line)) / RATE
    ax.plot(t, a.line / 32768, lw=0.4, color="tab:blue", label="caller's line")
    if a.agent is not None:
        n = min(len(a.agent), len(a.line))
        ax.plot(t[:n], a.agent[:n] / 32768, lw=0.4, color="tab:orange", alpha=0.6, label="agent (reference)")
    ax.set_ylim(-1, 1)
    ax.set_ylabel("amplitude")
    ax.legend(loc="upper right", fontsize=8)


def _levels(ax: Any, a: Analysis, snr_db: float) -> None:
    ends = np.array([v.end for v in a.verdicts])
    ax.step(ends, [v.level for v in a.verdicts], where="post", lw=0.8, color="tab:blue", label="frame level")
    ax.step(ends, [v.floor + snr_db for v in a.verdicts], where="post", lw=0.8, color="tab:green",
            label="noise floor + snr_db")
    echo = [np.nan if v.echo is None else v.echo for v in a.verdicts]
    ax.step(ends, echo, where="post", lw=0.8, color="tab:red", label="echo threshold")
    ax.set_ylim(-80, 0)
    ax.set_ylabel("dBFS")
    ax.legend(loc="upper right", fontsize=8)


def _verdicts(ax: Any, a: Analysis) -> None:
    rows = [("webrtcvad", "vad", "tab:gray"), ("caller", "voiced", "tab:blue"),
            ("masked (echo?)", "masked", "tab:red"), ("DTMF", "tone", "tab:purple")]
    for y, (_, attr, color) in enumerate(rows):
        spans = [(v.end - 0.02, 0.02) for v in a.verdicts if getattr(v, attr)]
        ax.broken_barh(spans, (len(rows) - 1 - y + 0.1, 0.8), color=color)
    ax.set_yticks([len(rows) - 1 - y + 0.5 for y in range(len(rows))], [r[0] for r in rows], fontsize=8)
    ax.set_ylim(0, len(rows))


def _decisions(ax: Any, a: Analysis) -> None:
    for s in a.segments:
        ax.axvline(s.started, color="tab:orange" if s.over_agent else "tab:blue", lw=1.0, ls="--")
        if s.confirmed is not None:
            ax.axvline(s.confirmed, color="black", lw=1.0)
        if s.dropped is not None:
            ax.axvline(s.dropped, color="tab:green", lw=1.0, ls=":")
        if s.ended is not None:
            ax.axvline(s.ended, color="tab:gray", lw=1.0, ls=":")
