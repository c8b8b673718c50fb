"""One run's figures from its calls and processes, and the median over a step's repeated runs."""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from bench.analysis import CallResult, percentiles, weighted_percentiles

__all__ = ["LATENESS_BOUND_MS", "Costs", "run_figures", "step_figures", "within_bound"]

LATENESS_BOUND_MS = 20.0


@dataclass
class Costs:
    """What the processes of one run cost, measured from outside them (see `bench.procs`)."""

    wall_s: float
    server_cpu_s: float
    tts_cpu_s: float
    generator_cpu_s: float
    other_cpu_s: float  # everything else on the machine meanwhile: other people's work
    server_idle_kb: int
    server_peak_kb: int
    generator_peak_kb: int
    generator_lag_ms: tuple[float, float]  # p99, max lateness of the generators' event loops
    probes_ms: dict[str, list[float | None]] = field(default_factory=dict)


def within_bound(fig: dict[str, Any]) -> bool:
    late99 = fig["lateness_ms_p99"]
    return bool(late99 is not None and late99 <= LATENESS_BOUND_MS and not fig["underruns"] and not fig["failures"])


def run_figures(n: int, calls: list[CallResult], costs: Costs) -> dict[str, Any]:
    call_min = sum(c.seconds for c in calls) / 60
    lateness: Counter[int] = Counter()
    failures: Counter[str] = Counter()
    for c in calls:
        lateness.update(c.lateness_ms)
        failures.update(c.failures)
    late50, late99 = weighted_percentiles(lateness, (50, 99))
    flat = {key: [x for c in calls for x in getattr(c, key)] for key in (
        "reaction_ms", "vad_to_clear_ms", "greeting_ms", "greeting_overhead_ms", "reply_ms", "reply_overhead_ms")}
    fig: dict[str, Any] = {
        "calls": n,
        "call_minutes": round(call_min, 2),
        "cpu_s_per_call_min": round(costs.server_cpu_s / call_min, 3) if call_min else None,
        "server_cores_busy": round(costs.server_cpu_s / costs.wall_s, 2),
        "rss_mb_per_call": round((costs.server_peak_kb - costs.server_idle_kb) / 1024 / n, 3),
        "lateness_ms_p50": late50,
        "lateness_ms_p99": late99,
        "lateness_ms_max": float(max(lateness, default=0)),
        "underruns": sum(c.underruns for c in calls),
        "failures": sum(failures.values()),
        **{key: percentiles(values) for key, values in flat.items()},
        "barge_ins": len(flat["reaction_ms"]),
        "replies": len(flat["reply_ms"]),
        "frames": sum(lateness.values()),
        "wall_s": round(costs.wall_s, 1),
        "server_cpu_s": round(costs.server_cpu_s, 2),
        "server_rss_idle_mb": round(costs.server_idle_kb / 1024, 1),
        "server_rss_peak_mb": round(costs.server_peak_kb / 1024, 1),
        "tts_cpu_s": round(costs.tts_cpu_s, 2),
        "generator_cpu_s": round(costs.generator_cpu_s, 2),
        "generator_peak_rss_mb": round(costs.generator_peak_kb / 1024, 1),
        "generator_loop_lag_ms_p99": costs.generator_lag_ms[0],
        "generator_loop_lag_ms_max": costs.generator_lag_ms[1],
        "generator_send_lag_ms_max": round(max((c.send_lag_ms for c in calls), default=0.0), 1),
        "other_cores_busy": round(costs.other_cpu_s / costs.wall_s, 2),
        **{f"{name}_probe_ms": values for name, values in costs.probes_ms.items()},
        "failure_kinds": dict(failures),
    }
    fig["ok"] = within_bound(fig)
    return fig


def step_figures(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per figure, the median over the runs (lists element-wise); ``ok`` judged on the medians."""
    out: dict[str, Any] = {}
    for key, first in runs[0].items():
        values = [r[key] for r in runs]
        if isinstance(first, bool | dict):
            continue
        if isinstance(first, list):
            out[key] = [_median([v[i] for v in values]) for i in range(len(first))]
        else:
            out[key] = _median(values)
    kinds: Counter[str] = Counter()
    for r in runs:
        kinds.update(r["failure_kinds"])
    out["failure_kinds"] = dict(kinds)
    out["ok"] = within_bound(out)
    out["runs_ok"] = [r["ok"] for r in runs]
    return out


def _median(values: list[Any]) -> Any:
    present = [v for v in values if v is not None]
    if not present:
        return None
    m = statistics.median(present)
    return round(m, 3) if isinstance(m, float) else m
