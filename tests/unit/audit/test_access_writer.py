"""The access writer: entries of the accesses served on the event loop, written by one thread.

Held still on one side while the other runs: with the log's write lock held, waiting
requests pile up and none is answered (no disclosure before its entry is committed); let
go, they are written together, each once. A write that fails fails every waiter and writes
nothing; a waiter that went away still has its access recorded.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from sqlalchemy import Engine, select

from services.access import Access, Gatekeeper, RequestContext
from services.audit.log import AuditLog
from services.audit.models import AUDIT_ENTRY_TABLE, AuditEventType, AuditOutcome
from tests.factories import READER, read_access

LogFactory = Callable[..., AuditLog]


def access(gatekeeper: Gatekeeper, n: int) -> Access:
    return read_access(gatekeeper, f"req-{n}")


def stored(engine: Engine) -> list[tuple[str, str, list[str]]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                AUDIT_ENTRY_TABLE.c.request_id,
                AUDIT_ENTRY_TABLE.c.outcome,
                AUDIT_ENTRY_TABLE.c.categories,
            ).order_by(AUDIT_ENTRY_TABLE.c.index)
        ).all()
    return [(r[0], r[1], r[2]) for r in rows]


@pytest.fixture
def gatekeeper(make_log: LogFactory) -> Any:
    keeper = Gatekeeper(audit=make_log(), pseudonym_key=b"k" * 32, source_node="test")
    yield keeper
    keeper.close()


def count_transactions(gatekeeper: Gatekeeper) -> list[int]:
    """How many accesses each `finish_together` call wrote (patched on this gatekeeper)."""
    sizes: list[int] = []
    real = gatekeeper.finish_together

    def counted(finished: Sequence[tuple[Access, AuditOutcome]]) -> None:
        sizes.append(len(finished))
        real(finished)

    gatekeeper.finish_together = counted  # type: ignore[method-assign]
    return sizes


async def test_waiters_are_answered_only_after_their_entries_commit_together(
    gatekeeper: Gatekeeper, engine: Engine
) -> None:
    sizes = count_transactions(gatekeeper)
    write_lock = gatekeeper.audit._write_lock
    write_lock.acquire()  # the audit writer is busy: nothing commits
    try:
        waiting = [
            asyncio.create_task(gatekeeper.writer.finish(access(gatekeeper, n))) for n in range(20)
        ]
        await asyncio.sleep(0.3)
        assert not any(task.done() for task in waiting), "answered before the entry committed"
        assert stored(engine) == []
    finally:
        write_lock.release()
    await asyncio.wait_for(asyncio.gather(*waiting), timeout=30)
    assert sorted(stored(engine)) == sorted((f"req-{n}", "success", ["process"]) for n in range(20))
    # the first access was taken alone, the 19 queued behind it in one transaction
    assert sum(sizes) == 20 and len(sizes) <= 2, sizes


async def test_a_failed_write_fails_every_waiter_writes_nothing_and_the_next_succeeds(
    gatekeeper: Gatekeeper, engine: Engine
) -> None:
    real = gatekeeper.audit._write_entries_with

    def broken(*_: Any, **__: Any) -> Any:
        raise OSError("disk full")

    gatekeeper.audit._write_entries_with = broken  # type: ignore[method-assign]
    accesses = [access(gatekeeper, n) for n in range(5)]
    results = await asyncio.gather(
        *(gatekeeper.writer.finish(a) for a in accesses), return_exceptions=True
    )
    assert all(isinstance(r, OSError) for r in results), results
    assert stored(engine) == []
    assert not any(a.finished for a in accesses)

    gatekeeper.audit._write_entries_with = real  # type: ignore[method-assign]
    await gatekeeper.writer.finish(access(gatekeeper, 99))
    assert stored(engine) == [("req-99", "success", ["process"])]


async def test_a_refused_access_is_recorded_as_refused_disclosing_nothing(
    gatekeeper: Gatekeeper, engine: Engine
) -> None:
    from services.errors import NotFound

    with pytest.raises(NotFound):
        async with gatekeeper.access_async(
            principal=READER,
            event_type=AuditEventType.READ,
            action="referral.read",
            purpose="JUSTFUP",
            ctx=RequestContext(request_id="req-1"),
            referral_id=uuid.uuid4(),
        ):
            raise NotFound("no such referral")
    assert stored(engine) == [("req-1", "refused", [])]


async def test_a_waiter_that_went_away_still_has_its_access_recorded(
    gatekeeper: Gatekeeper, engine: Engine
) -> None:
    write_lock = gatekeeper.audit._write_lock
    write_lock.acquire()
    try:
        gone = asyncio.create_task(gatekeeper.writer.finish(access(gatekeeper, 1)))
        stays = asyncio.create_task(gatekeeper.writer.finish(access(gatekeeper, 2)))
        await asyncio.sleep(0.1)
        gone.cancel()
    finally:
        write_lock.release()
    await asyncio.wait_for(stays, timeout=30)
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert sorted(stored(engine)) == [
        ("req-1", "success", ["process"]),
        ("req-2", "success", ["process"]),
    ]


async def test_closing_writes_what_is_queued_and_the_next_access_starts_it_again(
    gatekeeper: Gatekeeper, engine: Engine
) -> None:
    await gatekeeper.writer.finish(access(gatekeeper, 1))
    thread = gatekeeper.writer._thread
    assert thread is not None and thread.is_alive()
    await asyncio.to_thread(gatekeeper.writer.close)
    assert not thread.is_alive()
    await gatekeeper.writer.finish(access(gatekeeper, 2))
    assert [row[0] for row in stored(engine)] == ["req-1", "req-2"]


@pytest.fixture
def windowed(make_log: LogFactory) -> Any:
    """A gatekeeper whose access writer holds a batch open for up to 2 s under load."""
    keeper = Gatekeeper(
        audit=make_log(), pseudonym_key=b"k" * 32, source_node="test", batch_window_seconds=2.0
    )
    yield keeper
    keeper.close()


async def test_a_lone_read_never_waits_for_company(windowed: Gatekeeper, engine: Engine) -> None:
    # nothing was queued while the last batch was written: each entry is written at once,
    # far within the 2 s the window could hold it
    loop = asyncio.get_running_loop()
    for n in range(3):
        started = loop.time()
        await asyncio.wait_for(windowed.writer.finish(access(windowed, n)), timeout=30)
        assert loop.time() - started < 1.0
    assert [row[0] for row in stored(engine)] == ["req-0", "req-1", "req-2"]


async def test_under_load_a_batch_takes_the_reads_the_busy_loop_is_serving(
    windowed: Gatekeeper, engine: Engine
) -> None:
    sizes = count_transactions(windowed)
    write_lock = windowed.audit._write_lock
    write_lock.acquire()  # the first batch is being written while two more reads queue
    try:
        first = asyncio.create_task(windowed.writer.finish(access(windowed, 0)))
        await asyncio.sleep(0.1)
        queued = [asyncio.create_task(windowed.writer.finish(access(windowed, n))) for n in (1, 2)]
        await asyncio.sleep(0.1)
    finally:
        write_lock.release()
    # the loop is busy (held here, without yielding) while the writer takes the two queued
    # reads; the request it serves meanwhile queues a third, which joins their batch
    time.sleep(0.3)
    late = asyncio.create_task(windowed.writer.finish(access(windowed, 3)))
    await asyncio.wait_for(asyncio.gather(first, *queued, late), timeout=30)
    assert sizes == [1, 3]
    assert sorted(row[0] for row in stored(engine)) == [f"req-{n}" for n in range(4)]


async def test_a_loop_busy_beyond_the_window_does_not_hold_the_batch(
    make_log: LogFactory, engine: Engine
) -> None:
    keeper = Gatekeeper(
        audit=make_log(), pseudonym_key=b"k" * 32, source_node="test", batch_window_seconds=0.2
    )
    try:
        write_lock = keeper.audit._write_lock
        write_lock.acquire()
        try:
            waiting = [asyncio.create_task(keeper.writer.finish(access(keeper, 0)))]
            await asyncio.sleep(0.1)  # the first batch, of one, waits for the lock
            waiting += [
                asyncio.create_task(keeper.writer.finish(access(keeper, n))) for n in (1, 2)
            ]
            await asyncio.sleep(0.1)
        finally:
            write_lock.release()
        # the loop stays busy (held here, without yielding): the batch of the two queued
        # reads is written once its 0.2 s are over, while the loop has still not turned
        deadline = time.monotonic() + 10
        while len(stored(engine)) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(stored(engine)) == 3
        await asyncio.wait_for(asyncio.gather(*waiting), timeout=30)
    finally:
        keeper.close()
