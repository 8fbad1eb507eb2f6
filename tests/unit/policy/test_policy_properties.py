"""Whatever the roles, sectors, relations and consent: the lines that are never crossed."""

from __future__ import annotations

import json

import cedarpy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services import policy
from services.policy import (
    CASE_ACTIONS,
    ENGINE,
    REGISTRY_ACTIONS,
    Action,
    CaseFacts,
    ConsentFacts,
    ConsentPurpose,
    ConsentState,
    ConsentWidening,
    DataCategory,
    Relation,
    authorize,
    disclosable_categories,
    relation_of,
)
from services.principal import Principal, Role, Sector

ORGS = ["pk-antwerp", "pk-ghent", "cad-limburg", "caw-oost", "dpo-office", "other"]
CASE_CONTENT = set(DataCategory) - {DataCategory.ACCESS_LOG}

principals = st.builds(
    Principal,
    subject=st.sampled_from(["u1", "u2", 'odd "id"\n']),
    organisation=st.sampled_from(ORGS),
    sector=st.sampled_from(Sector),
    roles=st.frozensets(st.sampled_from(Role), min_size=1),
)
cases = st.builds(
    CaseFacts,
    referral_id=st.just("r-1"),
    framework_id=st.just("f-1"),
    framework_members=st.frozensets(st.sampled_from(ORGS)),
    referring_office=st.sampled_from(ORGS),
    offered_provider=st.none() | st.sampled_from(ORGS),
    accepted_provider=st.none() | st.sampled_from(ORGS),
)
consents = st.builds(
    ConsentFacts,
    status=st.sampled_from(ConsentState),
    purposes=st.frozensets(st.sampled_from([p.value for p in ConsentPurpose])),
    categories=st.frozensets(st.sampled_from([c.value for c in DataCategory])),
)
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(principal=principals, case=cases, consent=consents)
def test_justice_never_receives_clinical_or_welfare(
    principal: Principal, case: CaseFacts, consent: ConsentFacts
) -> None:
    decisions = disclosable_categories(principal, case, consent)
    if principal.sector is Sector.JUSTICE or principal.has_any(
        Role.PROSECUTOR, Role.JUSTICE_ASSISTANT
    ):
        assert not decisions[DataCategory.CLINICAL].allowed
        assert not decisions[DataCategory.WELFARE].allowed


@SETTINGS
@given(principal=principals, case=cases, consent=consents)
def test_auditors_never_receive_case_content(
    principal: Principal, case: CaseFacts, consent: ConsentFacts
) -> None:
    decisions = disclosable_categories(principal, case, consent)
    if Role.AUDITOR in principal.roles or principal.sector is Sector.AUDIT:
        assert not any(decisions[category].allowed for category in CASE_CONTENT)


@SETTINGS
@given(principal=principals, case=cases, consent=consents)
def test_outsiders_receive_nothing_and_do_nothing(
    principal: Principal, case: CaseFacts, consent: ConsentFacts
) -> None:
    if relation_of(principal, case) is not Relation.OUTSIDER:
        return
    decisions = disclosable_categories(principal, case, consent)
    assert not any(decision.allowed for decision in decisions.values())
    for action in CASE_ACTIONS:
        assert not authorize(principal, action, case, consent).allowed


@SETTINGS
@given(principal=principals, case=cases, consent=consents)
def test_nothing_needing_consent_flows_without_an_active_consent(
    principal: Principal, case: CaseFacts, consent: ConsentFacts
) -> None:
    if consent.status is ConsentState.ACTIVE:
        return
    allowed = {c for c, d in disclosable_categories(principal, case, consent).items() if d.allowed}
    # Only the referring office's own file and the auditors' access log need no consent.
    assert allowed <= {
        DataCategory.IDENTITY,
        DataCategory.CONTACT,
        DataCategory.JUDICIAL_CONTEXT,
        DataCategory.REFERRAL_REASON,
        DataCategory.ACCESS_LOG,
    }
    if allowed - {DataCategory.ACCESS_LOG}:
        assert relation_of(principal, case) is Relation.REFERRER
        assert principal.sector is Sector.JUSTICE


