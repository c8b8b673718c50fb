"""The TTS reconnect policy in simulated time: when a call's voice is tried again, and when it is given up.

What a caller notices: a one-off drop of the TTS socket is repaired at once; a server that keeps
failing is not hammered (the waits grow), and after the last delay the call goes on without a voice.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.core.backoff import RECONNECT_DELAYS_S, STABLE_AFTER_S, Backoff, GiveUp, Retry

DELAYS = (0.1, 0.25, 0.5)


def test_the_shipped_policy_is_six_growing_delays_about_eight_seconds_in_all() -> None:
    assert RECONNECT_DELAYS_S == (0.1, 0.25, 0.5, 1.0, 2.0, 4.0)
    assert STABLE_AFTER_S == 2.0
    assert sum(RECONNECT_DELAYS_S) == pytest.approx(7.85)


def test_a_drop_of_a_healthy_socket_is_reconnected_at_once() -> None:
    backoff = Backoff(DELAYS, stable_after_s=2.0)
    backoff.connected(0.0)
    assert backoff.socket_lost(30.0) == Retry(at=30.0, failures=0, new_fault=True)
    backoff.connected(30.05)
    assert backoff.still_up(32.05) is True  # the fault healed
    assert backoff.socket_lost(60.0) == Retry(at=60.0, failures=0, new_fault=True)  # a new one, free again


def test_the_first_socket_lost_early_is_still_reconnected_at_once() -> None:
    backoff = Backoff(DELAYS, stable_after_s=2.0)
    backoff.connected(0.0)
    assert backoff.socket_lost(0.5) == Retry(at=0.5, failures=0, new_fault=True)


def test_sockets_lost_as_soon_as_they_open_back_off_then_give_up() -> None:
    backoff = Backoff(DELAYS, stable_after_s=2.0)
    backoff.connected(0.0)
    now = 10.0
    decision = backoff.socket_lost(now)
    waits: list[float] = []
    while isinstance(decision, Retry):
        backoff.connected(decision.at)
        now = decision.at + 0.2  # lost again well before it counts as healthy
        decision = backoff.socket_lost(now)
        waits.append(round(decision.at - now, 3) if isinstance(decision, Retry) else -1.0)
    assert waits == [0.1, 0.25, 0.5, -1.0]
    assert decision == GiveUp(failures=4, permanent=False, new_fault=False)
    assert backoff.given_up == decision


def test_refused_connects_at_call_start_wait_from_the_first_failure() -> None:
    backoff = Backoff(DELAYS, stable_after_s=2.0)
    assert backoff.connect_failed(0.0) == Retry(at=0.1, failures=1, new_fault=True)
    assert backoff.connect_failed(0.1) == Retry(at=0.35, failures=2, new_fault=False)
    assert backoff.connect_failed(0.35) == Retry(at=0.85, failures=3, new_fault=False)
    assert backoff.connect_failed(0.85) == GiveUp(failures=4, permanent=False, new_fault=False)


def test_a_permanent_refusal_gives_up_at_once() -> None:
    backoff = Backoff(DELAYS, stable_after_s=2.0)
    assert backoff.connect_failed(0.0, permanent=True) == GiveUp(failures=1, permanent=True, new_fault=True)


def test_giving_up_is_final() -> None:
    backoff = Backoff((), stable_after_s=2.0)
    given_up = backoff.connect_failed(0.0)
    assert given_up == GiveUp(failures=1, permanent=False, new_fault=True)
    backoff.connected(5.0)
    assert backoff.socket_lost(100.0) is given_up
    assert backoff.connect_failed(200.0) is given_up


def test_a_socket_that_stays_up_heals_the_fault_and_resets_the_count() -> None:
    backoff = Backoff(DELAYS, stable_after_s=2.0)
    backoff.connect_failed(0.0)
    backoff.connect_failed(0.1)
    assert backoff.failures == 2
    backoff.connected(0.35)
    assert backoff.healthy_at == pytest.approx(2.35)
    assert backoff.still_up(2.0) is False  # not yet
    assert backoff.still_up(2.35) is True
    assert backoff.failures == 0
    assert backoff.still_up(3.0) is False  # healed once, not twice
    assert backoff.socket_lost(9.0) == Retry(at=9.0, failures=0, new_fault=True)
    assert backoff.connect_failed(9.0) == Retry(at=9.1, failures=1, new_fault=False)  # a fresh count


def test_a_loss_after_the_socket_lived_long_enough_starts_afresh_even_unreported() -> None:
    """The shell need not report `still_up`: the loss's own time shows that the socket had lived."""
    backoff = Backoff(DELAYS, stable_after_s=2.0)
    backoff.connect_failed(0.0)
    backoff.connect_failed(0.1)
    backoff.connected(0.35)
    assert backoff.socket_lost(2.35) == Retry(at=2.35, failures=0, new_fault=True)


def test_a_socket_lost_just_before_it_counts_as_healthy_is_a_further_failure() -> None:
    backoff = Backoff(DELAYS, stable_after_s=2.0)
    backoff.connected(0.0)
    backoff.socket_lost(1.0)
    backoff.connected(1.0)
    assert backoff.socket_lost(2.99) == Retry(at=pytest.approx(3.09), failures=1, new_fault=False)


def test_no_socket_no_health() -> None:
    backoff = Backoff(DELAYS, stable_after_s=2.0)
    assert backoff.healthy_at is None
    backoff.connected(1.0)
    backoff.connect_failed(2.0)
    assert backoff.healthy_at is None


def test_negative_delays_are_refused() -> None:
    with pytest.raises(ValueError):
        Backoff((0.1, -1.0))


def test_the_policy_has_no_clock_and_no_io() -> None:
    source = (Path(__file__).resolve().parents[2] / "bridge" / "core" / "backoff.py").read_text()
    imports = [line for line in source.splitlines() if line.startswith(("import ", "from "))]
    assert imports == ["from __future__ import annotations", "from dataclasses import dataclass"]
