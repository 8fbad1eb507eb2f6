"""The engine's edges: unknown things are denied, computed facts cannot be overridden."""

from __future__ import annotations

import re

import cedarpy
import pytest
from policy_factories import consent_in, situation

from services import policy
from services.policy import (
    ENGINE,
    Action,
    CaseFacts,
    ConsentFacts,
    ConsentState,
    DataCategory,
    Relation,
    authorize,
    disclosable_categories,
    explain,
    may_disclose,
    relation_of,
)
from services.principal import Principal, Role, Sector


def _principal(org: str, sector: Sector = Sector.HEALTH) -> Principal:
    return Principal(
        subject="u", organisation=org, sector=sector, roles=frozenset({Role.CARE_WORKER})
    )


CASE = CaseFacts(
    referral_id="r",
    framework_id="f",
    framework_members=frozenset({"pk", "cad", "caw", "other"}),
    referring_office="pk",
    offered_provider="caw",
    accepted_provider=None,
)


def test_relation_of_each_kind_of_organisation() -> None:
    assert relation_of(_principal("pk"), CASE) is Relation.REFERRER
    assert relation_of(_principal("caw"), CASE) is Relation.OFFERED_PROVIDER
    assert relation_of(_principal("other"), CASE) is Relation.FRAMEWORK_MEMBER
    assert relation_of(_principal("nowhere"), CASE) is Relation.OUTSIDER
    assert relation_of(_principal("pk"), None) is Relation.OUTSIDER
    accepted = CASE.model_copy(update={"accepted_provider": "cad"})
    assert relation_of(_principal("cad"), accepted) is Relation.CARE_TEAM
    # Once another provider accepted, the old offer gives no standing.
    assert relation_of(_principal("caw"), accepted) is Relation.FRAMEWORK_MEMBER
    # A referring office outside the framework is an outsider to the case.
    outside = CASE.model_copy(update={"framework_members": frozenset({"cad"})})
    assert relation_of(_principal("pk"), outside) is Relation.OUTSIDER


def test_unknown_action_is_denied() -> None:
    principal, case = situation("prosecutor", "justice", "referrer")
    decision = authorize(principal, "shred_everything", case)
    assert not decision.allowed and decision.errors


def test_a_case_action_without_case_facts_is_denied() -> None:
    principal, _ = situation("prosecutor", "justice", "referrer")
    decision = authorize(principal, Action.VIEW_REFERRAL, None)
    assert not decision.allowed and decision.errors


def test_unknown_category_is_denied() -> None:
    principal, case = situation("prosecutor", "justice", "referrer")
    assert not may_disclose(principal, "dna_profile", case).allowed
    assert not may_disclose(principal, DataCategory.IDENTITY, None).allowed


def test_disclose_through_authorize_takes_the_category_from_the_context() -> None:
    principal, case = situation("prosecutor", "justice", "referrer")
    assert authorize(principal, "disclose", case, context={"category": "identity"}).allowed
    assert not authorize(principal, "disclose", case).allowed


def test_a_caller_cannot_claim_a_relation_through_the_context() -> None:
    principal, case = situation("prosecutor", "justice", "framework_member")
    decision = authorize(principal, Action.CANCEL, case, context={"relation": "referrer"})
    assert not decision.allowed


def test_context_the_schema_does_not_know_is_denied_with_an_error() -> None:
    principal, case = situation("prosecutor", "justice", "referrer")
    decision = authorize(principal, Action.CANCEL, case, context={"free_text": "x"})
    assert not decision.allowed and decision.errors


