"""Factories for the policy tests: principals in a relation to a synthetic case."""

from __future__ import annotations

from services.policy import (
    SECTOR_NAMES,
    CaseFacts,
    ConsentFacts,
    ConsentPurpose,
    ConsentState,
    DataCategory,
    Relation,
    explain_org,
    relation_of,
    synthetic_case,
)
from services.principal import Principal, Role, Sector

ALL_PURPOSES = frozenset(p.value for p in ConsentPurpose)
ALL_CATEGORIES = frozenset(c.value for c in DataCategory)


def situation(
    role: str, sector: str, relation: str, *, assigned: bool = True
) -> tuple[Principal, CaseFacts]:
    """A principal with one role whose organisation has `relation` to a fresh case, assigned
    to the case by its intake coordinator (need to know) or not."""
    rel = Relation(relation)
    principal = Principal(
        subject=f"user-{role}-{sector}",
        organisation=explain_org(rel),
        sector=Sector(sector),
        roles=frozenset({Role(role)}),
    )
    case = synthetic_case(rel).model_copy(
        update={"assigned_workers": frozenset({principal.subject}) if assigned else frozenset()}
    )
    assert relation_of(principal, case) is rel
    return principal, case


def consent_in(
    state: str, category: str | None = None, principal: Principal | None = None
) -> ConsentFacts:
    """The consent of a table row (see generate_disclosure_table.CONSENTS); some states
    depend on the row's category or on the row's user (`principal`)."""
    everyone = {"recipients": SECTOR_NAMES, "disclosers": SECTOR_NAMES}
    if state == "none":
        return ConsentFacts()
    if state in ("withdrawn", "expired"):
        return ConsentFacts(
            status=ConsentState(state),
            purposes=ALL_PURPOSES,
            categories=ALL_CATEGORIES,
            **everyone,
        )
    full = ConsentFacts(
        status=ConsentState.ACTIVE, purposes=ALL_PURPOSES, categories=ALL_CATEGORIES, **everyone
    )
    if state == "active":
        return full
    if state == "active_without_this_category":
        assert category is not None
        return full.model_copy(update={"categories": ALL_CATEGORIES - {category}})
    if state == "active_recipient_by_organisation_only":
        assert principal is not None
        return full.model_copy(update={"recipients": frozenset({principal.organisation})})
    if state == "active_not_naming_this_recipient":
        assert principal is not None
        return full.model_copy(update={"recipients": SECTOR_NAMES - {principal.sector.value}})
    if state == "active_without_referring_office_as_discloser":
        # the care sectors and the provider itself may disclose; justice may not
        return full.model_copy(
            update={"disclosers": frozenset({"health", "welfare", explain_org(Relation.CARE_TEAM)})}
        )
    if state == "active_without_care_provider_as_discloser":
        return full.model_copy(
            update={"disclosers": frozenset({"justice", explain_org(Relation.REFERRER)})}
        )
    missing = state.removeprefix("active_without_")
    assert missing in ALL_PURPOSES, state
    return full.model_copy(update={"purposes": ALL_PURPOSES - {missing}})
