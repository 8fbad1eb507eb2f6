"""Request and response bodies of the API (closed to unknown fields)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)

from services.case_content import (
    NATIONAL_NUMBER_PATTERN,
    LongText,
    national_number_birth_date,
)
from services.lifecycle import (
    AttendanceStatus,
    ConsentPurpose,
    DeclineReason,
    Outcome,
    ProsecutorDecision,
    SignedBy,
    SignerCapacity,
    SigningMethod,
)

Category = Literal[
    "identity",
    "contact",
    "judicial_context",
    "referral_reason",
    "clinical",
    "welfare",
    "compliance",
]
# A recipient or discloser of a consent: an organisation code, or a sector name
# (justice, health, welfare) for every organisation of that sector.
Party = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9-]{1,63}$")]
# A user's identity-provider subject id: opaque, never a name or an e-mail address.
Subject = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:|-]{0,199}$")]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PersonAccessReportIn(Body):
    """Whose access report the DPO produces (the national number is pseudonymised at once,
    never stored or logged), and in which language the letter is written."""

    national_number: str = Field(min_length=11, max_length=15)
    lang: Literal["nl", "fr", "de", "en"] = "nl"

    @field_validator("national_number")
    @classmethod
    def _national_number_valid(cls, value: str) -> str:
        if not NATIONAL_NUMBER_PATTERN.match(value):
            raise ValueError("a national number has 11 digits (YY.MM.DD-XXX.CC)")
        national_number_birth_date(value)  # the modulo-97 check
        return value


class ConsentIn(Body):
    """A consent in valid form: what, to whom, by whom, why, until when, and the evidence."""

    given: bool = True
    purposes: list[ConsentPurpose] = Field(default_factory=list, max_length=3)
    categories: list[Category] = Field(default_factory=list, max_length=7)
    recipients: list[Party] = Field(default_factory=list, max_length=20)
    disclosers: list[Party] = Field(default_factory=list, max_length=20)
    right_to_revoke_explained: bool = False
    valid_until: AwareDatetime | None = None
    evidence_hash: Annotated[str, StringConstraints(pattern=r"^sha256:[0-9a-f]{64}$")]
    # who signed, in which capacity (a code: the signer's name stays on the paper form),
    # when and how
    signed_by: SignedBy | None = None
    signer_capacity: SignerCapacity | None = None
    signed_on: date | None = None
    signing_method: SigningMethod | None = None


class CareTeamIn(Body):
    """A care worker to assign to the case, by identity-provider subject id."""

    subject: Subject


class CareTeamMember(BaseModel):
    subject: str
    assigned_by: str
    assigned_at: datetime


class DeclineIn(Body):
    reason: DeclineReason


class IntakeIn(Body):
    intake_date: AwareDatetime
    attended: bool = True


class ProgressIn(Body):
    attendance: AttendanceStatus
    clinical_note: LongText | None = None
    welfare_note: LongText | None = None


class CloseIn(Body):
    outcome: Outcome
    clinical_note: LongText | None = None


class DecisionIn(Body):
    decision: ProsecutorDecision


class Withheld(BaseModel):
    category: str
    reason: str


class ReferralView(BaseModel):
    """A referral as the caller may see it: absent what it may not, named in `withheld`."""

    id: str
    stage: str
    framework_id: str | None = None
    referring_office: str | None = None
    district: str | None = None
    language: str | None = None
    status: str | None = None
    business_status: str | None = None
    outcome: str | None = None
    decision: str | None = None
    offered_provider: str | None = None
    accepted_provider: str | None = None
    consent_deadline: datetime | None = None
    offer_expires_at: datetime | None = None
    next_progress_report_due: datetime | None = None
    decision_due: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    purged: bool = False
    process_facts: list[dict[str, Any]] | None = None
    content: dict[str, dict[str, Any]] = Field(default_factory=dict)
    withheld: list[Withheld] = Field(default_factory=list)


class ReferralSummary(BaseModel):
    """One row of a list: process facts only (outcome and status where the caller may)."""

    id: str
    stage: str
    referring_office: str
    offered_provider: str | None = None
    accepted_provider: str | None = None
    consent_deadline: datetime | None = None
    offer_expires_at: datetime | None = None
    next_progress_report_due: datetime | None = None
    decision_due: datetime | None = None
    outcome: str | None = None
    decision: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


class ReferralPage(BaseModel):
    items: list[ReferralSummary]
    total: int
    offset: int
    limit: int


class ConsentView(BaseModel):
    id: str
    version: int
    given: bool
    status: str
    purposes: list[str]
    categories: list[str]
    recipients: list[str]
    disclosers: list[str]
    recorded_by_organisation: str
    evidence_hash: str
    valid_from: datetime
    valid_until: datetime | None
    withdrawn_at: datetime | None
    right_to_revoke_explained: bool
    signed_by: str | None
    signer_capacity: str | None
    signed_on: date | None
    signing_method: str | None


class ValidationIssue(BaseModel):
    """Where a request failed validation and how; never the submitted value."""

    loc: list[str]
    msg: str
    type: str


class Problem(BaseModel):
    """An RFC 9457 problem: the body of every error answer (`application/problem+json`)."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(examples=["urn:referral:problem:not-found"])
    title: str
    status: int = Field(ge=400, le=599)
    detail: str
    errors: list[ValidationIssue] | None = None
