"""The consent and care-team stores on a real (SQLite) database: an expired consent is
stored as expired, by a read and by the workflow's expiry; a withdrawal after the end needs
no workflow; assignments are idempotent and released at once."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from services import care_team, consent, projection
from services.errors import Conflict, NotFound
from services.lifecycle import Snapshot, Stage, TaskStatus
from services.models import Consent, Referral

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def referral(session: Session, stage: Stage, provider: str | None = "cgg") -> Referral:
    row = Referral(
        id=uuid.uuid4(),
        framework_id=uuid.uuid4(),
        referring_office="pk",
        created_by="s",
        district="d",
        target_group="substance_use",
        language="nl",
        stage=stage.value,
        status="x",
        business_status="x",
        accepted_provider=provider,
        reporting_consent=True,
        subject_pseudonym="p",
        name_pseudonym="n",
    )
    session.add(row)
    return row


def consent_of(session: Session, row: Referral, **fields: object) -> Consent:
    values: dict[str, object] = {
        "id": uuid.uuid4(),
        "referral_id": row.id,
        "status": "active",
        "recorded_by": "s",
        "recorded_by_organisation": "pk",
        "valid_from": NOW - timedelta(days=1),
        "valid_until": NOW + timedelta(days=1),
    }
    values.update(fields)
    stored = Consent(**values)
    session.add(stored)
    return stored


def test_a_read_after_the_validity_stores_expired(engine: Engine) -> None:
    with Session(engine) as session:
        row = referral(session, Stage.IN_PROGRESS)
        stored = consent_of(session, row, valid_until=NOW)
        kept = consent_of(session, referral(session, Stage.IN_PROGRESS))
        session.flush()
        assert [c.status for c in consent.list_for(session=session, referral_id=row.id)] == [
            "active"
        ]  # without a moment, a plain read
        listed = consent.list_for(session=session, referral_id=row.id, at=NOW)
        assert [c.status for c in listed] == ["expired"]
        session.commit()
        session.refresh(stored)
        session.refresh(kept)
        assert stored.status == "expired" and kept.status == "active"


def test_the_workflows_expiry_stores_expired(engine: Engine) -> None:
    with Session(engine) as session:
        row = referral(session, Stage.IN_PROGRESS)
        stored = consent_of(session, row, valid_until=NOW)
        session.flush()
        snapshot = Snapshot(
            referral_id=row.id,
            stage=Stage.CANCELLED,
            status=TaskStatus.CANCELLED,
            business_status="consent_expired",
            version=5,
            referring_office="pk",
            updated_at=NOW,
        )
        assert projection.apply_snapshot(
            session=session, snapshot=snapshot, reason="consent_expired"
        )
        session.flush()
        session.refresh(stored)
        assert stored.status == "expired"


def test_a_withdrawal_after_the_end(engine: Engine) -> None:
    with Session(engine) as session:
        open_case = referral(session, Stage.IN_PROGRESS)
        consent_of(session, open_case)
        ended = referral(session, Stage.OUTCOME_REPORTED)
        stored = consent_of(session, ended)
        session.flush()
        # while care runs the workflow withdraws, not this path
        with pytest.raises(Conflict):
            consent.withdraw_after_end(session=session, referral=open_case, at=NOW)
        assert consent.withdraw_after_end(session=session, referral=ended, at=NOW) == 1
        assert stored.status == "withdrawn" and stored.withdrawn_at == NOW
        assert ended.reporting_consent is False
        with pytest.raises(Conflict):  # nothing left to withdraw
            consent.withdraw_after_end(session=session, referral=ended, at=NOW)


def test_assignments(engine: Engine) -> None:
    with Session(engine) as session:
        row = referral(session, Stage.IN_PROGRESS)
        session.flush()
        first, new = care_team.assign(session=session, referral=row, subject="w1", by="c", at=NOW)
        assert new
        again, new = care_team.assign(session=session, referral=row, subject="w1", by="c", at=NOW)
        assert not new and again.id == first.id
        session.flush()
        assert care_team.assigned_subjects(session=session, referral=row) == {"w1"}
        care_team.release(session=session, referral=row, subject="w1", by="c", at=NOW)
        session.flush()
        assert care_team.assigned_subjects(session=session, referral=row) == frozenset()
        with pytest.raises(NotFound):
            care_team.release(session=session, referral=row, subject="w1", by="c", at=NOW)
        # only while care runs, and only for an accepted case
        ended = referral(session, Stage.COMPLETED)
        offered = referral(session, Stage.OFFERED, provider=None)
        for case in (ended, offered):
            with pytest.raises(Conflict):
                care_team.assign(session=session, referral=case, subject="w2", by="c", at=NOW)
