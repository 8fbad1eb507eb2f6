"""Database engine, sessions and migrations (SQLite embedded, PostgreSQL in production)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, Executable, Result, Select, event
from sqlalchemy import select as columns  # a Core select of several columns
from sqlmodel import Session, col, create_engine

from services.write_turns import TurnTakingConnection, WriteTurns

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def make_engine(
    url: str,
    *,
    pool_size: int = 10,
    max_overflow: int = 10,
    pool_timeout: float = 30.0,
    statement_timeout: float = 30.0,
) -> Engine:
    """An engine for `url` with a bounded pool; SQLite gets foreign keys, WAL, a busy
    timeout and turns for its writers (`services.write_turns`), PostgreSQL a statement
    timeout, so no wait is unbounded."""
    pool = {"pool_size": pool_size, "max_overflow": max_overflow, "pool_timeout": pool_timeout}
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        memory = not path or path == ":memory:"
        if not memory:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        busy_ms = int(statement_timeout * 1000)
        connect_args: dict[str, Any] = {"check_same_thread": False, "timeout": statement_timeout}
        # writers of a file take turns, woken as soon as the writer before them is done
        turns = None if memory else WriteTurns(Path(path), statement_timeout)
        if turns is not None:
            connect_args["factory"] = TurnTakingConnection
        engine = create_engine(url, connect_args=connect_args, **({} if memory else pool))

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):  # type: ignore[no-untyped-def]
            if turns is not None:
                dbapi_connection.turns = turns
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            # freed space is zeroed: a deleted row (a purged referral's fingerprints) does
            # not stay readable in the file's free pages
            cursor.execute("PRAGMA secure_delete=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
            cursor.close()

        return engine
    options = f"-c statement_timeout={int(statement_timeout * 1000)}"
    return create_engine(url, pool_pre_ping=True, connect_args={"options": options}, **pool)


def pool_exhausted(error: BaseException) -> bool:
    """Whether `error` says no pooled connection (or database lock) came in time."""
    from sqlalchemy.exc import OperationalError
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    if isinstance(error, PoolTimeout):
        return True
    if isinstance(error, OperationalError):
        message = str(error.orig).lower()
        return "database is locked" in message or "statement timeout" in message
    return False


def database_unavailable(error: BaseException) -> bool:
    """Whether `error` says the database cannot be reached now (restart, failover, network),
    as opposed to a query it refused: the caller may try again once it is back."""
    from sqlalchemy.exc import DBAPIError, OperationalError

    if not isinstance(error, DBAPIError):
        return False
    if error.connection_invalidated:
        return True  # SQLAlchemy saw the connection drop; the pool makes new ones
    sqlstate: str | None = getattr(error.orig, "sqlstate", None)
    if sqlstate:
        # class 08: connection exception; 57P01-57P05: the server shuts down, crashed,
        # cannot take connections yet, or the session was idle too long
        return sqlstate.startswith("08") or sqlstate.startswith("57P")
    # psycopg reports a failed connect (refused, reset, timed out) without a SQLSTATE
    return isinstance(error, OperationalError) and type(error.orig).__module__.startswith("psycopg")


def alembic_config(url: str) -> Config:
    """The Alembic configuration pointing at our migrations and at `url`."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def migrate(url: str) -> None:
    """Bring the database at `url` to the newest schema."""
    command.upgrade(alembic_config(url), "head")


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def read_rows(session: Session, statement: Executable, params: Mapping[str, Any]) -> Result[Any]:
    """A prebuilt read of columns, run below the ORM on the session's connection: no entity
    objects and no ORM execution context, about a third of the ORM's Python per statement
    on the reads every party polls. The session's pending changes are flushed first, as the
    ORM's autoflush would before its own read, so the rows include them."""
    session.flush()
    return session.connection().execute(statement, params)


def record_columns(model: type[Any], record: type[tuple[Any, ...]]) -> Select[Any]:
    """A Core select of `model`'s columns named as `record`'s fields (a NamedTuple), in
    their order, so that `record(*row)` is the row: the two cannot drift apart."""
    fields: tuple[str, ...] = getattr(record, "_fields")  # noqa: B009 - a NamedTuple's own
    return columns(*(col(getattr(model, name)) for name in fields))
