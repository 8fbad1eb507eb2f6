"""One writer at a time on an SQLite file, across processes, woken as soon as it may write.

SQLite lets one connection write at a time. A connection that finds the file locked waits
in SQLite's busy handler, which sleeps 1, 2, 5, 10, ... ms and then 100 ms between tries:
it does not learn when the lock is released. Under load (the API, the worker and their
threads all writing), most writers met a taken lock and slept in 100 ms steps while the
file was free: in one run of 64 concurrent lifecycles the worker's threads slept about six
thread-seconds per second, the API's three.

Here a writer first takes its turn: an exclusive `flock` on `<database>-writer.lock`, held
from its first write statement to its commit or rollback, exactly the span of SQLite's own
write lock. The kernel wakes a process blocked on `flock` as soon as the holder lets go (and
releases the lock of a process that dies), so the wait is as long as the write before it.
Within a process, threads queue on a lock of their own and only one of them waits on the
file. A writer that does not take turns (the sqlite3 shell, a migration) still meets
SQLite's lock and its busy handler, as before.

No wait is unbounded: a turn not taken within the statement time-out fails as SQLite does,
with "database is locked" (`services.db.pool_exhausted`: a 503). Such a failure is logged
with what holds the turn (`holders`): in this process, the thread and for how long, and
where its code is now (file, line and function only: no value); else another process.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import sys
import threading
import time
import traceback
import weakref
from collections.abc import Iterable
from pathlib import Path
from types import FrameType
from typing import Any

logger = logging.getLogger(__name__)

# Statements after which SQLite holds its write lock until the transaction ends. In the
# driver's default mode a transaction begins implicitly before INSERT, UPDATE, DELETE and
# REPLACE; BEGIN IMMEDIATE and BEGIN EXCLUSIVE take the lock themselves; DDL writes the
# schema. Only statements that surely write take a turn: a write missed here (none of
# ours: a WITH ... INSERT) is still serialised by SQLite's lock, through its busy handler,
# while a read taken for a write could wait on its own thread's turn.
_WRITES = (
    "INSERT",
    "UPDATE",
    "DELETE",
    "REPLACE",
    "BEGIN IMMEDIATE",
    "BEGIN EXCLUSIVE",
    "CREATE",
    "DROP",
    "ALTER",
)


# How long the thread that waits on the file for a writer stays without a writer to wait for.
WAITER_IDLE_SECONDS = 30.0

# Every engine's turns in this process, to say who holds a file's turn when one is not had.
_ALL_TURNS: weakref.WeakSet[WriteTurns] = weakref.WeakSet()
# The packages whose frames a report names (the rest is the libraries' plumbing).
_OUR_CODE = tuple(
    f"{os.sep}{package}{os.sep}" for package in ("services", "api", "workflows", "bench", "tests")
)


def writes(sql: str) -> bool:
    """Whether `sql` takes SQLite's write lock until the end of its transaction."""
    return sql.lstrip()[:16].upper().startswith(_WRITES)


class WriteTurns:
    """The turns of one database file for one engine's connections (a second engine, in
    this process or another, has its own and waits on the same file lock)."""

    def __init__(self, database: Path, timeout: float) -> None:
        self._timeout = timeout
        self.database = Path(database)
        # (thread ident, monotonic time) of the turn's holder, while one is held
        self.holder: tuple[int, float] | None = None
        _ALL_TURNS.add(self)
        self._fd = os.open(f"{database}-writer.lock", os.O_RDWR | os.O_CREAT, 0o600)
        weakref.finalize(self, os.close, self._fd)
        # One thread of this engine at a time holds or waits for the file lock.
        self._turn = threading.Lock()
        # The blocking wait on the file runs in a thread of its own, so that a writer can
        # give up at its deadline (flock has no time-out): `_wanted` asks it to wait,
        # `_granted` says it got the lock for the writer that asked.
        self._cond = threading.Condition()
        self._wanted = False
        self._granted = False
        self._waiting_on_file = False
        self._waiter: threading.Thread | None = None

    def take(self) -> None:
        """Wait for this engine's turn and then the file's; `sqlite3.OperationalError`
        ("database is locked") when neither came within the time-out."""
        deadline = time.monotonic() + self._timeout
        if not self._turn.acquire(timeout=self._timeout):
            raise self._not_had()
        try:
            with self._cond:
                if not self._waiting_on_file and self._try_file():
                    self.holder = (threading.get_ident(), time.monotonic())
                    return
                self._wanted, self._granted = True, False
                self._start_waiter()
                self._cond.notify_all()
                while not self._granted:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        # The waiter lets the file go again if it gets it after all.
                        self._wanted = False
                        raise self._not_had()
                    self._cond.wait(left)
                self._granted = False
                self.holder = (threading.get_ident(), time.monotonic())
        except BaseException:
            self._turn.release()
            raise

    def _not_had(self) -> sqlite3.OperationalError:
        logger.warning(
            "no write turn on the database within %g s: %s",
            self._timeout,
            "; ".join(holders(self.database)) or "held by another process",
        )
        return sqlite3.OperationalError("database is locked")

    def give_back(self) -> None:
        """End the turn taken by `take` (after the commit or rollback)."""
        self.holder = None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._turn.release()

    def _try_file(self) -> bool:
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _start_waiter(self) -> None:
        if self._waiter is None:
            self._waiter = threading.Thread(
                target=self._wait_on_file, name="sqlite-write-turns", daemon=True
            )
            self._waiter.start()

    def _wait_on_file(self) -> None:
        while True:
            with self._cond:
                while not self._wanted:
                    if not self._cond.wait(WAITER_IDLE_SECONDS) and not self._wanted:
                        # Idle: end, so that an engine no longer used can be collected
                        # (this thread holds it); the next contended turn starts another.
                        self._waiter = None
                        return
                self._waiting_on_file = True
            fcntl.flock(self._fd, fcntl.LOCK_EX)  # releases the GIL while blocked
            with self._cond:
                self._waiting_on_file = False
                if self._wanted:
                    self._wanted, self._granted = False, True
                    self._cond.notify_all()
                else:  # the writer gave up meanwhile
                    fcntl.flock(self._fd, fcntl.LOCK_UN)


