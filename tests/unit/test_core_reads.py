"""The reads every access makes run below the ORM (`services.db.read_rows`): they answer what
the ORM's reads answered, and they see the session's pending changes as the ORM's autoflush
let them, so a withdrawal added earlier in a transaction is never read as still active."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Column, Engine, MetaData, String, Table, bindparam, event
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlmodel import Session, SQLModel, col, select

from services import care_team, policy, referrals
from services import consent as consent_service
from services.crypto import envelope
from services.db import PreparedRead, make_engine, read_rows
from services.models import (
    CareTeamAssignment,
    Consent,
    FrameworkParticipant,
    JusticeMessage,
    Organisation,
    Referral,
    StatusHistory,
)
from tests.factories import projection_row
from tests.refcounts import left_for_the_collector

NOW = datetime.now(UTC).replace(microsecond=0)


def _case(session: Session) -> Referral:
    framework = uuid.uuid4()
    for code, sector in (("pk", "justice"), ("cgg", "health")):
        session.add(
            Organisation(code=code, name=code, sector=sector, district="d", languages=["nl"])
        )
        session.add(FrameworkParticipant(framework_id=framework, organisation_code=code))
    row = projection_row(
        framework,
        provider="cgg",
        personal={"identity.name": "v1.sealed"},
        consent_deadline=NOW + timedelta(days=3),
        decision="accepted",
    )
    session.add(row)
    session.add(
        CareTeamAssignment(
            referral_id=row.id, organisation="cgg", subject="worker", assigned_by="coordinator"
        )
    )
    return row


def _consent(row: Referral, version: int, status: str, **extra: object) -> Consent:
    return Consent(
        id=uuid.uuid4(),
        referral_id=row.id,
        version=version,
        status=status,
        purposes=["care"],
        categories=["identity", "compliance"],
        recipients=["pk"],
        disclosers=["cgg"],
        recorded_by="s",
        recorded_by_organisation="cgg",
        valid_from=NOW - timedelta(days=1),
        valid_until=NOW + timedelta(days=30),
        **extra,
    )


def _history(row: Referral, version: int, stage: str, reason: str = "") -> StatusHistory:
    return StatusHistory(
        referral_id=row.id,
        version=version,
        stage=stage,
        status="x",
        business_status="x",
        reason=reason,
        at=NOW + timedelta(minutes=version),
    )


def _message(row: Referral, key: str, fact: str, minutes: int) -> JusticeMessage:
    return JusticeMessage(
        key=key,
        referral_id=row.id,
        recipient="pk",
        fact=fact,
        notice="n",
        created_at=NOW + timedelta(minutes=minutes),
    )


def test_the_reads_answer_what_the_orm_answered(engine: Engine) -> None:
    with Session(engine) as session:
        row = _case(session)
        session.add(_consent(row, 1, "active"))
        session.add(_consent(row, 2, "active", withdrawn_at=NOW + timedelta(hours=1)))
        for version, stage in enumerate(("offered", "accepted", "in_progress"), start=1):
            session.add(_history(row, version, stage, "intake" if version == 3 else ""))
        session.add(_message(row, "b", "attending", 2))
        session.add(_message(row, "a", "consent_withdrawn", 2))
        session.add(_message(row, "c", "attending", 1))
        session.commit()

        orm_consent = session.exec(
            select(Consent).where(Consent.referral_id == row.id).order_by(col(Consent.version))
        ).all()[-1]
        orm_history = session.exec(
            select(StatusHistory)
            .where(StatusHistory.referral_id == row.id)
            .order_by(col(StatusHistory.version))
        ).all()
        orm_messages = session.exec(
            select(JusticeMessage)
            .where(JusticeMessage.referral_id == row.id)
            .order_by(col(JusticeMessage.created_at), col(JusticeMessage.key))
        ).all()

        for at in (NOW, NOW + timedelta(hours=2), NOW + timedelta(days=31)):
            assert referrals.consent_facts(
                session=session, referral_id=row.id, at=at
            ) == consent_service.facts(orm_consent, at)
        history = referrals.status_history(session=session, referral_ids=[row.id])[row.id]
        assert [(h.version, h.stage, h.reason, h.at) for h in history] == [
            (h.version, h.stage, h.reason, h.at) for h in orm_history
        ]
        # many referrals at once: the same rows
        assert (
            referrals.status_history(session=session, referral_ids=[row.id, uuid.uuid4()])[row.id]
            == history
        )
        messages = referrals.justice_messages(session=session, referral_id=row.id)
        assert [(m.key, m.fact, m.notice, m.created_at, m.received_at) for m in messages] == [
            (m.key, m.fact, m.notice, m.created_at, m.received_at) for m in orm_messages
        ]
        assert [m.key for m in messages] == ["c", "a", "b"]
        record = referrals.find(session=session, referral_id=row.id)
        assert record is not None
        assert record._asdict() == {name: getattr(row, name) for name in record._fields}
        assert referrals.find(session=session, referral_id=uuid.uuid4()) is None
        assert referrals.case_facts(session=session, referral=record) == referrals.case_facts(
            session=session, referral=row
        )
        assert referrals.case_facts(session=session, referral=row).assigned_workers == {"worker"}
        assert referrals.case_facts(session=session, referral=row).accepted_provider_sector == (
            "health"
        )


def test_the_reads_see_what_the_transaction_added_before_them(engine: Engine) -> None:
    with Session(engine) as session:
        row = _case(session)
        session.add(_consent(row, 1, "active"))
        session.commit()
        assert referrals.consent_facts(session=session, referral_id=row.id) is not None

        # added in this transaction, neither flushed nor committed
        session.add(_consent(row, 2, "withdrawn", withdrawn_at=NOW))
        session.add(_history(row, 1, "closed", "consent_withdrawn"))
        session.add(_message(row, "w", "consent_withdrawn", 0))
        assignment = session.exec(select(CareTeamAssignment)).one()
        assignment.released_at = NOW
        assignment.released_by = "coordinator"
        session.add(assignment)

        facts = referrals.consent_facts(session=session, referral_id=row.id)
        assert facts is not None and facts.status is policy.ConsentState.WITHDRAWN
        history = referrals.status_history(session=session, referral_ids=[row.id])[row.id]
        assert [h.stage for h in history] == ["closed"]
        assert [
            m.fact for m in referrals.justice_messages(session=session, referral_id=row.id)
        ] == ["consent_withdrawn"]
        assert care_team.assigned_subjects(session=session, referral=row) == frozenset()


def _prepared() -> list[PreparedRead]:
    return [
        value
        for module in (referrals, care_team, envelope)
        for value in vars(module).values()
        if isinstance(value, PreparedRead)
    ]


def test_each_prepared_read_answers_what_sqlalchemy_answers(engine: Engine) -> None:
    """Below SQLAlchemy's execution, a prepared read converts each column by its own type:
    the same values, of the same types (UUIDs, aware datetimes, JSON), None included."""
    with Session(engine) as session:
        row = _case(session)
        session.add(_consent(row, 1, "active", withdrawn_at=None))
        session.add(_consent(row, 2, "withdrawn", withdrawn_at=NOW))
        session.add(_history(row, 1, "offered"))
        session.add(_message(row, "a", "attending", 1))
        session.commit()
        vault_key = envelope.ReferralDataKey(
            referral_id=row.id, wrapped_key=b"k" * 40, kek_version="dev-1", created_at=NOW
        )
        session.add(vault_key)
        session.commit()
        params = {
            "referral_id": row.id,
            "referral_ids": [row.id, uuid.uuid4()],
            "framework_id": row.framework_id,
            "code": "cgg",
            "organisation": "cgg",
        }
        prepared = _prepared()
        assert len(prepared) >= 9
        compiled = [read for read in prepared if read.plan(engine.dialect) is not None]
        # every one but the expanding IN is compiled once and run on the DBAPI cursor
        assert len(compiled) == len(prepared) - 1
        for read in prepared:
            fast = list(read_rows(session, read, params))
            reference = [tuple(r) for r in session.connection().execute(read.statement, params)]
            assert fast, read.statement
            assert fast == reference
            assert [[type(v) for v in r] for r in fast] == [[type(v) for v in r] for r in reference]


def test_a_traced_engine_sees_every_prepared_read(engine: Engine) -> None:
    """With a listener on the engine's statements (OpenTelemetry's), the reads run through
    SQLAlchemy, so each one is seen."""
    seen: list[str] = []

    def trace(_conn, _cursor, statement, *_rest):  # type: ignore[no-untyped-def]
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", trace)
    try:
        with Session(engine) as session:
            row = _case(session)
            session.commit()
            assert referrals.find(session=session, referral_id=row.id) is not None
            assert referrals.justice_messages(session=session, referral_id=row.id) == []
    finally:
        event.remove(engine, "before_cursor_execute", trace)
    assert any("FROM referral" in statement for statement in seen)
    assert any("FROM justice_message" in statement for statement in seen)


def test_a_refusal_of_the_database_is_sqlalchemys_error(engine: Engine) -> None:
    """An error of the DBAPI (a locked database, here a missing table) is raised as
    SQLAlchemy raises it, so that "database is locked" is still a 503."""
    missing = Table("no_such_table", MetaData(), Column("code", String))
    read = PreparedRead(select(missing.c.code).where(missing.c.code == bindparam("code")))
    with Session(engine) as session:
        assert read.plan(engine.dialect) is not None
        with pytest.raises(OperationalError, match="no such table"):
            read_rows(session, read, {"code": "x"})


def test_a_read_after_the_transaction_ended_takes_the_sessions_next_connection(
    tmp_path: Path,
) -> None:
    """The connection a session's reads run on is pinned for one transaction only: once it
    has ended, that connection may serve another session, and a read must not use it."""
    engine = make_engine(
        f"sqlite:///{tmp_path / 'one.db'}", pool_size=1, max_overflow=0, pool_timeout=0.2
    )
    SQLModel.metadata.create_all(engine)
    try:
        with Session(engine) as first, Session(engine) as second:
            assert referrals.find(session=first, referral_id=uuid.uuid4()) is None
            first.commit()  # its connection goes back to the pool of one
            assert referrals.find(session=second, referral_id=uuid.uuid4()) is None
            # the only connection is the second session's: the first one waits for it
            with pytest.raises(PoolTimeout):
                referrals.find(session=first, referral_id=uuid.uuid4())
            second.commit()
            assert referrals.find(session=first, referral_id=uuid.uuid4()) is None
    finally:
        engine.dispose()


def test_a_session_that_read_is_freed_by_its_reference_counts(engine: Engine) -> None:
    """The pins a read leaves in `session.info` (its connection, a referral's key row) hold
    their transaction weakly: a strong reference made a cycle, and every read's session,
    transaction and connection waited for a garbage collection (about 44 objects a read,
    collected on the event loop's thread)."""
    with Session(engine) as session:
        referral_id = _case(session).id
        session.commit()

    def read(session: Session) -> None:
        assert referrals.find(session=session, referral_id=referral_id) is not None

    assert left_for_the_collector(engine, read) == []
