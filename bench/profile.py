"""Summarise a py-spy profile (``--format raw``: collapsed stacks) by self and inclusive time.

    python -m bench.profile bench/results/profiles/server-100-....txt [--top 30] [--idle]

py-spy samples the idle event loop too (blocked in epoll), and now and then a thread blocked in
C that it takes for busy: the records writer's own event loop in its selector's ``poll``, the
SQLite driver's thread in its queue's ``get``. Those samples are left out unless ``--idle``, so
the shares are of the CPU the server actually used. A blocking call is told by the source line
the sample stopped at (read from the installed file), not by a list of functions.
"""

from __future__ import annotations

import argparse
import linecache
import re
import sys
from collections import Counter
from pathlib import Path

__all__ = ["main", "summarise"]

_IDLE = ("select (selectors.py", "_run_once", "run_forever")
_FRAME = re.compile(r"^(?P<func>.+?) \((?P<file>[^)]*?)(?::\d+)?\)$")
_LEAF = re.compile(r"^(?P<func>.+?) \((?P<file>[^)]*?):(?P<line>\d+)\)$")
# Waits a thread sleeps in, in C, by the source line: a selector's poll (the records writer's own
# event loop), the SQLite driver's thread waiting for work (aiosqlite's queue).
_BLOCKING = re.compile(r"_selector\.poll\(|\btx\.get\(\)")


def _waiting(leaf: str) -> bool:
    """Whether a sample's innermost Python frame is a call that blocks in C (py-spy names the file
    as found under a ``sys.path`` entry, or in full)."""
    m = _LEAF.match(leaf.strip())
    if m is None:
        return False
    for base in ("", *sys.path):
        text = linecache.getline(f"{base}/{m['file']}" if base else m["file"], int(m["line"]))
        if text:
            return _BLOCKING.search(text) is not None
    return False


def _frames(stack: str) -> list[str]:
    out = []
    for frame in stack.split(";"):
        m = _FRAME.match(frame.strip())
        if m is None:
            out.append(frame.strip())
            continue
        path = m["file"]
        short = "/".join(path.split("/")[-2:]) if "site-packages" in path or "/lib/python" in path else path
        out.append(f"{m['func']} ({short.split('/site-packages/')[-1]})")
    return out


def summarise(path: Path, *, idle: bool = False) -> tuple[int, Counter[str], Counter[str]]:
    """(samples, self counts, inclusive counts) per function."""
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = _frames(stack)
        if not idle and frames and (frames[-1].startswith(("select ", "poll ", "epoll"))
                                    or _waiting(stack.rsplit(";", 1)[-1])):
            continue
        n = int(count)
        total += n
        own[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    return total, own, incl


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.profile")
    p.add_argument("profile", type=Path)
    p.add_argument("--top", type=int, default=30)
    p.add_argument("--idle", action="store_true", help="count samples of the idle loop too")
    args = p.parse_args(argv)
    total, own, incl = summarise(args.profile, idle=args.idle)
    print(f"{total} busy samples")
    for title, table in (("self", own), ("inclusive", incl)):
        print(f"\n{title}:")
        for name, n in table.most_common(args.top):
            print(f"{100 * n / total:6.1f}%  {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
