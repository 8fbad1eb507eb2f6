"""What a session leaves to the garbage collector once it is closed."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable

from sqlalchemy import Engine
from sqlmodel import Session


def left_for_the_collector(engine: Engine, use: Callable[[Session], object]) -> list[str]:
    """Open a session on `engine`, `use` it, close it, all with the collector off: the names
    of what reference counting did not free of the session and its transaction (none when
    no cycle holds them)."""
    gc.collect()
    gc.disable()
    try:
        session = Session(engine)
        use(session)
        transaction = session.get_transaction()
        assert transaction is not None, "the use began no transaction"
        watched = {"session": weakref.ref(session), "transaction": weakref.ref(transaction)}
        del transaction
        session.close()
        del session
        return [name for name, ref in watched.items() if ref() is not None]
    finally:
        gc.enable()
