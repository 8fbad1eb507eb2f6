"""The SQL store: organisations, cooperation frameworks, the referral read projection,
consents, status history and the idempotency records of activities and requests.

Personal fields never appear in clear here: `Referral.personal` maps a field name to an
opaque sealed value produced by `services.crypto`.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import Any, NamedTuple

from sqlalchemy import JSON, Column, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from services.sqltypes import UTCDateTime


def utcnow() -> datetime:
    """Timezone-aware now (UTC)."""
    return datetime.now(UTC)


def _ts(*, nullable: bool = False, index: bool = False) -> Any:
    return Field(default=None, sa_column=Column(UTCDateTime, nullable=nullable, index=index))


class Organisation(SQLModel, table=True):
    """A participating organisation: a prosecutor's office, a care provider, an audit body."""

    __tablename__ = "organisation"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    code: str = Field(max_length=64, unique=True, index=True)
    name: str = Field(max_length=200)
    sector: str = Field(max_length=16)
    district: str = Field(max_length=64)
    languages: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    target_groups: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    capacity_status: str = Field(default="capacity", max_length=32)
    demo: bool = False


class CooperationFramework(SQLModel, table=True):
    """The legal frame (Criminal Code art. 458ter) a referral runs under."""

    __tablename__ = "cooperation_framework"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    name: str = Field(max_length=200)
    legal_basis_reference: str = Field(max_length=300)
    legal_basis_version: str = Field(max_length=64)
    purposes: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    # sector -> data categories that sector may receive under this framework
    data_categories: dict[str, list[str]] = Field(
        default_factory=dict, sa_column=Column(JSON, nullable=False)
    )
    reporting_cadence_days: int = 30
    # What the office holds (identity, judicial context, compliance facts) is kept for the
    # justice period, care data (clinical and welfare notes) for the care period; both run
    # from the prosecutor's decision (or the closing without one).
    retention_justice_days: int = 365 * 5
    retention_care_days: int = 365 * 2
    # Deadlines of the open states; None: the engine's default (services/settings.py).
    intake_deadline_days: int | None = None
    on_hold_limit_days: int | None = None
    max_missed_reports: int | None = None
    decision_deadline_days: int | None = None
    active: bool = True
    demo: bool = False


class FrameworkParticipant(SQLModel, table=True):
    """An organisation taking part in a cooperation framework."""

    __tablename__ = "framework_participant"

    framework_id: uuid.UUID = Field(foreign_key="cooperation_framework.id", primary_key=True)
    organisation_code: str = Field(foreign_key="organisation.code", primary_key=True)


class Referral(SQLModel, table=True):
    """Read projection of one referral; Temporal holds the process, this the record."""

    __tablename__ = "referral"

    id: uuid.UUID = Field(primary_key=True)
    framework_id: uuid.UUID = Field(foreign_key="cooperation_framework.id", index=True)
    referring_office: str = Field(foreign_key="organisation.code", index=True)
    created_by: str = Field(max_length=200)
    district: str = Field(max_length=64)
    target_group: str = Field(max_length=32)
    language: str = Field(max_length=8)
    stage: str = Field(max_length=32, index=True)
    status: str = Field(max_length=32)
    business_status: str = Field(max_length=64)
    version: int = 0
    offered_provider: str | None = Field(default=None, max_length=64, index=True)
    accepted_provider: str | None = Field(default=None, max_length=64, index=True)
    providers_tried: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    outcome: str | None = Field(default=None, max_length=32)
    decision: str | None = Field(default=None, max_length=32)
    reporting_consent: bool = False
    # keyed-HMAC pseudonyms to link referrals of one person; never the clear values
    subject_pseudonym: str = Field(max_length=80, index=True)
    name_pseudonym: str = Field(max_length=80, index=True)
    # the pseudonym key version they were made with (None: before versions were recorded)
    pseudonym_key_id: str | None = Field(default=None, max_length=64)
    # field name -> sealed value (services.crypto)
    personal: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    consent_deadline: datetime | None = _ts(nullable=True)
    offer_expires_at: datetime | None = _ts(nullable=True)
    next_progress_report_due: datetime | None = _ts(nullable=True)
    decision_due: datetime | None = _ts(nullable=True)
    purge_at: datetime | None = _ts(nullable=True)
    # each retention clock's shredding (services/retention.py); `purged_at`: both done
    care_purged_at: datetime | None = _ts(nullable=True)
    office_purged_at: datetime | None = _ts(nullable=True)
    purged_at: datetime | None = _ts(nullable=True)
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )
    updated_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )


class ReferralRecord(NamedTuple):
    """The columns of a referral the reads of every access use (its facts for the policies,
    its projection), read below the ORM (`services.referrals.find`): no entity, no identity
    map. Read-only; a step that changes a referral loads the `Referral` itself."""

    id: uuid.UUID
    framework_id: uuid.UUID
    referring_office: str
    district: str
    language: str
    stage: str
    status: str
    business_status: str
    offered_provider: str | None
    accepted_provider: str | None
    outcome: str | None
    decision: str | None
    personal: dict[str, str]
    consent_deadline: datetime | None
    offer_expires_at: datetime | None
    next_progress_report_due: datetime | None
    decision_due: datetime | None
    purged_at: datetime | None
    created_at: datetime
    updated_at: datetime


# A referral as the reads of an access take it: the row, or the entity a session holds.
ReferralLike = Referral | ReferralRecord


