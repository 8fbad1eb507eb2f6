"""Case content as it enters the engine, and the data category of every personal field.

Every field here is personal or confidential: it is sealed (services.crypto) before it is
stored and projected per data category on the way out.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import date, timedelta
from enum import StrEnum
from typing import Annotated
from uuid import UUID

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
)

from services.lifecycle import TargetGroup

# Characters that are invisible or reorder text: control characters (NUL...), format
# characters (right-to-left overrides, zero-width spaces, BOM), private-use, surrogates and
# unassigned code points. In a name they let two records look alike or one look like
# another on screen, so free text refuses them; long text keeps line breaks and tabs.
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Co", "Cs", "Cn"})


def _visible(value: str, *, allowed: frozenset[str] = frozenset()) -> str:
    for char in value:
        if char not in allowed and unicodedata.category(char) in _HIDDEN_CATEGORIES:
            raise ValueError(
                f"contains an invisible or control character (U+{ord(char):04X}), not allowed"
            )
    return value


def _visible_line(value: str) -> str:
    return _visible(value)


def _visible_text(value: str) -> str:
    return _visible(value, allowed=frozenset("\n\t"))


Text = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
    AfterValidator(_visible_line),
]
LongText = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=2000),
    AfterValidator(_visible_text),
]

NATIONAL_NUMBER_PATTERN = re.compile(r"^\d{2}\.?\d{2}\.?\d{2}-?\d{3}\.?\d{2}$")
# How far ahead a judicial deadline may lie (a referral before prosecution is short-lived).
MAX_DEADLINE_AHEAD = timedelta(days=5 * 366)


class JudicialDistrict(StrEnum):
    """The judicial districts (arrondissements) of Belgium since the 2014 reform.

    Codes are language-neutral identifiers; the UI shows each in the user's language.
    """

    ANTWERPEN = "antwerpen"
    LIMBURG = "limburg"
    OOST_VLAANDEREN = "oost-vlaanderen"
    WEST_VLAANDEREN = "west-vlaanderen"
    LEUVEN = "leuven"
    HALLE_VILVOORDE = "halle-vilvoorde"
    BRUSSEL = "brussel"
    BRABANT_WALLON = "brabant-wallon"
    HAINAUT = "hainaut"
    LIEGE = "liege"
    LUXEMBOURG = "luxembourg"
    NAMUR = "namur"
    EUPEN = "eupen"


def national_number_birth_date(value: str) -> tuple[int, int, int]:
    """(year, month, day) encoded in a Belgian national number whose mod-97 check holds;
    month or day 0 means unknown. Raises ValueError when the check digits do not match."""
    digits = re.sub(r"\D", "", value)
    base, check = digits[:9], int(digits[9:])
    if 97 - int(base) % 97 == check:
        century = 1900
    elif 97 - int("2" + base) % 97 == check:
        century = 2000  # born in 2000 or later: the check is computed over 2 + the nine digits
    else:
        raise ValueError("the check digits of the national number do not match (modulo 97)")
    month = int(base[2:4])
    # "bis" numbers (people not in the national register) add 20 or 40 to the month
    if month > 40:
        month -= 40
    elif month > 20:
        month -= 20
    return century + int(base[:2]), month, int(base[4:6])


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
    def _national_number_valid(cls, value: str, info: ValidationInfo) -> str:
        if not NATIONAL_NUMBER_PATTERN.match(value):
            raise ValueError("a national number has 11 digits (YY.MM.DD-XXX.CC)")
        year, month, day = national_number_birth_date(value)
        born = info.data.get("birth_date")  # validated before this field, if it was valid
        if isinstance(born, date) and (
            year != born.year or month not in (0, born.month) or day not in (0, born.day)
        ):
            raise ValueError("the national number does not match the birth date")
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

    @field_validator("deadline")
    @classmethod
    def _deadline_ahead(cls, value: date | None) -> date | None:
        if value is not None:
            today = date.today()
            if value < today:
                raise ValueError("the judicial deadline has already passed")
            if value > today + MAX_DEADLINE_AHEAD:
                raise ValueError("the judicial deadline is more than five years ahead")
        return value


class ReferralReason(Strict):
    target_group: TargetGroup
    substance_or_behaviour: Text
    note: LongText | None = None


class ReferralCreate(Strict):
    """What a prosecutor's office submits."""

    framework_id: UUID
    district: JudicialDistrict
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