def holders(database: Path) -> list[str]:
    """Who in this process holds a turn on `database` now: for each engine's holder, its
    thread, for how long, and where its code is (frames of our packages, innermost first)."""
    frames = sys._current_frames()
    names = {thread.ident: thread.name for thread in threading.enumerate()}
    found = []
    for turns in list(_ALL_TURNS):
        holder = turns.holder
        if holder is None or turns.database != database:
            continue
        ident, since = holder
        where = _our_frames(frames.get(ident))
        found.append(
            f"thread {names.get(ident, ident)!s} for {time.monotonic() - since:.1f} s"
            + (" (the waiting thread itself)" if ident == threading.get_ident() else "")
            + (f", at {' < '.join(where)}" if where else "")
        )
    return found


def _our_frames(frame: FrameType | None, limit: int = 8) -> list[str]:
    where: list[str] = []
    for each, line in traceback.walk_stack(frame) if frame is not None else ():
        code = each.f_code
        if any(part in code.co_filename for part in _OUR_CODE):
            where.append(f"{Path(code.co_filename).name}:{line} {code.co_name}")
            if len(where) == limit:
                break
    return where


class TurnTakingCursor(sqlite3.Cursor):
    """A cursor whose writes first take their connection's turn."""

    def execute(self, sql: str, parameters: Any = (), /) -> TurnTakingCursor:
        _before(self.connection, sql)
        super().execute(sql, parameters)
        return self

    def executemany(self, sql: str, seq_of_parameters: Iterable[Any], /) -> TurnTakingCursor:
        _before(self.connection, sql)
        super().executemany(sql, seq_of_parameters)
        return self

    def executescript(self, sql_script: str, /) -> TurnTakingCursor:
        _before(self.connection, "CREATE")  # a script may write anything
        super().executescript(sql_script)
        return self


def _before(connection: sqlite3.Connection, sql: str) -> None:
    if isinstance(connection, TurnTakingConnection):
        connection.before(sql)


class TurnTakingConnection(sqlite3.Connection):
    """An sqlite3 connection that holds its engine's turn from its first write to the end
    of that transaction (`WriteTurns`); `turns` is set when the engine connects."""

    turns: WriteTurns | None = None
    _holds_turn = False

    def before(self, sql: str) -> None:
        """Take the turn before the first statement that writes."""
        if self.turns is not None and not self._holds_turn and writes(sql):
            self.turns.take()
            self._holds_turn = True

    def cursor(self, factory: Any = TurnTakingCursor) -> Any:
        return super().cursor(factory)

    # The connection's own shortcuts would run on a plain cursor, below the overrides.
    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        cursor: TurnTakingCursor = self.cursor()
        return cursor.execute(sql, parameters)

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> sqlite3.Cursor:
        cursor: TurnTakingCursor = self.cursor()
        return cursor.executemany(sql, parameters)

    def executescript(self, sql_script: str, /) -> sqlite3.Cursor:
        cursor: TurnTakingCursor = self.cursor()
        return cursor.executescript(sql_script)

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self._end_turn()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self._end_turn()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._give_back()  # closing ended the transaction

    def __del__(self) -> None:
        # A connection dropped while it held the turn (no commit, rollback or close: the
        # pool always closes its own) must not keep every other writer waiting.
        self._give_back()

    def _end_turn(self) -> None:
        # A commit that failed (the disk is full) leaves the transaction open: the turn
        # stays until its rollback.
        if self._holds_turn and not self.in_transaction:
            self._give_back()

    def _give_back(self) -> None:
        if self._holds_turn and self.turns is not None:
            self._holds_turn = False
            self.turns.give_back()