def test_a_relation_not_on_the_case_record_is_refused_by_cedar() -> None:
    # The Python side computes the relation; Cedar checks it against the entities anyway.
    principal, case = situation("prosecutor", "justice", "framework_member")
    entities = [
        {
            "uid": {"type": "Referral::Organisation", "id": principal.organisation},
            "attrs": {},
            "parents": [],
        },
        {
            "uid": {"type": "Referral::Organisation", "id": case.referring_office},
            "attrs": {},
            "parents": [],
        },
        {
            "uid": {"type": "Referral::User", "id": "u"},
            "attrs": {
                "sector": "justice",
                "roles": ["prosecutor"],
                "organisation": {
                    "__entity": {"type": "Referral::Organisation", "id": principal.organisation}
                },
            },
            "parents": [{"type": "Referral::Organisation", "id": principal.organisation}],
        },
        {
            "uid": {"type": "Referral::Framework", "id": "f"},
            "attrs": {
                "participants": [
                    {"__entity": {"type": "Referral::Organisation", "id": o}}
                    for o in case.framework_members
                ]
            },
            "parents": [],
        },
        {
            "uid": {"type": "Referral::Case", "id": "c"},
            "attrs": {
                "framework": {"__entity": {"type": "Referral::Framework", "id": "f"}},
                "referring_office": {
                    "__entity": {"type": "Referral::Organisation", "id": case.referring_office}
                },
                "care_team": [],
                "assigned_workers": [],
            },
            "parents": [],
        },
    ]
    request = {
        "principal": {"type": "Referral::User", "id": "u"},
        "action": {"type": "Referral::Action", "id": "cancel"},
        "resource": {"type": "Referral::Case", "id": "c"},
        "context": {"relation": "referrer"},
    }
    result = cedarpy.is_authorized(request, ENGINE.policy_set, entities, schema=ENGINE.schema)
    assert not result.allowed
    assert ENGINE.stable_id(result.diagnostics.reasons[0]) == (
        "tenancy.forbid-relation-not-on-case-record"
    )


def test_disclosable_categories_answers_all_eight_with_projection() -> None:
    principal, case = situation("care_worker", "welfare", "care_team")
    decisions = disclosable_categories(principal, case, consent_in("active"))
    assert set(decisions) == set(DataCategory)
    assert decisions[DataCategory.JUDICIAL_CONTEXT].projection == "minimal"
    assert decisions[DataCategory.CLINICAL].projection == "full"
    assert decisions[DataCategory.ACCESS_LOG].projection is None
    assert not decisions[DataCategory.ACCESS_LOG].allowed


def test_withdrawal_is_named_as_the_reason() -> None:
    principal, case = situation("care_worker", "health", "care_team")
    decisions = disclosable_categories(principal, case, ConsentFacts(status=ConsentState.WITHDRAWN))
    assert decisions[DataCategory.CLINICAL].policy_ids == (
        "disclosure.forbid-care-after-consent-ends",
    )


def test_no_policy_permits_is_a_default_deny() -> None:
    principal, case = situation("care_worker", "health", "framework_member")
    decision = may_disclose(principal, DataCategory.IDENTITY, case, consent_in("active"))
    assert decision.default_deny and decision.policy_ids == ()


def test_explain_refuses_unknown_roles() -> None:
    decision = explain("janitor", "justice", "referrer", "identity", "active")
    assert not decision.allowed and decision.errors


def test_the_policies_ask_of_a_pruned_set_only_whether_it_holds_the_principal() -> None:
    # The entities carry at most the principal (or its organisation) in these sets; that is
    # exact only while every use of the attribute is this one question. A new policy that
    # asks anything else of them (its size, another member) must fail here.
    code = policy.without_comments(ENGINE.policy_text)
    for attribute, member in policy._PRINCIPAL_ONLY_SETS.items():
        uses = re.findall(rf"\b{attribute}\b", code)
        asked = re.findall(
            rf"\.\s*{attribute}\s*\.\s*contains\s*\(\s*{re.escape(member)}\s*\)", code
        )
        assert uses, f"no policy reads {attribute}: drop it from _PRINCIPAL_ONLY_SETS"
        assert len(asked) == len(uses), f"a policy asks {attribute} more than membership"


