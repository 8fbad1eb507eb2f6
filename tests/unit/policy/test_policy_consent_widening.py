"""Who may record a new consent version: the referring office always; the care team only
within care. Each row: who records, what the new version adds to the consent as it
stands, and the answer."""

from __future__ import annotations

import pytest
from policy_factories import situation

from services.policy import (
    Action,
    ConsentFacts,
    ConsentState,
    ConsentWidening,
    Relation,
    authorize,
    explain_org,
)

PROVIDER = explain_org(Relation.CARE_TEAM)
OTHER_PROVIDER = "another-provider"
NOTHING = ConsentWidening()

# (who: role, sector, relation, assigned) , what the new version adds, allowed?
ROWS = [
    # the referring office records any version, whatever it adds
    (("prosecutor", "justice", "referrer", False), NOTHING, True),
    (
        ("prosecutor", "justice", "referrer", False),
        ConsentWidening(
            purposes=frozenset({"progress_reporting_to_justice"}),
            recipients=frozenset({"justice", OTHER_PROVIDER}),
            extends_validity=True,
        ),
        True,
    ),
    # the care team: a narrower version, or the same one
    (("intake_coordinator", "health", "care_team", False), NOTHING, True),
    (("care_worker", "health", "care_team", True), NOTHING, True),
    # ... sharing inside the care team, clinical and welfare content, itself as recipient
    (
        ("intake_coordinator", "health", "care_team", False),
        ConsentWidening(
            purposes=frozenset({"care_team_sharing"}),
            categories=frozenset({"clinical", "welfare"}),
            recipients=frozenset({PROVIDER, "health"}),
            disclosers=frozenset({PROVIDER, "health"}),
        ),
        True,
    ),
    (
        ("care_worker", "welfare", "care_team", True),
        ConsentWidening(purposes=frozenset({"care_team_sharing"})),
        True,
    ),
    # a care worker who is not assigned to the case records nothing
    (("care_worker", "health", "care_team", False), NOTHING, False),
    # never more toward justice, nor toward other organisations or sectors
    (
        ("intake_coordinator", "health", "care_team", False),
        ConsentWidening(purposes=frozenset({"progress_reporting_to_justice"})),
        False,
    ),
    (
        ("intake_coordinator", "health", "care_team", False),
        ConsentWidening(categories=frozenset({"compliance"})),
        False,
    ),
    (
        ("intake_coordinator", "health", "care_team", False),
        ConsentWidening(recipients=frozenset({"justice"})),
        False,
    ),
    (
        ("intake_coordinator", "health", "care_team", False),
        ConsentWidening(recipients=frozenset({"welfare"})),
        False,
    ),
    (
        ("intake_coordinator", "health", "care_team", False),
        ConsentWidening(recipients=frozenset({OTHER_PROVIDER})),
        False,
    ),
    (
        ("intake_coordinator", "health", "care_team", False),
        ConsentWidening(disclosers=frozenset({"justice"})),
        False,
    ),
    # ... nor for longer: a new validity period is a new consent, taken by the office
    (
        ("intake_coordinator", "health", "care_team", False),
        ConsentWidening(extends_validity=True),
        False,
    ),
    # an offered provider, or a provider with no part in the case, records nothing
    (("intake_coordinator", "health", "offered_provider", False), NOTHING, False),
    (("intake_coordinator", "health", "framework_member", False), NOTHING, False),
]


@pytest.mark.parametrize(("who", "widening", "allowed"), ROWS)
def test_who_may_record_a_consent_version(
    who: tuple[str, str, str, bool], widening: ConsentWidening, allowed: bool
) -> None:
    role, sector, relation, assigned = who
    principal, case = situation(role, sector, relation, assigned=assigned)
    current = ConsentFacts(status=ConsentState.ACTIVE, widening=widening)
    decision = authorize(principal, Action.RECORD_CONSENT, case, current)
    assert not decision.errors, decision
    assert decision.allowed is allowed, decision


def test_the_care_team_records_nothing_without_the_facts_of_the_new_version() -> None:
    principal, case = situation("intake_coordinator", "health", "care_team")
    assert not authorize(principal, Action.RECORD_CONSENT, case).allowed


def test_a_caller_cannot_supply_the_widening_itself() -> None:
    principal, case = situation("intake_coordinator", "health", "care_team")
    forged = {"widening": {"purposes": [], "categories": [], "extends_validity": False}}
    assert not authorize(principal, Action.RECORD_CONSENT, case, context=forged).allowed
