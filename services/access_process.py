"""The entries of the event loop's reads, written by a process of their own.

`AccessWriter` writes them from a thread of the API's process. Measured under wrk at 32
concurrent reads, that thread's share of the interpreter cost the loop more than the
entries' own work: the loop answered 800 reads/s with no entry written, 700 with the
thread taking its batches and writing nothing, 510 to 540 with the entries written. With
`REFERRAL_AUDIT_ACCESS_WRITER=process`, the default, a child process (`python -m
services.access_process`, started with the API's settings on its first line of input) writes
them, on the other core, with an interpreter of its own. On one SQLite file the child and
the API's request threads append to the log from two processes: they take turns on the
file (`services/write_turns.py`), each woken as soon as the other commits. Before those
turns they met in SQLite's busy handler, and the lifecycles lost about 10 %.

The guarantee is the thread's: a read's view leaves only once its entry is committed. The
loop sends each batch of finished accesses as one line of JSON to the child's stdin, and
waits; the child writes the batch in one transaction (`Gatekeeper.finish_together`, as the
thread does) and answers one line naming the accesses it committed, or that it could not.
If the child dies, every read waiting on it answers 503 (its entry may or may not have been
committed; the read disclosed nothing), and after a pause the next read starts a new
child. When the API goes away, the child reads the end of its input, writes what it holds
and exits.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from typing import IO
from uuid import UUID

from pydantic import BaseModel, TypeAdapter

from services.access import LOOP_TURNS, Access, Gatekeeper, RequestContext
from services.audit.models import AuditDecision, AuditEventType, AuditOutcome
from services.errors import Unavailable
from services.principal import Principal
from services.settings import Settings

logger = logging.getLogger(__name__)

# After the child ended, reads answer 503 for this long before a new one is started: a child
# that cannot start (a missing key, a broken database) is not started again on every read.
RESTART_PAUSE_SECONDS = 1.0
START_TIMEOUT_SECONDS = 60.0
NOT_RECORDED = "the access could not be recorded in the audit log; try again"
# The most accesses in one batch (one line to the child, one transaction): the rest wait for
# the next. An answer names them all, well within the pipe reader's line limit.
MAX_BATCH = 256
ANSWER_LINE_LIMIT = 1 << 20


class FinishedAccess(BaseModel):
    """One access whose entry the child writes: everything of `Access` but its gatekeeper
    (the child's own), with how it ended and its number in this API's sequence."""

    number: int
    principal: Principal
    event_type: AuditEventType
    action: str
    purpose: str
    request_id: str | None
    trace_id: str | None
    client_address: str | None
    referral_id: UUID | None
    decision: AuditDecision | None
    policy_ids: list[str]
    disclosed: list[str]
    withheld: list[str]
    person_pseudonym: str | None
    received: list[str]
    received_categories: list[str]
    outcome: AuditOutcome

    @classmethod
    def of(cls, number: int, access: Access, outcome: AuditOutcome) -> FinishedAccess:
        return cls(
            number=number,
            principal=access.principal,
            event_type=access.event_type,
            action=access.action,
            purpose=access.purpose,
            request_id=access.ctx.request_id,
            trace_id=access.ctx.trace_id,
            client_address=access.ctx.client_address,
            referral_id=access.referral_id,
            decision=access.decision,
            policy_ids=sorted(access.policy_ids),
            disclosed=list(access.disclosed),
            withheld=list(access.withheld),
            person_pseudonym=access.person_pseudonym,
            received=list(access.received),
            received_categories=list(access.received_categories),
            outcome=outcome,
        )

    def access(self, gatekeeper: Gatekeeper) -> tuple[Access, AuditOutcome]:
        """This access again, as one of `gatekeeper` (the child's)."""
        return Access(
            gatekeeper=gatekeeper,
            principal=self.principal,
            event_type=self.event_type,
            action=self.action,
            purpose=self.purpose,
            ctx=RequestContext(
                request_id=self.request_id,
                trace_id=self.trace_id,
                client_address=self.client_address,
            ),
            referral_id=self.referral_id,
            decision=self.decision,
            policy_ids=set(self.policy_ids),
            disclosed=list(self.disclosed),
            withheld=list(self.withheld),
            person_pseudonym=self.person_pseudonym,
            received=list(self.received),
            received_categories=list(self.received_categories),
        ), self.outcome


class BatchAnswer(BaseModel):
    """The child's answer to one batch: the accesses it committed, or the error it met."""

    numbers: list[int]
    error: str | None


BATCH = TypeAdapter(list[FinishedAccess])


class ProcessAccessWriter:
    """`AccessWriter`'s `finish`, with the entries written by a child process. One event loop
    (the API's) uses it: the child's pipes belong to the loop that started it.

    One batch is with the child at a time. The accesses finished meanwhile wait for its
    answer; then, as the thread's batches do under load (`AccessWriter`), they also wait
    for the loop's next turns (`LOOP_TURNS`, at most `audit_batch_window_ms` after the first of
    them) and go together: one transaction, one fsync, one commit that empties the loop's
    read cache. An access finished while the child is idle goes at the end of the turn."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._window = settings.audit_batch_window_ms / 1000
        self._process: asyncio.subprocess.Process | None = None
        # the child answers: set when it starts, cleared when its output ends (its exit
        # status may be known only later)
        self._alive = False
        self._waiting: dict[int, asyncio.Future[None]] = {}
        self._pending: list[FinishedAccess] = []
        self._in_flight = False
        self._flush_at: asyncio.TimerHandle | None = None
        self._busy = False
        self._sent = 0
        self._start_lock: asyncio.Lock | None = None
        self._paused_until = 0.0
        self._acks: asyncio.Task[None] | None = None

    async def finish(self, access: Access, outcome: AuditOutcome = AuditOutcome.SUCCESS) -> None:
        """Write `access`'s entry with `outcome`; returns once the child committed it."""
        await self._running()
        self._sent += 1
        number = self._sent
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[number] = future
        self._pending.append(FinishedAccess.of(number, access, outcome))
        if not self._in_flight and self._flush_at is None:
            self._schedule_flush()
        await future
        access.finished = True

    def _schedule_flush(self) -> None:
        """Send what is pending at the end of this turn, or, under load, after the loop's
        next turns (within the window)."""
        loop = asyncio.get_running_loop()
        if not self._busy:
            self._flush_at = loop.call_later(0, self._flush)
            return
        self._flush_at = loop.call_later(self._window, self._flush)

        def turn(left: int) -> None:
            if left == 0:
                self._flush()
            else:
                loop.call_soon(turn, left - 1)

        loop.call_soon(turn, LOOP_TURNS - 1)

    def _flush(self) -> None:
        if self._flush_at is not None:
            self._flush_at.cancel()
            self._flush_at = None
        if self._in_flight or not self._pending:
            return
        process = self._process
        batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
        if process is None or process.stdin is None or not self._alive:
            batch, self._pending = batch + self._pending, []
            self._fail([finished.number for finished in batch])
            return
        self._in_flight = True
        try:
            process.stdin.write(BATCH.dump_json(batch) + b"\n")
        except (ConnectionError, RuntimeError):
            pass  # the child is gone: its reader fails every waiter

    def _fail(self, numbers: list[int]) -> None:
        for number in numbers:
            future = self._waiting.pop(number, None)
            if future is not None and not future.done():
                future.set_exception(Unavailable(NOT_RECORDED))

    async def start(self) -> None:
        """Start the child now, and wait until it is ready, rather than at the first read."""
        await self._running()

    async def _running(self) -> asyncio.subprocess.Process:
        if self._process is not None and self._alive:
            return self._process
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if self._process is not None and self._alive:
                return self._process
            if time.monotonic() < self._paused_until:
                raise Unavailable(NOT_RECORDED)
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "services.access_process",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                limit=ANSWER_LINE_LIMIT,
            )
            assert process.stdin is not None and process.stdout is not None
            # the settings travel on its input, never in its arguments
            process.stdin.write(self._settings.model_dump_json().encode() + b"\n")
            try:
                # its first answer says it is ready to write (its start takes a second or two)
                ready = await asyncio.wait_for(process.stdout.readline(), START_TIMEOUT_SECONDS)
            except TimeoutError:
                ready = b""
            if not ready:
                self._paused_until = time.monotonic() + RESTART_PAUSE_SECONDS
                if process.returncode is None:
                    process.kill()
                await process.wait()
                logger.warning("the access writer process did not start")
                raise Unavailable(NOT_RECORDED)
            self._process = process
            self._alive = True
            self._in_flight = False
            self._acks = asyncio.create_task(self._read_acks(process))
            return process

    async def _read_acks(self, process: asyncio.subprocess.Process) -> None:
        stdout = process.stdout
        assert stdout is not None
        try:
            while line := await stdout.readline():
                answer = BatchAnswer.model_validate_json(line)
                for number in answer.numbers:
                    future = self._waiting.pop(number, None)
                    if future is None or future.done():
                        continue  # its request was cancelled meanwhile
                    if answer.error is None:
                        future.set_result(None)
                    else:
                        future.set_exception(Unavailable(NOT_RECORDED))
                self._in_flight = False
                self._busy = bool(self._pending)
                if self._pending and self._flush_at is None:
                    self._schedule_flush()
        finally:
            # the child is gone: nobody waiting on it is answered with a disclosure
            self._alive = False
            self._paused_until = time.monotonic() + RESTART_PAUSE_SECONDS
            self._in_flight = False
            self._pending = []
            self._fail(list(self._waiting))
            if process.returncode is None:
                process.kill()
            await process.wait()
            logger.warning("the access writer process ended (%s)", process.returncode)

    async def aclose(self) -> None:
        """End the child once it has written what it holds."""
        process = self._process
        if process is None or process.stdin is None:
            return
        self._flush()
        process.stdin.close()
        if self._acks is not None:
            await asyncio.wait_for(asyncio.shield(self._acks), timeout=30)

    def close(self, timeout: float = 10.0) -> None:
        """Nothing to do from outside the loop: the child ends with the API's pipes."""


def serve(stdin: IO[bytes], stdout: IO[bytes]) -> None:
    """The child: write each batch of accesses read from `stdin` (one line) in one
    transaction, and answer it on `stdout`."""
    from services.runtime import Runtime, settle_heap

    settings = Settings.model_validate_json(stdin.readline())
    runtime = Runtime.build(settings)
    settle_heap()  # as the API does: no full collection scans what start-up made
    stdout.write(BatchAnswer(numbers=[], error=None).model_dump_json().encode() + b"\n")
    stdout.flush()
    gatekeeper = runtime.gatekeeper
    try:
        for line in stdin:
            batch = BATCH.validate_json(line)
            error: str | None = None
            try:
                gatekeeper.finish_together([finished.access(gatekeeper) for finished in batch])
            except Exception as exc:  # noqa: BLE001 - every waiter learns of it
                error = type(exc).__name__
                logger.warning("entries of %d accesses not written: %s", len(batch), error)
            answer = BatchAnswer(numbers=[finished.number for finished in batch], error=error)
            stdout.write(answer.model_dump_json().encode() + b"\n")
            stdout.flush()
    finally:
        runtime.close()


if __name__ == "__main__":  # pragma: no cover - run as the API's child
    # the answers alone go to the API: whatever else would print goes to stderr
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    serve(sys.stdin.buffer, answers)