def test_a_large_framework_costs_one_reference_and_decides_as_before() -> None:
    members = frozenset({"pk", "cad", "caw"} | {f"provider-{i}" for i in range(60)})
    case = CASE.model_copy(
        update={"framework_members": members, "assigned_workers": frozenset({"u", "w2", "w3"})}
    )
    inside = _principal("provider-7")
    outside = _principal("elsewhere")
    for principal, expected in ((inside, ["provider-7"]), (outside, [])):
        by_type = {e["uid"]["type"]: e for e in policy._entities(principal, case)}
        participants = by_type["Referral::Framework"]["attrs"]["participants"]
        assert [p["__entity"]["id"] for p in participants] == expected
        workers = by_type["Referral::Case"]["attrs"]["assigned_workers"]
        assert [w["__entity"]["id"] for w in workers] == ["u"]
    # the tenancy forbid still tells a member of the framework from an organisation outside it
    outside_framework = "tenancy.forbid-case-action-outside-framework"
    assert outside_framework not in authorize(inside, Action.VIEW_REFERRAL, case).policy_ids
    denied = authorize(outside, Action.VIEW_REFERRAL, case)
    assert not denied.allowed
    assert outside_framework in denied.policy_ids


def test_the_action_hierarchy_is_read_from_the_schema_with_nested_groups() -> None:
    schema = """
    namespace N {
      entity U;
      action all_steps;  // a group
      action "case step" in all_steps;
      action a, b
        in ["case step"] appliesTo { principal: [U], resource: [U] };
      action lone appliesTo { principal: [U], resource: [U] };
    }
    """
    assert policy._action_ancestors(schema) == {
        "all_steps": frozenset(),
        "case step": frozenset({"all_steps"}),
        "a": frozenset({"case step", "all_steps"}),
        "b": frozenset({"case step", "all_steps"}),
        "lone": frozenset(),
    }


def test_an_action_declaration_it_cannot_read_stops_the_engine() -> None:
    with pytest.raises(policy.PolicyConfigurationError, match="cannot read the action"):
        policy._action_ancestors('namespace N { action a in [Other::Action::"g"]; }')


def test_every_action_has_a_slice_holding_only_policies_that_can_match_it() -> None:
    assert set(ENGINE.slices) == {action.value for action in Action}
    for action in Action:
        assert 0 < len(ENGINE.policies_for(action.value)) < len(ENGINE.policy_set)
    assert ENGINE.policies_for("not-an-action") is ENGINE.policy_set


def _answer(
    allowed: bool, reasons: list[str], errors: list[str] | None = None
) -> cedarpy.AuthzResult:
    return cedarpy.AuthzResult(
        {
            "decision": "Allow" if allowed else "Deny",
            "diagnostics": {"reason": reasons, "errors": errors or []},
        }
    )


def test_a_clean_answer_is_translated_once_and_by_everything_it_depends_on() -> None:
    # Cedar answers a batch of eight categories with two or three distinct (decision,
    # reasons) pairs: each is translated once. The memo must key on the whole of what the
    # translation reads: the same reasons as a disclosure carry a projection, as a step not.
    permit = next(pid for pid, notes in ENGINE.annotations.items() if "projection" in notes)
    cedar_id = next(cid for cid, pid in ENGINE.ids.items() if pid == permit)
    ENGINE.clean_decisions.clear()
    disclosed = policy._decision(_answer(True, [cedar_id]), ENGINE, disclosure=True)
    stepped = policy._decision(_answer(True, [cedar_id]), ENGINE, disclosure=False)
    denied = policy._decision(_answer(False, [cedar_id]), ENGINE, disclosure=True)
    assert disclosed.allowed and disclosed.projection == ENGINE.annotations[permit]["projection"]
    assert disclosed.policy_ids == stepped.policy_ids == denied.policy_ids == (permit,)
    assert stepped.allowed and stepped.projection is None
    assert not denied.allowed and denied.projection is None
    assert policy._decision(_answer(True, [cedar_id]), ENGINE, disclosure=True) is disclosed
    assert len(ENGINE.clean_decisions) == 3
    # An answer with errors fails closed and is never kept: its texts differ each time.
    failed = policy._decision(
        _answer(True, [cedar_id], [f"error in `{cedar_id}`"]), ENGINE, disclosure=True
    )
    assert not failed.allowed and failed.errors == (f"error in `{permit}`",)
    assert failed.policy_ids == ()
    assert len(ENGINE.clean_decisions) == 3