class StatusHistory(SQLModel, table=True):
    """One row per state change; (referral, version) is unique so replays never duplicate."""

    __tablename__ = "status_history"
    __table_args__ = (UniqueConstraint("referral_id", "version", name="uq_status_version"),)

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    referral_id: uuid.UUID = Field(foreign_key="referral.id", index=True)
    version: int
    stage: str = Field(max_length=32)
    status: str = Field(max_length=32)
    business_status: str = Field(max_length=64)
    reason: str = Field(default="", max_length=64)
    at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False))


class Consent(SQLModel, table=True):
    """A granular, revocable consent of the person referred."""

    __tablename__ = "consent"

    id: uuid.UUID = Field(primary_key=True)
    referral_id: uuid.UUID = Field(foreign_key="referral.id", index=True)
    version: int = 1
    given: bool = True
    purposes: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    categories: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    recipients: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    disclosers: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    status: str = Field(max_length=16)
    recorded_by: str = Field(max_length=200)
    recorded_by_organisation: str = Field(max_length=64)
    evidence_hash: str = Field(default="", max_length=128)
    valid_from: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    valid_until: datetime | None = _ts(nullable=True)
    withdrawn_at: datetime | None = _ts(nullable=True)
    # How it was obtained. Who signed is a capacity code (the person, or a legal
    # representative as parent, guardian...), never a name: the signed form stays in the
    # paper file, referred to by `evidence_hash`.
    right_to_revoke_explained: bool = False
    signed_by: str | None = Field(default=None, max_length=32)
    signer_capacity: str | None = Field(default=None, max_length=32)
    signed_on: date | None = None
    signing_method: str | None = Field(default=None, max_length=32)


class CareTeamAssignment(SQLModel, table=True):
    """A care worker put on a case by the provider's intake coordinator (need to know).

    `subject` is the worker's identity-provider subject id, never a name. A release ends
    the assignment (`released_at`); rows are kept as the record of who knew, when."""

    __tablename__ = "care_team_assignment"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    referral_id: uuid.UUID = Field(foreign_key="referral.id", index=True)
    organisation: str = Field(max_length=64)
    subject: str = Field(max_length=200)
    assigned_by: str = Field(max_length=200)
    assigned_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )
    released_by: str | None = Field(default=None, max_length=200)
    released_at: datetime | None = _ts(nullable=True)


class Offer(SQLModel, table=True):
    """An offer of the referral to one provider; one per (referral, attempt)."""

    __tablename__ = "offer"

    referral_id: uuid.UUID = Field(foreign_key="referral.id", primary_key=True)
    attempt: int = Field(primary_key=True)
    provider: str = Field(max_length=64, index=True)
    expires_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )


class Notification(SQLModel, table=True):
    """The notification outbox; `key` (referral id + step) makes retries harmless."""

    __tablename__ = "notification"

    key: str = Field(primary_key=True, max_length=200)
    referral_id: uuid.UUID = Field(foreign_key="referral.id", index=True)
    recipient: str = Field(max_length=64, index=True)
    kind: str = Field(max_length=32)
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )


class JusticeMessage(SQLModel, table=True):
    """The compliance-only channel to the referring office: a typed fact and a notice."""

    __tablename__ = "justice_message"

    key: str = Field(primary_key=True, max_length=200)
    referral_id: uuid.UUID = Field(foreign_key="referral.id", index=True)
    recipient: str = Field(max_length=64, index=True)
    fact: str = Field(max_length=40)
    notice: str = Field(max_length=400)
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )
    # When the office first read it (IHE BALP: disclosure at the recipient, audited then).
    received_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime, nullable=True))


class IdempotencyRecord(SQLModel, table=True):
    """A create request seen before: same key and body give the same referral."""

    __tablename__ = "idempotency_record"

    organisation: str = Field(primary_key=True, max_length=64)
    key: str = Field(primary_key=True, max_length=200)
    request_hash: str = Field(max_length=64)
    referral_id: uuid.UUID
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )


class WorkflowStart(SQLModel, table=True):
    """The intent to start a referral's workflow, stored with the referral (an outbox row):
    the worker's reconciler starts every workflow whose intent is still pending."""

    __tablename__ = "workflow_start"

    referral_id: uuid.UUID = Field(primary_key=True, foreign_key="referral.id")
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )
    started_at: datetime | None = _ts(nullable=True, index=True)
    attempts: int = 0


class StepAnswer(SQLModel, table=True):
    """The first answer to a step with an Idempotency-Key; a retry gets it again. The body
    is known only by its keyed fingerprint (HMAC), never stored or hashed in clear."""

    __tablename__ = "step_answer"

    organisation: str = Field(primary_key=True, max_length=64)
    key: str = Field(primary_key=True, max_length=200)
    fingerprint: str = Field(max_length=64)
    referral_id: uuid.UUID
    action: str = Field(max_length=64)
    # None while the first request is still being served
    status_code: int | None = None
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )
    expires_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False, index=True))


class WebSession(SQLModel, table=True):
    """A browser session of the web login. The cookie holds only a random secret; the row
    is keyed by its SHA-256 and holds the user's tokens sealed (AES-GCM), so neither a
    leaked table nor a leaked cookie alone gives a usable token."""

    __tablename__ = "web_session"

    id: str = Field(primary_key=True, max_length=64)
    sealed: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )
    expires_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False, index=True))
