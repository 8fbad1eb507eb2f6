"""Database engine, sessions and migrations (SQLite embedded, PostgreSQL in production)."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Dialect, Engine, Select, event
from sqlalchemy import select as columns  # a Core select of several columns
from sqlalchemy.exc import DBAPIError, MultipleResultsFound
from sqlalchemy.orm import SessionTransaction
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


class Rows:
    """The rows of a prepared read (`read_rows`), as plain tuples, with the few accessors
    its callers use."""

    __slots__ = ("_rows",)

    def __init__(self, rows: Sequence[tuple[Any, ...]]) -> None:
        self._rows = rows

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return iter(self._rows)

    def first(self) -> tuple[Any, ...] | None:
        return self._rows[0] if self._rows else None

    def one_or_none(self) -> tuple[Any, ...] | None:
        if len(self._rows) > 1:
            raise MultipleResultsFound("more than one row where at most one was expected")
        return self.first()

    def scalar(self) -> Any:
        return self._rows[0][0] if self._rows else None

    def scalars(self) -> list[Any]:
        return [row[0] for row in self._rows]


class _Plan(NamedTuple):
    """A prepared read compiled for SQLite: its SQL, how to make its parameters, and how
    to convert each column of its rows."""

    sql: str
    # per positional parameter: its name, its value when the statement fixes it (a LIMIT),
    # or _GIVEN (taken from the call's parameters), and its type's conversion
    parameters: tuple[tuple[str, Any, Callable[[Any], Any] | None], ...]
    # per column, its type's conversion; None when no column has one
    columns: tuple[Callable[[Any], Any] | None, ...] | None


_GIVEN = object()


class PreparedRead:
    """A select of columns built once, for the reads behind every access.

    On an SQLite engine that nothing traces, it is compiled once and runs straight on the
    session's DBAPI connection, with the conversions of its columns' own types: the same
    rows as SQLAlchemy's execution gives, without its per-statement Python (execution
    context, compiled-cache lookup, result metadata), which cost a read of one referral
    three times what SQLite took to answer. Elsewhere (PostgreSQL, or a traced engine, whose
    statement events must fire) it runs through SQLAlchemy."""

    def __init__(self, statement: Select[Any]) -> None:
        self.statement = statement
        self._plans: dict[str, _Plan | None] = {}

    def plan(self, dialect: Dialect) -> _Plan | None:
        """The statement compiled for `dialect`, or None where it runs through SQLAlchemy."""
        try:
            return self._plans[dialect.name]
        except KeyError:
            pass
        plan = None
        if dialect.name == "sqlite":
            compiled = self.statement.compile(dialect=dialect)
            binds = compiled.binds
            names = compiled.positiontup or ()
            if "POSTCOMPILE" not in compiled.string and not any(
                bind.expanding for bind in binds.values()
            ):
                parameters = tuple(
                    (
                        name,
                        _GIVEN if binds[name].required else binds[name].effective_value,
                        binds[name].type.dialect_impl(dialect).bind_processor(dialect),
                    )
                    for name in names
                )
                columns = tuple(
                    column.type.dialect_impl(dialect).result_processor(dialect, None)
                    for column in self.statement.selected_columns
                )
                plan = _Plan(compiled.string, parameters, columns if any(columns) else None)
        self._plans[dialect.name] = plan
        return plan


_PINNED_CONNECTION = "services.db.read_rows"


def _pinned_connection(session: Session) -> tuple[Connection, Any | None]:
    """The session's connection in its current transaction, and its DBAPI connection when
    prepared reads may run on it (nothing traces its engine's statements), else None.
    Pinned in the session for that transaction: asking the session again costs a read
    more Python than its statement. The pin holds the transaction weakly (`pinned_to`)."""
    transaction = session.get_transaction()
    pinned = session.info.get(_PINNED_CONNECTION)
    if pinned is not None and transaction is not None and pinned[0]() is transaction:
        return pinned[1], pinned[2]
    connection = session.connection()
    engine = connection.engine
    traced = engine.dispatch.before_cursor_execute or engine.dispatch.after_cursor_execute
    dbapi_connection = None if traced else connection.connection.dbapi_connection
    session.info[_PINNED_CONNECTION] = (
        pinned_to(session.get_transaction()),
        connection,
        dbapi_connection,
    )
    return connection, dbapi_connection


def _no_transaction() -> None:
    return None


def pinned_to(transaction: SessionTransaction | None) -> Callable[[], object]:
    """What a pin in `session.info` keeps of the transaction it holds for: a weak reference,
    called to compare with the session's current transaction. A strong one made a cycle
    (session, its info, the pin, the transaction, back to the session), so every read's
    session, connection and transaction outlived it until a garbage collection: about 44
    objects a read, collected in the event loop's thread."""
    return _no_transaction if transaction is None else weakref.ref(transaction)


def read_rows(session: Session, prepared: PreparedRead, params: Mapping[str, Any]) -> Rows:
    """A prepared read of columns (`PreparedRead`), run below the ORM on the session's
    connection: no entity objects and no ORM execution context. The session's pending
    changes are flushed first, as the ORM's autoflush would before its own read, so the
    rows include them."""
    session.flush()
    connection, dbapi_connection = _pinned_connection(session)
    plan = None if dbapi_connection is None else prepared.plan(connection.dialect)
    if dbapi_connection is None or plan is None:
        return Rows([tuple(row) for row in connection.execute(prepared.statement, params)])
    values = []
    for name, fixed, convert in plan.parameters:
        value = params[name] if fixed is _GIVEN else fixed
        values.append(value if convert is None else convert(value))
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(plan.sql, values)
        fetched = cursor.fetchall()
    except connection.dialect.loaded_dbapi.Error as error:
        # as SQLAlchemy raises it ("database is locked" is an OperationalError: a 503)
        raise DBAPIError.instance(
            plan.sql, values, error, connection.dialect.loaded_dbapi.Error
        ) from error
    finally:
        cursor.close()
    columns = plan.columns
    if columns is None:
        return Rows(fetched)
    return Rows(
        [
            tuple(
                value if convert is None else convert(value)
                for convert, value in zip(columns, row, strict=True)
            )
            for row in fetched
        ]
    )


def record_columns(model: type[Any], record: type[tuple[Any, ...]]) -> Select[Any]:
    """A Core select of `model`'s columns named as `record`'s fields (a NamedTuple), in
    their order, so that `record(*row)` is the row: the two cannot drift apart."""
    fields: tuple[str, ...] = getattr(record, "_fields")  # noqa: B009 - a NamedTuple's own
    return columns(*(col(getattr(model, name)) for name in fields))
