"""Case content as it enters the engine, and the data category of every personal field.

Every field here is personal or confidential: it is sealed (services.crypto) before it is
stored and projected per data category on the way out.
"""

from __future__ import annotations

import re
from datetime import date
from enum import StrEnum
from typing import Annotated
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from services.lifecycle import TargetGroup

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
LongText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]

_NATIONAL_NUMBER = re.compile(r"^\d{2}\.?\d{2}\.?\d{2}-?\d{3}\.?\d{2}$")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_max_length=2000)


class OffenceCategory(StrEnum):
    DRUG_POSSESSION = "drug_possession"
    DRUG_USE_IN_PUBLIC = "drug_use_in_public"
    PUBLIC_INTOXICATION = "public_intoxication"
    GAMBLING_RELATED = "gambling_related"
    OTHER = "other"


class Identity(Strict):
    name: Text
    birth_date: date
    national_number: str = Field(min_length=11, max_length=15)

    @field_validator("national_number")
    @classmethod
    def _national_number_shape(cls, value: str) -> str:
        if not _NATIONAL_NUMBER.match(value):
            raise ValueError("a national number has 11 digits (YY.MM.DD-XXX.CC)")
        return value

    @field_validator("birth_date")
    @classmethod
    def _plausible_birth_date(cls, value: date) -> date:
        if value.year < 1900 or value > date.today():
            raise ValueError("the birth date is not plausible")
        return value


class Contact(Strict):
    phone: Annotated[str, StringConstraints(pattern=r"^\+?[0-9 ./()-]{6,30}$")] | None = None
    address: Text | None = None


class JudicialContext(Strict):
    offence_category: OffenceCategory
    notice_number: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9./-]{3,40}$")]
    deadline: date | None = None


class ReferralReason(Strict):
    target_group: TargetGroup
    substance_or_behaviour: Text
    note: LongText | None = None


class ReferralCreate(Strict):
    """What a prosecutor's office submits."""

    framework_id: UUID
    district: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z-]{1,63}$")]
    language: Annotated[str, StringConstraints(pattern=r"^(nl|fr|de|en)$")]
    identity: Identity
    contact: Contact = Contact()
    judicial_context: JudicialContext
    referral_reason: ReferralReason


class CareNotes(Strict):
    """Care-side content: clinical and welfare notes (never disclosed to justice)."""

    clinical_note: LongText | None = None
    welfare_note: LongText | None = None


# Sealed field name -> data category (ARCHITECTURE.md, 'Data categories').
FIELD_CATEGORY: dict[str, str] = {
    "identity.name": "identity",
    "identity.birth_date": "identity",
    "identity.national_number": "identity",
    "contact.phone": "contact",
    "contact.address": "contact",
    "judicial_context.offence_category": "judicial_context",
    "judicial_context.notice_number": "judicial_context",
    "judicial_context.deadline": "judicial_context",
    "referral_reason.substance_or_behaviour": "referral_reason",
    "referral_reason.note": "referral_reason",
    "clinical.note": "clinical",
    "welfare.note": "welfare",
}

# The minimal judicial subset a care provider may see (policies: projection "minimal").
MINIMAL_FIELDS = {"judicial_context": {"offence_category", "deadline"}}


def flatten(body: ReferralCreate) -> dict[str, str]:
    """The personal fields of a new referral, as field name -> clear text (to be sealed)."""
    out: dict[str, str] = {
        "identity.name": body.identity.name,
        "identity.birth_date": body.identity.birth_date.isoformat(),
        "identity.national_number": body.identity.national_number,
        "judicial_context.offence_category": body.judicial_context.offence_category.value,
        "judicial_context.notice_number": body.judicial_context.notice_number,
        "referral_reason.substance_or_behaviour": body.referral_reason.substance_or_behaviour,
    }
    optional = {
        "contact.phone": body.contact.phone,
        "contact.address": body.contact.address,
        "judicial_context.deadline": (
            body.judicial_context.deadline.isoformat() if body.judicial_context.deadline else None
        ),
        "referral_reason.note": body.referral_reason.note,
    }
    out.update({k: v for k, v in optional.items() if v is not None})
    return out