def _raw(results: list[cedarpy.AuthzResult]) -> list[tuple[bool, list[str], list[str]]]:
    return [
        (r.allowed, sorted(r.diagnostics.reasons), sorted(r.diagnostics.errors)) for r in results
    ]


widenings = st.none() | st.builds(
    ConsentWidening,
    purposes=st.frozensets(st.sampled_from([p.value for p in ConsentPurpose])),
    categories=st.frozensets(st.sampled_from([c.value for c in DataCategory])),
    recipients=st.frozensets(st.sampled_from(ORGS + ["justice", "health", "welfare"])),
    extends_validity=st.booleans(),
)


@SETTINGS
@given(
    principal=principals,
    case=cases,
    consent=consents,
    widening=widenings,
    sector=st.none() | st.sampled_from(Sector),
)
def test_each_action_is_decided_on_its_slice_as_on_the_whole_policy_set(
    principal: Principal,
    case: CaseFacts,
    consent: ConsentFacts,
    widening: ConsentWidening | None,
    sector: Sector | None,
) -> None:
    # The engine evaluates a request only on the policies whose action scope admits its
    # action: the same decision, the same reasons (positional ids) and the same errors.
    case = case.model_copy(update={"accepted_provider_sector": sector and sector.value})
    consent = consent.model_copy(update={"widening": widening})
    for action in Action:
        if action is Action.DISCLOSE:
            requests = policy._disclosure_requests(principal, case, consent, list(DataCategory))
            entities = policy._disclosure_entities(principal, case, consent)
        elif action in REGISTRY_ACTIONS:
            requests = [policy._registry_request(principal, action)]
            entities = policy._entities(principal, None)
        else:
            requests = [policy._case_request(principal, action, case, consent)]
            entities = policy._entities(principal, case)
        whole = cedarpy.is_authorized_batch(
            requests, ENGINE.policy_set, entities, schema=ENGINE.schema
        )
        sliced = cedarpy.is_authorized_batch(
            requests, ENGINE.policies_for(action.value), entities, schema=ENGINE.schema
        )
        assert _raw(sliced) == _raw(whole), action
        assert len(ENGINE.policies_for(action.value)) < len(ENGINE.policy_set)


@SETTINGS
@given(
    principal=principals,
    case=cases,
    consent=consents,
    sector=st.none() | st.sampled_from(Sector),
)
def test_a_disclosure_on_the_principals_entity_base_is_decided_as_on_the_whole_list(
    principal: Principal, case: CaseFacts, consent: ConsentFacts, sector: Sector | None
) -> None:
    # A disclosure call parses only its case's entities, added to the principal's base
    # (`EntityBases`, validated against the schema once): the same decisions, reasons and
    # errors as on the whole list, and the whole list validates against the schema.
    case = case.model_copy(update={"accepted_provider_sector": sector and sector.value})
    requests = policy._disclosure_requests(principal, case, consent, list(DataCategory))
    listed = policy._disclosure_entities(principal, case, consent)
    parsed = cedarpy.Entities.from_json_str(json.dumps(listed), schema=ENGINE.schema)
    based = policy._disclosure_entity_set(principal, case, consent)(ENGINE)
    assert len(based) == len(parsed)  # the same entities (with the schema's actions)

    def decided(entities: object) -> list[tuple[bool, list[str], list[str]]]:
        return _raw(
            cedarpy.is_authorized_batch(requests, ENGINE.policy_set, entities, schema=ENGINE.schema)
        )

    assert decided(based) == decided(listed)


def test_each_principal_parses_its_entity_base_once() -> None:
    bases = policy.EntityBases(max_entries=2)
    one, two, three = (
        Principal(
            subject=f"u{n}",
            organisation="cad-limburg",
            sector=Sector.HEALTH,
            roles={Role.CARE_WORKER},
        )
        for n in (1, 2, 3)
    )
    first = bases.of(one, ENGINE.schema)
    assert bases.of(one, ENGINE.schema) is first
    bases.of(two, ENGINE.schema)
    bases.of(three, ENGINE.schema)  # the least recently used (one) leaves
    assert len(bases) == 2
    assert bases.of(one, ENGINE.schema) is not first
