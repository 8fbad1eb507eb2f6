"""The referral lifecycle's vocabulary and the messages that cross the workflow boundary.

Everything here is deterministic, pure data: the workflow imports it. No personal data
ever travels in these messages; they carry ids, codes and timestamps only.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field


class Stage(StrEnum):
    """The programme's states (ARCHITECTURE.md, 'The referral lifecycle')."""

    DRAFT = "draft"
    AWAITING_CONSENT = "awaiting_consent"
    MATCHING = "matching"
    OFFERED = "offered"
    ON_HOLD = "on_hold"
    ACCEPTED = "accepted"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    NOT_STARTED = "not_started"
    CANCELLED = "cancelled"
    RETURNED_TO_JUSTICE = "returned_to_justice"
    OUTCOME_REPORTED = "outcome_reported"
    CLOSED = "closed"
    PURGED = "purged"


OPEN_STAGES = frozenset(
    {
        Stage.AWAITING_CONSENT,
        Stage.MATCHING,
        Stage.OFFERED,
        Stage.ON_HOLD,
        Stage.ACCEPTED,
        Stage.IN_PROGRESS,
    }
)
ENDED_STAGES = frozenset(
    {Stage.COMPLETED, Stage.FAILED, Stage.NOT_STARTED, Stage.CANCELLED, Stage.RETURNED_TO_JUSTICE}
)


class TaskStatus(StrEnum):
    """HL7 FHIR Task.status codes used as the outer status."""

    REQUESTED = "requested"
    RECEIVED = "received"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    IN_PROGRESS = "in-progress"
    ON_HOLD = "on-hold"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Outcome(StrEnum):
    """How a care trajectory ended, as the care provider closes it."""

    COMPLETED = "completed"
    FAILED = "failed"  # dropped out
    NOT_STARTED = "not_started"


class DeclineReason(StrEnum):
    NO_CAPACITY = "no_capacity"
    OUTSIDE_SERVICE_AREA = "outside_service_area"
    NOT_ELIGIBLE = "not_eligible"
    MISSING_INFORMATION = "missing_information"
    OTHER = "other"


class CapacityStatus(StrEnum):
    CAPACITY = "capacity"
    NO_CAPACITY = "no_capacity"
    WAITLIST = "waitlist"
    ASSESSMENT_REQUIRED = "assessment_required"


class TargetGroup(StrEnum):
    SUBSTANCE_USE = "substance_use"
    GAMBLING = "gambling"
    GAMING = "gaming"


class ConsentPurpose(StrEnum):
    REFERRAL_TO_CARE = "referral_to_care"
    PROGRESS_REPORTING_TO_JUSTICE = "progress_reporting_to_justice"
    CARE_TEAM_SHARING = "care_team_sharing"


class SignedBy(StrEnum):
    """Who signed the consent: the person referred, or their legal representative."""

    PERSON = "person"
    LEGAL_REPRESENTATIVE = "legal_representative"


class SignerCapacity(StrEnum):
    """In which capacity the signer signed (a code, never the signer's name)."""

    SELF = "self"  # the person referred
    PARENT = "parent"  # a parent of a minor
    GUARDIAN = "guardian"  # a guardian (voogd / tuteur / Vormund)
    ADMINISTRATOR = "administrator"  # a court-appointed administrator (bewindvoerder)
    MANDATARY = "mandatary"  # a representative the person appointed (patient rights act)


class SigningMethod(StrEnum):
    PAPER_FORM = "paper_form"
    ELECTRONIC_SIGNATURE = "electronic_signature"
    VERBAL_WITH_WITNESS = "verbal_with_witness"


class ConsentStatus(StrEnum):
    ACTIVE = "active"
    WITHDRAWN = "withdrawn"
    EXPIRED = "expired"
    REFUSED = "refused"
    SUPERSEDED = "superseded"


class AttendanceStatus(StrEnum):
    ATTENDING = "attending"
    NOT_ATTENDING = "not_attending"


class ComplianceFact(StrEnum):
    """The only things that may travel to justice: typed compliance facts, never free text."""

    REGISTERED = "registered"
    STARTED = "started"
    ATTENDING = "attending"
    COMPLETED = "completed"
    DROPPED_OUT = "dropped_out"
    NOT_STARTED = "not_started"
    CONSENT_WITHDRAWN = "consent_withdrawn"
    CONSENT_EXPIRED = "consent_expired"
    CONSENT_NOT_GIVEN = "consent_not_given"
    NO_PROVIDER_AVAILABLE = "no_provider_available"
    ENDED_WITHOUT_REPORTING_CONSENT = "ended_without_reporting_consent"
    # the care provider missed the last progress reports: the referral went back to justice
    OUTCOME_NOT_REPORTED = "outcome_not_reported"


