"""Writers of one SQLite file take turns (services/write_turns.py): a waiting writer is
woken when the writer before it ends, not by SQLite's busy handler; a turn not taken in
time is a locked database (503); a writer that dies gives its turn back.

Two engines on one file stand for two processes: each has its own turns and its own
descriptor of the lock file, and `flock` locks belong to the descriptor."""

from __future__ import annotations

import gc
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from services import write_turns
from services.db import make_engine, pool_exhausted
from services.write_turns import TurnTakingConnection, WriteTurns, writes


@pytest.fixture
def url(tmp_path: Path) -> Iterator[str]:
    url = f"sqlite:///{tmp_path / 'turns.db'}"
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (writer TEXT)"))
    engine.dispose()
    yield url


def rows(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return [r for (r,) in conn.execute(text("SELECT writer FROM t ORDER BY writer"))]


def write_without_busy_handler(engine: Engine, writer: str, errors: list[BaseException]) -> None:
    """Insert a row on a connection whose SQLite busy handler gives up at once: only the
    turns can make it wait for another writer."""
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA busy_timeout=0")
            conn.execute(text("INSERT INTO t VALUES (:w)"), {"w": writer})
            conn.commit()
    except BaseException as error:
        errors.append(error)


def test_statements_that_take_the_write_lock_take_a_turn() -> None:
    for sql in ("INSERT INTO t VALUES (1)", "  update t set x=1", "DELETE FROM t", "REPLACE t"):
        assert writes(sql), sql
    assert writes("BEGIN IMMEDIATE") and writes("CREATE TABLE u (x)")
    for sql in ("SELECT 1", "PRAGMA busy_timeout=0", "BEGIN", "  select * from t", "WITH a AS"):
        assert not writes(sql), sql


def test_a_writer_waits_for_the_writer_before_it_and_then_writes(url: str) -> None:
    first, second = make_engine(url), make_engine(url)
    holding = first.connect()
    holding.execute(text("INSERT INTO t VALUES ('first')"))  # the write lock, uncommitted
    errors: list[BaseException] = []
    waiter = threading.Thread(target=write_without_busy_handler, args=(second, "second", errors))
    waiter.start()
    waiter.join(0.5)
    # Without turns SQLite would have refused it at once (busy_timeout=0): it waits instead.
    assert waiter.is_alive() and not errors
    holding.commit()
    waiter.join(10)
    assert not waiter.is_alive() and not errors
    assert rows(first) == ["first", "second"]
    holding.close()


def test_a_turn_not_taken_in_time_is_a_locked_database_and_writes_nothing(url: str) -> None:
    first, impatient = make_engine(url), make_engine(url, statement_timeout=0.3)
    holding = first.connect()
    holding.execute(text("INSERT INTO t VALUES ('first')"))
    errors: list[BaseException] = []
    write_without_busy_handler(impatient, "impatient", errors)
    assert len(errors) == 1 and isinstance(errors[0], OperationalError)
    assert pool_exhausted(errors[0])  # answered 503, as a locked database
    holding.commit()
    holding.close()
    # The impatient engine's waiting thread got the file once `first` committed; nobody
    # wanted it any more, so it let it go: both engines write again.
    write_without_busy_handler(first, "first again", errors)
    write_without_busy_handler(impatient, "impatient again", errors)
    assert len(errors) == 1
    assert rows(first) == ["first", "first again", "impatient again"]


HOLDER = """
import sys, time
from sqlalchemy import text
from services.db import make_engine
conn = make_engine(sys.argv[1]).connect()
conn.execute(text("INSERT INTO t VALUES ('killed')"))
print("holding", flush=True)
time.sleep(600)
"""


@contextmanager
def another_process_holding(url: str) -> Iterator[subprocess.Popen[str]]:
    """A process that holds the write turn (an uncommitted insert) until it is killed."""
    root = Path(__file__).resolve().parents[2]
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, url], cwd=root, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        yield holder
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()


