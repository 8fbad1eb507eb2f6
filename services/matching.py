"""Provider directory and matching inside a cooperation framework."""

from __future__ import annotations

import uuid

from sqlmodel import Session, col, select

from services.lifecycle import CapacityStatus
from services.models import FrameworkParticipant, Organisation

CARE_SECTORS = ("health", "welfare")

# A provider with free capacity is offered first; one that first assesses, then a waitlist.
_CAPACITY_ORDER = {
    CapacityStatus.CAPACITY.value: 0,
    CapacityStatus.ASSESSMENT_REQUIRED.value: 1,
    CapacityStatus.WAITLIST.value: 2,
}


def candidate_providers(
    *,
    session: Session,
    framework_id: uuid.UUID,
    district: str,
    target_group: str,
    language: str,
    exclude: tuple[str, ...] = (),
) -> list[str]:
    """Care providers of the framework that fit the referral, best first."""
    rows = session.exec(
        select(Organisation)
        .join(
            FrameworkParticipant,
            col(FrameworkParticipant.organisation_code) == col(Organisation.code),
        )
        .where(FrameworkParticipant.framework_id == framework_id)
        .where(Organisation.sector.in_(CARE_SECTORS))  # type: ignore[attr-defined]
    ).all()
    fitting = [
        org
        for org in rows
        if org.code not in exclude
        and org.district == district
        and target_group in org.target_groups
        and language in org.languages
        and org.capacity_status in _CAPACITY_ORDER
    ]
    fitting.sort(key=lambda org: (_CAPACITY_ORDER[org.capacity_status], org.code))
    return [org.code for org in fitting]
