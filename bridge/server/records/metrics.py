"""Prometheus figures of the records writer, on the same ``/metrics`` as the rest of the bridge."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

__all__ = ["RECORDS_LOST", "RECORDS_PENDING", "RECORDS_WRITTEN", "RECORD_WRITE_FAILURES"]

RECORDS_WRITTEN = Counter("bridge_records_written", "Call records written to the database (each version of a call)")
RECORDS_LOST = Counter("bridge_records_lost", "Calls whose record was given up: the database stayed unreachable")
RECORD_WRITE_FAILURES = Counter("bridge_records_write_failures", "Batches of call records a write failed for "
                                "(they are retried)")
RECORDS_PENDING = Gauge("bridge_records_pending", "Calls whose newest record waits to be written",
                        multiprocess_mode="livesum")
