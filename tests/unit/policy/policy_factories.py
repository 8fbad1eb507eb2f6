"""Factories for the policy tests: principals in a relation to a synthetic case."""

from __future__ import annotations

from services.policy import (
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


def situation(role: str, sector: str, relation: str) -> tuple[Principal, CaseFacts]:
    """A principal with one role whose organisation has `relation` to a fresh case."""
    rel = Relation(relation)
    principal = Principal(
        subject=f"user-{role}-{sector}",
        organisation=explain_org(rel),
        sector=Sector(sector),
        roles=frozenset({Role(role)}),
    )
    case = synthetic_case(rel)
    assert relation_of(principal, case) is rel
    return principal, case


def consent_in(state: str, category: str | None = None) -> ConsentFacts:
    """The consent of a table row (see generate_disclosure_table.CONSENTS)."""
    if state == "none":
        return ConsentFacts()
    if state in ("withdrawn", "expired"):
        return ConsentFacts(
            status=ConsentState(state), purposes=ALL_PURPOSES, categories=ALL_CATEGORIES
        )
    if state == "active":
        return ConsentFacts(
            status=ConsentState.ACTIVE, purposes=ALL_PURPOSES, categories=ALL_CATEGORIES
        )
    if state == "active_without_this_category":
        assert category is not None
        return ConsentFacts(
            status=ConsentState.ACTIVE,
            purposes=ALL_PURPOSES,
            categories=ALL_CATEGORIES - {category},
        )
    missing = state.removeprefix("active_without_")
    assert missing in ALL_PURPOSES, state
    return ConsentFacts(
        status=ConsentState.ACTIVE, purposes=ALL_PURPOSES - {missing}, categories=ALL_CATEGORIES
    )