class DataHolding(StrEnum):
    """Whose data a retention clock keeps, and for how long (the framework's two periods)."""

    # identity, contact, judicial context, referral reason and the compliance facts sent to
    # the office: kept for the justice period
    OFFICE = "office"
    # clinical and welfare notes: kept for the care period
    CARE = "care"


class ProsecutorDecision(StrEnum):
    DISMISSED = "dismissed"  # case closed without prosecution
    CONDITIONAL_DISMISSAL = "conditional_dismissal"
    PROSECUTE = "prosecute"
    OTHER_MEASURE = "other_measure"


class NotificationKind(StrEnum):
    CONSENT_REQUESTED = "consent_requested"
    OFFER = "offer"
    OFFER_REMINDER = "offer_reminder"
    OFFER_EXPIRED = "offer_expired"
    NO_PROVIDER_LEFT = "no_provider_left"
    PROGRESS_REPORT_MISSED = "progress_report_missed"
    DECISION_DUE = "decision_due"


def fhir_status(stage: Stage, outcome_stage: Stage | None) -> TaskStatus:
    """Map a programme stage to the FHIR Task status code."""
    direct = {
        Stage.DRAFT: TaskStatus.REQUESTED,
        Stage.AWAITING_CONSENT: TaskStatus.REQUESTED,
        Stage.MATCHING: TaskStatus.REQUESTED,
        Stage.OFFERED: TaskStatus.RECEIVED,
        Stage.ON_HOLD: TaskStatus.ON_HOLD,
        Stage.ACCEPTED: TaskStatus.ACCEPTED,
        Stage.IN_PROGRESS: TaskStatus.IN_PROGRESS,
        Stage.COMPLETED: TaskStatus.COMPLETED,
        Stage.FAILED: TaskStatus.FAILED,
        Stage.NOT_STARTED: TaskStatus.FAILED,
        Stage.CANCELLED: TaskStatus.CANCELLED,
        Stage.RETURNED_TO_JUSTICE: TaskStatus.REJECTED,
    }
    if stage in direct:
        return direct[stage]
    # outcome_reported / closed / purged keep the status of the way the trajectory ended.
    return direct.get(outcome_stage or Stage.CANCELLED, TaskStatus.CANCELLED)


class Message(BaseModel):
    """Base of every workflow boundary message: closed to unknown fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Actor(Message):
    """Who asks for a step: IdP subject id and organisation code (no personal data)."""

    subject: str
    organisation: str
    roles: tuple[str, ...] = ()


DAY_SECONDS = 86400
# Defaults of the deadlines release 3 added, for referrals whose input predates them (and
# for the settings): no open state waits for ever.
DEFAULT_INTAKE_DEADLINE = 30 * DAY_SECONDS
DEFAULT_ON_HOLD_LIMIT = 30 * DAY_SECONDS
DEFAULT_MAX_MISSED_REPORTS = 3
DEFAULT_DECISION_SECOND_REMINDER = 14 * DAY_SECONDS
DEFAULT_DECISION_CLOSE = 30 * DAY_SECONDS


class Timings(Message):
    """Durations in seconds, fixed when the referral is submitted."""

    consent_deadline: int
    acceptance_sla: int
    acceptance_reminder: int
    progress_report_interval: int
    decision_deadline: int
    # the care period (clinical and welfare notes), from the decision
    retention: int
    # the justice period (what the office holds), from the decision; None: the care period
    retention_justice: int | None = None
    # after acceptance: no intake by then and the referral goes back to justice
    intake_deadline: int = DEFAULT_INTAKE_DEADLINE
    # on hold (no provider left) for this long and the referral goes back to justice
    on_hold_limit: int = DEFAULT_ON_HOLD_LIMIT
    # this many progress reports missed in a row and the referral goes back to justice
    max_missed_reports: int = DEFAULT_MAX_MISSED_REPORTS
    # after the decision deadline: a second reminder, then closing with no decision
    decision_second_reminder: int = DEFAULT_DECISION_SECOND_REMINDER
    decision_close: int = DEFAULT_DECISION_CLOSE


class ReferralWorkflowInput(Message):
    referral_id: UUID
    framework_id: UUID
    referring_office: str
    district: str
    target_group: TargetGroup
    language: str
    timings: Timings


class Snapshot(Message):
    """The referral's process state, as the Query and every Update return it."""

    referral_id: UUID
    stage: Stage
    status: TaskStatus
    business_status: str
    version: int
    referring_office: str
    offered_provider: str | None = None
    accepted_provider: str | None = None
    providers_tried: tuple[str, ...] = ()
    outcome: Stage | None = None
    decision: ProsecutorDecision | None = None
    consent_id: UUID | None = None
    reporting_consent: bool = False
    consent_deadline: datetime | None = None
    offer_expires_at: datetime | None = None
    next_progress_report_due: datetime | None = None
    decision_due: datetime | None = None
    purge_at: datetime | None = None
    updated_at: datetime | None = None
    intake_due: datetime | None = None
    on_hold_until: datetime | None = None
    # the two retention clocks; `purge_at` is the later of them (then: purged)
    care_purge_at: datetime | None = None
    office_purge_at: datetime | None = None


