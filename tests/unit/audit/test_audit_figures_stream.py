"""A drill-down stops at its page: the stream of entries behind it is closed then, not
later by the garbage collector (on PostgreSQL a server-side cursor, which was found closed
on a connection already back in the pool, once the window held more than a page)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta

from audit_factories import audit_event
from sqlalchemy import Engine, text

from services.audit import figures
from services.audit.log import AuditLog
from services.audit.models import AuditDecision


def test_a_drill_down_page_closes_its_stream(
    engine: Engine, make_log: Callable[..., AuditLog]
) -> None:
    make_log().append(
        [audit_event(i).model_copy(update={"decision": AuditDecision.DENY}) for i in range(12)]
    )
    today = date.today()
    window = figures.Window(today - timedelta(days=1), today + timedelta(days=1))
    with engine.connect() as conn:
        page = figures.entries(conn, figures.Figure.DENIALS, window, None, limit=5)
        assert [row.index for row in page] == [0, 1, 2, 3, 4]
        if engine.dialect.name == "postgresql":
            # this session's cursors: the stream's named cursor is gone with the page
            named = text("SELECT count(*) FROM pg_cursors WHERE name <> ''")
            assert conn.execute(named).scalar() == 0
        rest = figures.entries(conn, figures.Figure.DENIALS, window, None, offset=5, limit=50)
        assert [row.index for row in rest] == list(range(5, 12))
