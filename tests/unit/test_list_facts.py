"""A list's policy facts, loaded for all its rows at once, are each row's detail-view facts."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, event
from sqlmodel import Session

from services import referrals
from services.models import (
    CareTeamAssignment,
    Consent,
    FrameworkParticipant,
    Organisation,
    Referral,
)
from tests.factories import projection_row

NOW = datetime.now(UTC)


def _referral(session: Session, framework: uuid.UUID, provider: str | None) -> Referral:
    row = projection_row(framework, provider=provider)
    session.add(row)
    return row


def _assign(session: Session, row: Referral, org: str, subject: str, released: bool) -> None:
    session.add(
        CareTeamAssignment(
            referral_id=row.id,
            organisation=org,
            subject=subject,
            assigned_by="coordinator",
            released_by="coordinator" if released else None,
            released_at=NOW if released else None,
        )
    )


def _consent(session: Session, row: Referral, version: int, status: str) -> None:
    session.add(
        Consent(
            id=uuid.uuid4(),
            referral_id=row.id,
            version=version,
            status=status,
            recorded_by="s",
            recorded_by_organisation="pk",
            valid_from=NOW - timedelta(days=1),
            valid_until=NOW + timedelta(days=30),
        )
    )


def test_the_list_facts_are_the_detail_views_in_a_few_queries(engine: Engine) -> None:
    with Session(engine) as session:
        for code, sector in (("pk", "justice"), ("cgg", "health"), ("caw", "welfare")):
            session.add(
                Organisation(code=code, name=code, sector=sector, district="d", languages=["nl"])
            )
        frameworks = [uuid.uuid4(), uuid.uuid4()]
        for framework, members in zip(
            frameworks, (["pk", "cgg"], ["pk", "cgg", "caw"]), strict=True
        ):
            for code in members:
                session.add(FrameworkParticipant(framework_id=framework, organisation_code=code))
        rows = []
        for number in range(12):
            provider = [None, "cgg", "caw", "unregistered"][number % 4]
            row = _referral(session, frameworks[number % 2], provider)
            if provider is not None:
                _assign(session, row, provider, f"worker-{number}", released=False)
                _assign(session, row, provider, f"gone-{number}", released=True)
                # an assignment of another organisation than the accepting one
                _assign(session, row, "pk", f"stray-{number}", released=False)
            if number % 3:
                _consent(session, row, 1, "active")
                _consent(session, row, 2, "withdrawn" if number % 2 else "active")
            rows.append(row)
        session.commit()

        one_by_one = [
            (
                referrals.case_facts(session=session, referral=row),
                referrals.consent_facts(session=session, referral_id=row.id),
            )
            for row in rows
        ]
        statements: list[str] = []

        def count(*args: object) -> None:
            statements.append("one")

        event.listen(engine, "before_cursor_execute", count)
        listed = referrals.list_facts(session=session, rows=rows)
        event.remove(engine, "before_cursor_execute", count)

    assert listed == one_by_one
    assert {case.accepted_provider_sector for case, _ in listed} == {None, "health", "welfare"}
    assert any(case.assigned_workers for case, _ in listed)
    # frameworks, consents, sectors, assignments: not a query (or three) per row
    assert len(statements) <= 5, statements