class ConsentRecordInput(Message):
    actor: Actor
    consent_id: UUID
    given: bool
    purposes: tuple[ConsentPurpose, ...] = ()
    categories: tuple[str, ...] = ()
    recipients: tuple[str, ...] = ()
    disclosers: tuple[str, ...] = ()
    valid_until: datetime | None = None
    evidence_hash: str = Field(default="", max_length=128)
    recorded_at: datetime | None = None
    right_to_revoke_explained: bool = False
    signed_by: SignedBy | None = None
    signer_capacity: SignerCapacity | None = None
    signed_on: date | None = None
    signing_method: SigningMethod | None = None


class ConsentWithdrawInput(Message):
    actor: Actor
    withdrawn_at: datetime | None = None


class AcceptInput(Message):
    actor: Actor


class DeclineInput(Message):
    actor: Actor
    reason: DeclineReason


class IntakeInput(Message):
    actor: Actor
    intake_date: datetime
    attended: bool = True


class ProgressInput(Message):
    actor: Actor
    attendance: AttendanceStatus
    reported_at: datetime | None = None


class CloseInput(Message):
    actor: Actor
    outcome: Outcome


class DecisionInput(Message):
    actor: Actor
    decision: ProsecutorDecision


class CancelInput(Message):
    actor: Actor


class RematchInput(Message):
    actor: Actor


# ---- activity messages -------------------------------------------------------------


class TransitionInput(Message):
    """Project one state change into SQL (idempotent per referral id + version)."""

    snapshot: Snapshot
    reason: str = ""


class TransitionResult(Message):
    applied: bool


class FindProvidersInput(Message):
    referral_id: UUID
    framework_id: UUID
    district: str
    target_group: TargetGroup
    language: str
    exclude: tuple[str, ...] = ()


class FindProvidersResult(Message):
    providers: tuple[str, ...]


class OfferInput(Message):
    referral_id: UUID
    attempt: int
    provider: str
    expires_at: datetime


class OfferResult(Message):
    created: bool


class NotifyInput(Message):
    """An idempotent notification; `key` is referral id + step, unique."""

    key: str
    referral_id: UUID
    recipient: str
    kind: NotificationKind


class NotifyResult(Message):
    created: bool


class ComplianceReportInput(Message):
    """A message on the channel to justice: a typed fact, never free text."""

    key: str
    referral_id: UUID
    recipient: str
    fact: ComplianceFact
    # progress facts need an active consent for progress reporting, checked at send time
    needs_reporting_consent: bool = True


class ComplianceReportResult(Message):
    created: bool


class ConsentStoreInput(Message):
    referral_id: UUID
    record: ConsentRecordInput


class ConsentWithdrawStoreInput(Message):
    referral_id: UUID
    consent_id: UUID
    withdrawn_at: datetime
    actor: Actor


class PurgeInput(Message):
    """Shred the referral for good; `holdings` are the clocks that end with it (none given:
    every holding, as release 2 purged)."""

    referral_id: UUID
    holdings: tuple[DataHolding, ...] = ()


class ShredInput(Message):
    """Shred what one holding keeps when its retention clock ends before the other's."""

    referral_id: UUID
    holding: DataHolding


class EmptyResult(Message):
    ok: bool = True
