"""The auditor's figures count what their definitions say: local days and office hours in
the office time zone, denials, and accesses by users with no active role in the case."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from audit_factories import audit_event
from sqlalchemy import Engine, create_engine, insert
from sqlmodel import SQLModel

from services.audit.figures import Bucket, Cases, Figure, Window, entries, figures
from services.audit.models import AUDIT_ENTRY_TABLE, AuditDecision, new_entry, pseudonymise_referral
from services.models import CareTeamAssignment, Referral

KEY = b"f" * 32
CASE = uuid.uuid4()
PURGED = uuid.uuid4()  # no referral row any more


def pseudonym(referral_id: uuid.UUID) -> str:
    return pseudonymise_referral(referral_id, KEY)


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=UTC)


# (when (UTC; Brussels is UTC+1 in November), organisation, role, subject, case, decision)
ENTRIES = [
    (at(2, 9), "parket-antwerpen", "prosecutor", "pros-1", CASE, "permit"),  # 10:00 local
    (at(2, 17, 30), "cgg-antwerpen", "intake_coordinator", "intake-1", CASE, "permit"),  # 18:30
    (at(3, 11), "cgg-antwerpen", "care_worker", "worker-1", CASE, "permit"),  # on the team
    (at(3, 13), "cgg-antwerpen", "care_worker", "worker-1", CASE, "permit"),  # released at 12:00
    (at(3, 8), "parquet-bruxelles", "prosecutor", "pros-2", CASE, "deny"),  # another office
    (at(7, 10), "dpo-office", "auditor", "dpo-1", None, "permit"),  # a Saturday, no case
    (at(1, 23, 30), "parket-antwerpen", "prosecutor", "pros-1", CASE, "permit"),  # Mon 00:30
    (at(4, 7), "cgg-antwerpen", "care_worker", "worker-2", PURGED, "permit"),  # 08:00 local
    (at(4, 16, 59), "free-clinic", "intake_coordinator", "intake-2", CASE, "deny"),  # 17:59
]


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    # Only the tables the figures read (no foreign keys enforced: no framework rows needed).
    engine = create_engine(f"sqlite:///{tmp_path / 'figures.db'}")
    tables = [AUDIT_ENTRY_TABLE, Referral.__table__, CareTeamAssignment.__table__]  # type: ignore[attr-defined]
    SQLModel.metadata.create_all(engine, tables=tables)
    rows = []
    for index, (when, org, role, subject, case, decision) in enumerate(ENTRIES):
        event = audit_event(
            index,
            actor_organisation=org,
            actor_role=role,
            actor_subject=subject,
            referral_pseudonym=None if case is None else pseudonym(case),
            decision=AuditDecision(decision),
        )
        entry = new_entry(event, index=index, recorded_at=when)
        rows.append({c.name: getattr(entry, c.name) for c in AUDIT_ENTRY_TABLE.columns})
    with engine.begin() as conn:
        conn.execute(insert(AUDIT_ENTRY_TABLE), rows)
        conn.execute(
            insert(Referral.__table__),  # type: ignore[attr-defined]
            [
                {
                    "id": CASE,
                    "framework_id": uuid.uuid4(),
                    "referring_office": "parket-antwerpen",
                    "created_by": "pros-1",
                    "district": "antwerpen",
                    "target_group": "substance_use",
                    "language": "nl",
                    "stage": "in_care",
                    "status": "active",
                    "business_status": "in_care",
                    "version": 1,
                    "offered_provider": None,
                    "accepted_provider": "cgg-antwerpen",
                    "providers_tried": ["free-clinic", "cgg-antwerpen"],
                    "reporting_consent": False,
                    "subject_pseudonym": "nn_x",
                    "name_pseudonym": "nb_x",
                    "personal": {},
                    "created_at": at(1, 8),
                    "updated_at": at(1, 8),
                }
            ],
        )
        conn.execute(
            insert(CareTeamAssignment.__table__),  # type: ignore[attr-defined]
            [
                {
                    "id": uuid.uuid4(),
                    "referral_id": CASE,
                    "organisation": "cgg-antwerpen",
                    "subject": "worker-1",
                    "assigned_by": "intake-1",
                    "assigned_at": at(3, 10),
                    "released_by": "intake-1",
                    "released_at": at(3, 12),
                }
            ],
        )
    yield engine
    engine.dispose()


def test_each_figure_counts_per_local_day(engine: Engine) -> None:
    window = Window(date(2026, 11, 2), date(2026, 11, 8))
    with engine.connect() as conn:
        found = figures(conn, window, Cases(conn, pseudonym))
    assert found["buckets"] == [f"2026-11-0{d}" for d in range(2, 9)]
    got = found["figures"]
    # Mon: entries 0, 1 and 6 (00:30 local); Tue: 2, 3, 4; Wed: 7, 8; Sat: 5
    assert got["accesses"]["counts"] == [3, 3, 2, 0, 0, 1, 0]
    assert got["denials"]["counts"] == [0, 1, 1, 0, 0, 0, 0]
    # 18:30 and 00:30 on Monday, 09:00 local on Tuesday is within; Saturday; 08:00 and 17:59 in
    assert got["outside_office_hours"]["counts"] == [2, 0, 0, 0, 0, 1, 0]
    # after the release (3), another office (4), a purged case (7); the auditor's entry has no case
    assert got["no_active_role"]["counts"] == [0, 2, 1, 0, 0, 0, 0]
    by_org = {o["organisation"]: o["total"] for o in got["accesses"]["by_organisation"]}
    assert by_org == {
        "cgg-antwerpen": 4,
        "dpo-office": 1,
        "free-clinic": 1,
        "parket-antwerpen": 2,
        "parquet-bruxelles": 1,
    }
    assert got["accesses"]["total"] == len(ENTRIES)


def test_weeks_start_on_monday_and_the_window_is_in_local_time(engine: Engine) -> None:
    # From Monday 2 November local: Sunday 23:30 UTC is already in it.
    window = Window(date(2026, 11, 2), date(2026, 11, 8), Bucket.WEEK)
    with engine.connect() as conn:
        found = figures(conn, window, Cases(conn, pseudonym))
    assert found["buckets"] == ["2026-11-02"]
    assert found["figures"]["accesses"]["counts"] == [len(ENTRIES)]
    assert window.since() == at(1, 23)  # Monday 00:00 in Brussels
    assert window.until() == at(8, 23)


def test_the_drill_down_lists_the_entries_behind_a_bar(engine: Engine) -> None:
    tuesday = Window(date(2026, 11, 3), date(2026, 11, 3))
    wednesday = Window(date(2026, 11, 4), date(2026, 11, 4))
    with engine.connect() as conn:
        cases = Cases(conn, pseudonym)
        no_role = [r.index for r in entries(conn, Figure.NO_ACTIVE_ROLE, tuesday, cases)]
        assert no_role == [3, 4]
        assert [r.index for r in entries(conn, Figure.NO_ACTIVE_ROLE, wednesday, cases)] == [7]
        denials = entries(conn, Figure.DENIALS, Window(date(2026, 11, 2), date(2026, 11, 8)), None)
        assert [r.index for r in denials] == [4, 8]
        org = entries(
            conn,
            Figure.ACCESSES,
            Window(date(2026, 11, 2), date(2026, 11, 8)),
            None,
            organisation="cgg-antwerpen",
            offset=1,
            limit=1,
        )
        assert [r.index for r in org] == [2]  # cgg's entries are 1, 2, 3 and 7


def test_a_window_must_be_ordered_and_bounded() -> None:
    with pytest.raises(ValueError):
        Window(date(2026, 11, 3), date(2026, 11, 2))
    with pytest.raises(ValueError):
        Window(date(2020, 1, 1), date(2026, 1, 1))
    assert len(Window(date(2020, 1, 1), date(2026, 1, 1), Bucket.WEEK).starts()) < 400
    for first, last in ((date.min, date(2026, 1, 1)), (date(2026, 1, 1), date.max)):
        with pytest.raises(ValueError, match="must lie within"):
            Window(first, last, Bucket.WEEK)
