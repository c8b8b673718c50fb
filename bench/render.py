"""The benchmark's results as a Markdown table, written between two markers in docs/benchmarks.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["END", "START", "results_markdown", "update_docs"]

START = "<!-- bench:results:start -->"
END = "<!-- bench:results:end -->"


def _ms(values: list[float | None] | None) -> str:
    if not values:
        return "–"
    return " / ".join("–" if v is None else f"{v:.0f}" for v in values)


def _row(s: dict[str, Any]) -> str:
    ok = "yes" if s["ok"] else "**no**"
    late = f"{_num(s['lateness_ms_p50'])} / {_num(s['lateness_ms_p99'])}"
    return (
        f"| {s['calls']} | {_num(s['cpu_s_per_call_min'], 3)} | {_num(s['server_cores_busy'], 2)} "
        f"| {_num(s['rss_mb_per_call'], 2)} | {late} | {s['underruns']} | {_ms(s['reaction_ms'])} "
        f"| {_ms(s['vad_to_clear_ms'])} | {_ms(s['greeting_overhead_ms'][:2])} | {_ms(s['reply_overhead_ms'][:2])} "
        f"| {s['failures']} | {_num(s['generator_cpu_s'], 1)} / {_num(s['tts_cpu_s'], 1)} | {ok} |"
    )


def _num(v: float | None, digits: int = 0) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def results_markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    st = result["settings"]
    lines = [
        f"Run {result['when']}: `{result['command']}` on {m['cpu']}, {m['cores']} cores, Python {m['python']}"
        f" (load average at start {', '.join(map(str, m['load_average_at_start']))}); medians of {st['repeat']}"
        f" run(s) per step, calls of {st['call_s']:.0f} s, fake TTS time to first byte {st['ttfb_s'] * 1000:.0f} ms."
        f" Raw figures: `bench/results/`.",
        "",
        f"**Largest N within the bound: {result['max_calls_within_bound']}** ({result['stop_reason']}).",
        "",
        "| N | server CPU s / call-min | server cores busy | RSS MB / call | lateness p50 / p99 ms | underruns "
        "| reaction p50 / p95 / p99 ms | VAD→clear p50 / p95 / p99 ms | greeting overhead p50 / p95 ms "
        "| reply overhead p50 / p95 ms | failures | generators / TTS CPU s | within bound |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:-:|",
    ]
    lines += [_row(s) for s in result["steps"]]
    return "\n".join(lines)


def update_docs(path: Path, result: dict[str, Any], section: str = "long") -> None:
    """Replace the text between the section's markers (or append a marked section) with the new table.

    The long-call load keeps the original markers; another load (``short``) has its own pair."""
    start, end = START, END
    if section != "long":
        start, end = f"<!-- bench:{section}:start -->", f"<!-- bench:{section}:end -->"
    block = f"{start}\n{results_markdown(result)}\n{end}"
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        text = head + block + tail
    else:
        title = "Latest results" if section == "long" else f"Latest results, {section} calls"
        text = text.rstrip("\n") + f"\n\n## {title}\n\n" + block + "\n"
    path.write_text(text, encoding="utf-8")
