"""Who may take each step of a referral: every action against every role, sector and relation."""

from __future__ import annotations

import itertools

import pytest
from policy_factories import situation

from services.policy import Action, Relation, authorize
from services.principal import Role, Sector

# (role, sector) pairs, named as the people they are.
PROSECUTORS_OFFICE = {("prosecutor", "justice"), ("justice_assistant", "justice")}
INTAKE = {("intake_coordinator", "health"), ("intake_coordinator", "welfare")}
CARE_PROFESSIONALS = INTAKE | {("care_worker", "health"), ("care_worker", "welfare")}
CARE_WORKERS = {("care_worker", "health"), ("care_worker", "welfare")}
AUDITORS = {("auditor", "audit")}
ADMINS = {("admin", sector.value) for sector in Sector}

ANY_RELATION = set(Relation)

# action -> [(who, in which relation to the case)]; everyone else is refused.
WHO_MAY: dict[Action, list[tuple[set[tuple[str, str]], set[Relation]]]] = {
    Action.CREATE_REFERRAL: [(PROSECUTORS_OFFICE, {Relation.REFERRER})],
    Action.VIEW_REFERRAL: [
        (PROSECUTORS_OFFICE, {Relation.REFERRER}),
        (INTAKE, {Relation.OFFERED_PROVIDER}),
        (CARE_PROFESSIONALS, {Relation.CARE_TEAM}),
    ],
    # the exact stage: to justice only with the compliance category (a disclosure, see
    # disclosure_table.csv); the care team follows the case it runs whatever the consent
    Action.VIEW_STAGE: [(CARE_PROFESSIONALS, {Relation.CARE_TEAM})],
    Action.LIST_REFERRALS: [(PROSECUTORS_OFFICE | CARE_PROFESSIONALS, ANY_RELATION)],
    # The care team records a consent only as a widening within care, which needs the
    # facts of the proposed version: see test_policy_consent_widening.py.
    Action.RECORD_CONSENT: [(PROSECUTORS_OFFICE, {Relation.REFERRER})],
    Action.WITHDRAW_CONSENT: [
        (PROSECUTORS_OFFICE, {Relation.REFERRER}),
        (CARE_PROFESSIONALS, {Relation.CARE_TEAM}),
    ],
    Action.ACCEPT: [(INTAKE, {Relation.OFFERED_PROVIDER})],
    Action.DECLINE: [(INTAKE, {Relation.OFFERED_PROVIDER})],
    Action.RECORD_INTAKE: [(CARE_PROFESSIONALS, {Relation.CARE_TEAM})],
    Action.REPORT_PROGRESS: [(CARE_PROFESSIONALS, {Relation.CARE_TEAM})],
    Action.CLOSE: [(CARE_PROFESSIONALS, {Relation.CARE_TEAM})],
    Action.DECIDE: [(PROSECUTORS_OFFICE, {Relation.REFERRER})],
    Action.CANCEL: [(PROSECUTORS_OFFICE, {Relation.REFERRER})],
    Action.REMATCH: [(PROSECUTORS_OFFICE, {Relation.REFERRER})],
    Action.SEARCH_AUDIT: [(AUDITORS, ANY_RELATION)],
    Action.VERIFY_AUDIT: [(AUDITORS, ANY_RELATION)],
    Action.EXPLAIN_POLICY: [(AUDITORS | ADMINS, ANY_RELATION)],
    Action.ACCESS_REPORT: [(CARE_WORKERS, {Relation.CARE_TEAM})],
    Action.PERSON_ACCESS_REPORT: [(AUDITORS, ANY_RELATION)],
    Action.DECODE_PAYLOADS: [(ADMINS, ANY_RELATION)],
    Action.ASSIGN_CARE_WORKER: [(INTAKE, {Relation.CARE_TEAM})],
    Action.RELEASE_CARE_WORKER: [(INTAKE, {Relation.CARE_TEAM})],
}


def may(action: Action, role: str, sector: str, relation: Relation) -> bool:
    return any(
        (role, sector) in who and relation in relations for who, relations in WHO_MAY[action]
    )


def test_every_action_but_disclose_is_in_the_matrix() -> None:
    assert set(WHO_MAY) == set(Action) - {Action.DISCLOSE}


@pytest.mark.parametrize("action", list(WHO_MAY), ids=str)
def test_who_may_take_each_step(action: Action) -> None:
    mismatches = []
    for role, sector, relation in itertools.product(Role, Sector, Relation):
        principal, case = situation(role, sector, relation)
        decision = authorize(principal, action, case)
        assert not decision.errors, decision
        want = may(action, role, sector, relation)
        if decision.allowed != want:
            mismatches.append(f"{action} {role} {sector} {relation}: want {want}, got {decision}")
        if decision.allowed:
            assert decision.policy_ids, decision
    assert not mismatches, "\n".join(mismatches)


def test_an_accepted_case_is_no_longer_an_offer() -> None:
    principal, case = situation("intake_coordinator", "health", Relation.CARE_TEAM)
    assert not authorize(principal, Action.ACCEPT, case).allowed
    assert authorize(principal, Action.RECORD_INTAKE, case).allowed


def test_a_prosecutor_creating_a_referral_is_told_which_policy_allowed_it() -> None:
    principal, case = situation("prosecutor", "justice", Relation.REFERRER)
    decision = authorize(principal, "create_referral", case)
    assert decision.allowed
    assert decision.policy_ids == ("lifecycle.permit-referring-office-steps",)
    assert decision.projection is None


def test_an_outsider_is_refused_by_the_framework_boundary() -> None:
    principal, case = situation("prosecutor", "justice", Relation.OUTSIDER)
    decision = authorize(principal, Action.VIEW_REFERRAL, case)
    assert not decision.allowed
    assert decision.policy_ids == ("tenancy.forbid-case-action-outside-framework",)


@pytest.mark.parametrize("action", [Action.ASSIGN_CARE_WORKER, Action.RELEASE_CARE_WORKER])
def test_only_the_intake_coordinator_puts_people_on_the_case(action: Action) -> None:
    coordinator, case = situation("intake_coordinator", "welfare", Relation.CARE_TEAM)
    decision = authorize(coordinator, action, case)
    assert decision.policy_ids == ("lifecycle.permit-intake-coordinator-assigns-care-team",)
    # an assigned care worker does not assign colleagues
    worker, case = situation("care_worker", "welfare", Relation.CARE_TEAM, assigned=True)
    assert not authorize(worker, action, case).allowed


@pytest.mark.parametrize("extra", [Role.AUDITOR, Role.ADMIN])
def test_the_stage_is_no_case_data_for_someone_who_also_audits_or_administers(
    extra: Role,
) -> None:
    """The care team follows its case's stage whatever the consent; a care professional who
    also holds the auditor or admin role sees what those roles see: no case data."""
    principal, case = situation("intake_coordinator", "health", Relation.CARE_TEAM)
    follows = authorize(principal, Action.VIEW_STAGE, case)
    assert follows.allowed
    assert follows.policy_ids == ("lifecycle.permit-care-team-follows-stage",)
    both = principal.model_copy(update={"roles": principal.roles | {extra}})
    assert not authorize(both, Action.VIEW_STAGE, case).allowed
