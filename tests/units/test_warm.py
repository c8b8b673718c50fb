"""The warm-socket policy (`bridge.server.warm.WarmTable`) in explicit time: expiry, bound, claims."""

from __future__ import annotations

from bridge.server.warm import WarmTable


def test_a_call_claims_its_socket_within_its_time_and_only_once() -> None:
    table = WarmTable(ttl_s=10.0, size=4)
    table.add("CA1", now=0.0)
    assert table.claim("CA1", now=9.9)
    assert not table.claim("CA1", now=9.9), "a socket goes to one call"
    assert len(table) == 0


def test_an_unclaimed_socket_expires_and_a_late_stream_does_not_get_it() -> None:
    table = WarmTable(ttl_s=10.0, size=4)
    table.add("CA1", now=0.0)
    table.add("CA2", now=4.0)
    assert table.next_expiry() == 10.0
    assert table.expired(now=9.0) == []
    assert table.expired(now=10.0) == ["CA1"]
    assert table.next_expiry() == 14.0
    assert not table.claim("CA1", now=10.5), "expired: the call opens its own"
    assert not table.claim("CA2", now=14.0), "claimed at its deadline is too late"
    assert table.next_expiry() is None


def test_the_table_never_holds_more_than_its_bound_and_pushes_out_the_oldest() -> None:
    table = WarmTable(ttl_s=10.0, size=2)
    assert table.add("CA1", now=0.0) == []
    assert table.add("CA2", now=1.0) == []
    assert table.add("CA3", now=2.0) == ["CA1"]
    assert len(table) == 2
    assert not table.claim("CA1", now=3.0) and table.claim("CA3", now=3.0)


def test_a_repeated_webhook_keeps_the_socket_and_its_deadline() -> None:
    table = WarmTable(ttl_s=10.0, size=2)
    table.add("CA1", now=0.0)
    assert table.add("CA1", now=5.0) == []
    assert len(table) == 1 and table.next_expiry() == 10.0
