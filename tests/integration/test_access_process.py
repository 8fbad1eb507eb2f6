"""The child process that writes the entries of the API's event-loop reads, on the real
database (`services/access_process.py`).

Held still on one side while the other runs: with the audit log's lock held by another
connection, the child cannot commit, and no waiting read is answered; let go, each entry is
written once and every read answered. Killed while it holds entries it has not committed,
the child fails its waiters (503: nothing was disclosed) and none of their entries exists;
the next read, after a short pause, starts another child.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import Engine, select, text

from services import access_process
from services.access import Access
from services.access_process import ProcessAccessWriter
from services.audit.log import ADVISORY_LOCK_KEY
from services.audit.models import AUDIT_ENTRY_TABLE
from services.errors import Unavailable
from services.runtime import Runtime
from services.settings import AccessWriterKind, Settings
from tests.factories import read_access


def access(runtime: Runtime, request_id: str) -> Access:
    return read_access(runtime.gatekeeper, request_id)


def stored(engine: Engine, request_ids: list[str]) -> list[tuple[str, str, list[str]]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                AUDIT_ENTRY_TABLE.c.request_id,
                AUDIT_ENTRY_TABLE.c.outcome,
                AUDIT_ENTRY_TABLE.c.categories,
            ).where(AUDIT_ENTRY_TABLE.c.request_id.in_(request_ids))
        ).all()
    return sorted((r[0], r[1], r[2]) for r in rows)


@contextmanager
def audit_lock_held(engine: Engine) -> Iterator[None]:
    """Hold the lock every audit append takes (`AuditLog._lock_database`)."""
    with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY})
        try:
            yield
        finally:
            conn.rollback()


@pytest.fixture
async def writer(settings: Settings) -> AsyncIterator[ProcessAccessWriter]:
    child = ProcessAccessWriter(
        settings.model_copy(update={"audit_access_writer": AccessWriterKind.PROCESS})
    )
    await child.start()
    yield child
    await child.aclose()


async def test_reads_are_answered_only_once_the_child_committed_their_entries(
    writer: ProcessAccessWriter, runtime: Runtime, engine: Engine
) -> None:
    ids = [f"proc-{uuid.uuid4()}" for _ in range(6)]
    # a first read, so that the child has started and written once
    await asyncio.wait_for(writer.finish(access(runtime, ids[0])), timeout=60)
    with audit_lock_held(engine):
        waiting = [asyncio.create_task(writer.finish(access(runtime, i))) for i in ids[1:]]
        await asyncio.sleep(0.5)
        assert not any(task.done() for task in waiting), "answered before its entry committed"
        assert stored(engine, ids[1:]) == []
    await asyncio.wait_for(asyncio.gather(*waiting), timeout=60)
    assert stored(engine, ids) == sorted((i, "success", ["process"]) for i in ids)


async def test_a_killed_child_fails_its_waiters_and_the_next_read_starts_another(
    writer: ProcessAccessWriter,
    runtime: Runtime,
    engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(access_process, "RESTART_PAUSE_SECONDS", 0.5)
    first = writer._process
    assert first is not None
    lost = [f"proc-{uuid.uuid4()}" for _ in range(3)]
    with audit_lock_held(engine):
        waiting = [asyncio.create_task(writer.finish(access(runtime, i))) for i in lost]
        await asyncio.sleep(0.3)  # with the child, which waits for the lock
        first.kill()
        results = await asyncio.wait_for(
            asyncio.gather(*waiting, return_exceptions=True), timeout=30
        )
    assert all(isinstance(r, Unavailable) for r in results), results
    assert stored(engine, lost) == []  # killed before its commit: nothing was disclosed
    # within the pause a read is refused at once, not left waiting
    with pytest.raises(Unavailable):
        await asyncio.wait_for(writer.finish(access(runtime, "proc-paused")), timeout=5)
    await asyncio.sleep(0.6)
    after = f"proc-{uuid.uuid4()}"
    await asyncio.wait_for(writer.finish(access(runtime, after)), timeout=60)
    assert writer._process is not None and writer._process is not first
    assert stored(engine, [after]) == [(after, "success", ["process"])]
