"""Where the bridge's time went during one `bridge call`: the server's per-turn stage histograms.

The phone hears only the sum (reply latency). The bridge's ``/metrics`` keeps each stage of each
turn (``bridge_turn_stage_seconds``: end of turn, agent first text, TTS first audio, playout
start), so `bridge call` reads it before and after the call and prints the difference: this
call's stages, as long as no other call ran on that server meanwhile.
"""

from __future__ import annotations

import urllib.request
from urllib.parse import urlsplit, urlunsplit

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["STAGE_LABELS", "metrics_url", "scrape", "stage_lines"]

Stages = dict[str, tuple[float, float]]  # stage -> (seconds summed, turns)

STAGE_LABELS = {"end_of_turn": "end of turn", "agent_first_text": "agent first text",
                "tts_first_audio": "TTS first audio", "playout_start": "playout start"}


def metrics_url(url: str) -> str:
    """The bridge's ``/metrics`` beside a webhook or media URL (ws → http, wss → https)."""
    parts = urlsplit(url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, "/metrics", "", ""))


def scrape(url: str, timeout: float = 3.0) -> Stages | None:
    """The stage sums and counts now; None when the server has none to give (not a bridge, refused)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            text = response.read().decode("utf-8", "replace")
    except (OSError, ValueError):
        return None
    found: dict[str, list[float]] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "bridge_turn_stage_seconds":
            continue
        for sample in family.samples:
            stage = sample.labels.get("stage", "")
            if sample.name.endswith("_sum"):
                found.setdefault(stage, [0.0, 0.0])[0] = sample.value
            elif sample.name.endswith("_count"):
                found.setdefault(stage, [0.0, 0.0])[1] = sample.value
    return {stage: (s, n) for stage, (s, n) in found.items()}


def stage_lines(before: Stages | None, after: Stages | None) -> list[str]:
    """One line: each stage's mean over this call's turns (nothing when the server gave no numbers)."""
    if after is None:
        return []
    before = before or {}
    parts = []
    for stage, label in STAGE_LABELS.items():
        total, count = after.get(stage, (0.0, 0.0))
        was_total, was_count = before.get(stage, (0.0, 0.0))
        n = count - was_count
        if n > 0:
            parts.append(f"{label} {(total - was_total) / n * 1000:.0f} ms ({n:.0f})")
    return [f"bridge stages (mean per turn, from /metrics): {', '.join(parts)}"] if parts else []
