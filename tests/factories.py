"""Factories for referrals, consents and principals: test data that reads like the domain."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine

from services.access import Access, Gatekeeper, RequestContext
from services.audit.models import AuditEventType
from services.db import session_scope
from services.demo import DEMO_FRAMEWORK_ID
from services.lifecycle import (
    AcceptInput,
    Actor,
    AttendanceStatus,
    CloseInput,
    ConsentPurpose,
    ConsentRecordInput,
    ConsentWithdrawInput,
    DecisionInput,
    DeclineInput,
    DeclineReason,
    IntakeInput,
    Outcome,
    ProgressInput,
    ProsecutorDecision,
    ReferralWorkflowInput,
    RematchInput,
    TargetGroup,
    Timings,
)
from services.models import Referral
from services.principal import Principal, Role, Sector
from services.settings import Settings

DAY = 86400

OFFICE = Actor(subject="demo-prosecutor-antwerpen", organisation="parket-antwerpen")
CGG = Actor(subject="demo-intake-cgg", organisation="cgg-antwerpen")
FREE_CLINIC = Actor(subject="demo-intake-freeclinic", organisation="free-clinic-antwerpen")
CAW = Actor(subject="demo-intake-caw", organisation="caw-brussel")
OTHER_OFFICE = Actor(subject="demo-prosecutor-bruxelles", organisation="parquet-bruxelles")


def offline_settings(directory: Path) -> Settings:
    """Settings of an app built to be inspected (its routes, its OpenAPI document), not
    served: no database in use, no identity provider, no demo users."""
    return Settings(
        environment="test",
        data_dir=directory,
        database_url=f"sqlite:///{directory / 'unused.db'}",
        keyring_path=directory / "keyring.json",
        jwks_url="http://127.0.0.1:9/unused",
        demo_users_enabled=False,
    )


def timings(**overrides: int) -> Timings:
    base = {
        "consent_deadline": 14 * DAY,
        "acceptance_sla": 5 * DAY,
        "acceptance_reminder": 3 * DAY,
        "progress_report_interval": 30 * DAY,
        "decision_deadline": 30 * DAY,
        "retention": 730 * DAY,
    }
    base.update(overrides)
    return Timings(**base)


def referral_row(
    engine: Engine, *, district: str = "antwerpen", office: str = OFFICE.organisation
) -> uuid.UUID:
    """Insert the projection row the API would create, and return its id."""
    referral_id = uuid.uuid4()
    with session_scope(engine) as session:
        session.add(
            Referral(
                id=referral_id,
                framework_id=DEMO_FRAMEWORK_ID,
                referring_office=office,
                created_by=OFFICE.subject,
                district=district,
                target_group="substance_use",
                language="nl",
                stage="draft",
                status="requested",
                business_status="draft",
                subject_pseudonym=f"nn_test_{referral_id.hex[:12]}",
                name_pseudonym=f"nb_test_{referral_id.hex[:12]}",
            )
        )
    return referral_id


def projection_row(
    framework_id: uuid.UUID, *, provider: str | None, office: str = "pk", **fields: object
) -> Referral:
    """An unsaved projection row with short codes (for unit tests on an in-memory database):
    in care with `provider` when one is given, else offered to "caw"."""
    values: dict[str, object] = {
        "id": uuid.uuid4(),
        "framework_id": framework_id,
        "referring_office": office,
        "created_by": "s",
        "district": "d",
        "target_group": "substance_use",
        "language": "nl",
        "stage": "in_progress" if provider else "offered",
        "status": "x",
        "business_status": "x",
        "offered_provider": provider or "caw",
        "accepted_provider": provider,
        "subject_pseudonym": "p",
        "name_pseudonym": "n",
    }
    values.update(fields)
    return Referral(**values)


def workflow_input(
    referral_id: uuid.UUID,
    *,
    district: str = "antwerpen",
    office: str = OFFICE.organisation,
    **timing_overrides: int,
) -> ReferralWorkflowInput:
    return ReferralWorkflowInput(
        referral_id=referral_id,
        framework_id=DEMO_FRAMEWORK_ID,
        referring_office=office,
        district=district,
        target_group=TargetGroup.SUBSTANCE_USE,
        language="nl",
        timings=timings(**timing_overrides),
    )


def consent(
    actor: Actor = OFFICE,
    *,
    given: bool = True,
    reporting: bool = True,
    valid_until: datetime | None = None,
) -> ConsentRecordInput:
    purposes = [ConsentPurpose.REFERRAL_TO_CARE, ConsentPurpose.CARE_TEAM_SHARING]
    if reporting:
        purposes.append(ConsentPurpose.PROGRESS_REPORTING_TO_JUSTICE)
    return ConsentRecordInput(
        actor=actor,
        consent_id=uuid.uuid4(),
        given=given,
        purposes=tuple(purposes) if given else (),
        categories=("identity", "contact", "referral_reason", "clinical", "compliance"),
        recipients=("parket-antwerpen", "health"),
        # the office discloses to care; care discloses compliance back (Cedar checks both)
        disclosers=("parket-antwerpen", "health"),
        valid_until=valid_until,
        evidence_hash="sha256:" + "ab" * 32,
        recorded_at=datetime.now(UTC),
    )


def accept(actor: Actor) -> AcceptInput:
    return AcceptInput(actor=actor)


def decline(actor: Actor, reason: DeclineReason = DeclineReason.NO_CAPACITY) -> DeclineInput:
    return DeclineInput(actor=actor, reason=reason)


def intake(actor: Actor) -> IntakeInput:
    return IntakeInput(actor=actor, intake_date=datetime.now(UTC), attended=True)


def progress(actor: Actor, attending: bool = True) -> ProgressInput:
    status = AttendanceStatus.ATTENDING if attending else AttendanceStatus.NOT_ATTENDING
    return ProgressInput(actor=actor, attendance=status)


def close(actor: Actor, outcome: Outcome = Outcome.COMPLETED) -> CloseInput:
    return CloseInput(actor=actor, outcome=outcome)


def decision(
    actor: Actor = OFFICE, value: ProsecutorDecision = ProsecutorDecision.DISMISSED
) -> DecisionInput:
    return DecisionInput(actor=actor, decision=value)


def withdraw(actor: Actor) -> ConsentWithdrawInput:
    return ConsentWithdrawInput(actor=actor)


def rematch(actor: Actor = OFFICE) -> RematchInput:
    return RematchInput(actor=actor)


READER = Principal(
    subject="user-reader",
    organisation="pk-antwerpen",
    sector=Sector.JUSTICE,
    roles=frozenset({Role.PROSECUTOR}),
)


def read_access(gatekeeper: Gatekeeper, request_id: str) -> Access:
    """An access of a prosecutor reading a referral (a random one), which disclosed its
    process category: what the event loop's reads hand to their entry's writer."""
    opened = gatekeeper.open(
        principal=READER,
        event_type=AuditEventType.READ,
        action="referral.read",
        purpose="JUSTFUP",
        ctx=RequestContext(request_id=request_id),
        referral_id=uuid.uuid4(),
    )
    opened.disclose(["process"])
    return opened
