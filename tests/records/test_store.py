"""The database, on SQLite and on a real PostgreSQL server: migrations, idempotent writes,
newest-first paging, retention."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, MetaData, Table, insert, text

from bridge.server.records import schema
from bridge.server.records.api import call_json, call_summary
from bridge.server.records.store import Store, _call_row
from tests.records.factory import T0, record


async def test_a_fresh_database_is_created_and_migrating_again_changes_nothing(database_url: str) -> None:
    store = Store(database_url)
    try:
        await store.migrate()
        await store.save([record(1)], {})
        await store.migrate()  # a restart: upgrade in place, never drop and recreate
        assert [c["call_id"] for c in await store.list_calls(10, None)] == [record(1).call_id]
        async with store.engine.connect() as conn:
            version = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar_one()
            diff = await conn.run_sync(lambda c: compare_metadata(MigrationContext.configure(c), schema.metadata))
        assert version == "0002"
        assert diff == [], "schema.py and the migrations describe the same tables"
    finally:
        await store.aclose()


async def test_a_call_refused_the_echo_canceller_says_why_and_calls_recorded_before_say_it_was_not(
        database_url: str) -> None:
    """A database the bridge wrote before it recorded refusals (revision 0001) is upgraded in
    place: its call reads back as never refused, and a call refused for lag says so, in its
    record and in the API's list and detail."""
    store = Store(database_url)
    try:
        async with store.engine.begin() as conn:
            await conn.run_sync(store._upgrade, "0001")
            before = Table("calls", MetaData(), *(Column(c.name, c.type) for c in schema.calls.columns
                                                  if c.name != "aec_refused"))
            old = {k: v for k, v in _call_row(record(1), None).items() if k != "aec_refused"}
            await conn.execute(insert(before), [old])
        await store.migrate()
        await store.save([dataclasses.replace(record(2), aec_refused="lag")], {})
        refused, earlier = await store.get_call(record(2).call_id), await store.get_call(record(1).call_id)
        assert refused is not None and earlier is not None
        assert refused["aec_refused"] == "lag" and call_json(refused)["aec_refused"] == "lag"
        assert earlier["aec_refused"] == "" and earlier["turns"] == []
        listed = {c["call_id"]: call_summary(c)["aec_refused"] for c in await store.list_calls(10, None)}
        assert listed == {record(2).call_id: "lag", record(1).call_id: ""}
    finally:
        await store.aclose()


async def test_saving_a_call_again_replaces_it(database_url: str) -> None:
    store = Store(database_url)
    try:
        await store.migrate()
        live = record(2, ended=False)
        await store.save([live], {})
        await store.save([record(2)], {"CA" + f"{2:032x}": "/tmp/x.wav"})
        await store.save([record(2)], {"CA" + f"{2:032x}": "/tmp/x.wav"})  # a retried batch
        call = await store.get_call(live.call_id)
        assert call is not None
        assert call["ended_how"] == "caller hung up" and call["duration_s"] == 6.5
        assert [t["turn"] for t in call["turns"]] == [0, 1]
        assert [t["heard_text"] for t in call["turns"]] == ["Hello, how", "Sure, it ships today."]
        assert len(call["barge_ins"]) == 1 and len(call["tts_reconnects"]) == 1 and len(call["segments"]) == 4
        assert call["started_at"] == live.started_at and call["audio_path"] == "/tmp/x.wav"
        assert call["median_reply_ms"] == 340.0, "the greeting is not a reply"
    finally:
        await store.aclose()


async def test_every_part_of_a_call_reads_back_as_recorded_when_a_batch_spans_several_statements(
        database_url: str) -> None:
    store = Store(database_url)
    try:
        await store.migrate()
        records = [record(n) for n in range(3)]
        await store.save(records, {}, rows=2)  # each table's rows over several statements
        for r in records:
            call = await store.get_call(r.call_id)
            assert call is not None
            for table, parts in (("turns", r.turns), ("barge_ins", r.barge_ins), ("tts_reconnects", r.reconnects),
                                 ("segments", r.segments)):
                stored = [{k: v for k, v in row.items() if k != "call_id"} for row in call[table]]
                assert stored == [dataclasses.asdict(part) for part in parts], table
    finally:
        await store.aclose()


async def test_pages_run_newest_first_and_a_cursor_continues_where_the_last_page_ended(database_url: str) -> None:
    from bridge.server.records.store import encode_cursor

    store = Store(database_url)
    try:
        await store.migrate()
        await store.save([record(n) for n in range(7)], {})
        await store.save([record(100, started=T0 + timedelta(minutes=3))], {})  # the same start as call 3
        seen, cursor = [], None
        while True:
            page = await store.list_calls(3, cursor)
            seen += [c["call_id"] for c in page]
            if len(page) < 3:
                break
            cursor = (page[-1]["started_at"], page[-1]["call_id"])
            assert encode_cursor(*cursor)
        starts = [(await store.get_call(cid))["started_at"] for cid in seen]  # type: ignore[index]
        assert len(seen) == 8 == len(set(seen))
        assert starts == sorted(starts, reverse=True)
    finally:
        await store.aclose()


async def test_retention_deletes_old_calls_and_their_recordings(database_url: str, tmp_path: Path) -> None:
    store = Store(database_url)
    wav = tmp_path / "old.wav"
    wav.write_bytes(b"RIFF")
    try:
        await store.migrate()
        old, new = record(1), record(2)
        await store.save([old, new], {old.call_id: str(wav)})
        gone = await store.purge(30, now=new.started_at + timedelta(days=30, seconds=-30))
        assert gone == [str(wav)]
        assert [c["call_id"] for c in await store.list_calls(10, None)] == [new.call_id]
        assert await store.get_call(old.call_id) is None
    finally:
        await store.aclose()
