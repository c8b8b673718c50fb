"""End-of-turn judges, asked at candidate ends of turn (`bridge.turn.base`).

`HeuristicJudge` is always available; `SmartTurnJudge` needs the ``turn`` extra (onnxruntime)
and the model file from the ``pipecat-ai`` wheel. `best_judge` picks the model when it loads.
"""

from __future__ import annotations

import logging

from bridge.turn.base import TurnJudge, TurnVerdict, WaitPolicy
from bridge.turn.heuristic import HeuristicJudge

__all__ = ["HeuristicJudge", "TurnJudge", "TurnVerdict", "WaitPolicy", "best_judge"]

log = logging.getLogger("bridge.turn")


def best_judge(policy: WaitPolicy | None = None) -> TurnJudge:
    """Smart Turn when onnxruntime and the model are installed, else the heuristic (logged once)."""
    from bridge.turn.smart_turn import SmartTurnJudge, TurnModelUnavailable

    try:
        return SmartTurnJudge(policy=policy)
    except TurnModelUnavailable as exc:
        log.warning("end of turn: using the heuristic judge (%s)", exc)
        return HeuristicJudge(policy=policy)