def test_a_writer_that_dies_gives_its_turn_back(url: str) -> None:
    with another_process_holding(url) as holder:
        errors: list[BaseException] = []
        engine = make_engine(url)
        waiter = threading.Thread(target=write_without_busy_handler, args=(engine, "next", errors))
        waiter.start()
        waiter.join(0.5)
        assert waiter.is_alive() and not errors
        os.kill(holder.pid, signal.SIGKILL)
        waiter.join(10)
        assert not waiter.is_alive() and not errors
        assert rows(engine) == ["next"]  # the dead writer's row was never committed


def test_a_connection_dropped_while_it_holds_the_turn_gives_it_back(url: str) -> None:
    path = Path(url.split("///", 1)[1])
    turns = WriteTurns(path, timeout=5)  # outlives the connection, as its engine's do
    dropped = sqlite3.connect(path, factory=TurnTakingConnection)
    assert isinstance(dropped, TurnTakingConnection)
    dropped.turns = turns
    dropped.execute("INSERT INTO t VALUES ('dropped')")
    del dropped
    gc.collect()
    errors: list[BaseException] = []
    engine = make_engine(url)
    write_without_busy_handler(engine, "next", errors)
    assert not errors
    assert rows(engine) == ["next"]


def test_the_thread_that_waits_on_the_file_ends_when_idle_and_comes_back(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(write_turns, "WAITER_IDLE_SECONDS", 0.05)
    first, second = make_engine(url), make_engine(url)

    def contended(writer: str) -> None:
        holding = first.connect()
        holding.execute(text("INSERT INTO t VALUES ('held')"))
        errors: list[BaseException] = []
        waiter = threading.Thread(target=write_without_busy_handler, args=(second, writer, errors))
        waiter.start()
        waiter.join(0.3)
        assert waiter.is_alive()
        holding.rollback()
        holding.close()
        waiter.join(10)
        assert not waiter.is_alive() and not errors

    running = set(threading.enumerate())
    contended("before")
    started = [
        t for t in threading.enumerate() if t not in running and t.name == "sqlite-write-turns"
    ]
    assert len(started) == 1
    started[0].join(10)
    assert not started[0].is_alive()
    contended("after")  # a new one waits for the next contended turn
    assert rows(first) == ["after", "before"]


def test_a_turn_not_had_in_time_is_logged_with_where_its_holder_is(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    first, impatient = make_engine(url), make_engine(url, statement_timeout=0.3)
    taken, done = threading.Event(), threading.Event()

    def hold_the_turn() -> None:
        with first.connect() as holding:
            holding.execute(text("INSERT INTO t VALUES ('value-not-logged')"))
            taken.set()
            done.wait(10)
            holding.rollback()

    holder = threading.Thread(target=hold_the_turn, name="the-holder")
    holder.start()
    try:
        assert taken.wait(10)
        errors: list[BaseException] = []
        with caplog.at_level(logging.WARNING, logger=write_turns.__name__):
            write_without_busy_handler(impatient, "impatient", errors)
    finally:
        done.set()
        holder.join(10)
    assert len(errors) == 1 and pool_exhausted(errors[0])
    [record] = [r for r in caplog.records if r.name == write_turns.__name__]
    message = record.getMessage()
    assert "no write turn on the database within 0.3 s: thread the-holder for 0." in message
    assert "test_write_turns.py:" in message and " hold_the_turn" in message
    assert "value-not-logged" not in message and "waiting thread itself" not in message


def test_a_turn_held_by_another_process_is_logged_so(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    errors: list[BaseException] = []
    with another_process_holding(url):
        with caplog.at_level(logging.WARNING, logger=write_turns.__name__):
            write_without_busy_handler(make_engine(url, statement_timeout=0.3), "next", errors)
    assert len(errors) == 1 and pool_exhausted(errors[0])
    [record] = [r for r in caplog.records if r.name == write_turns.__name__]
    assert record.getMessage().endswith(": held by another process")
