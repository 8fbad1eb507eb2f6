"""The decision cache answers a repeat from memory, and never what Cedar would not answer."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import cedarpy
import pytest
from policy_factories import consent_in, situation

from services import policy
from services.policy import (
    Action,
    CaseFacts,
    ConsentFacts,
    ConsentState,
    DataCategory,
    authorize,
    disclosable_categories,
)
from services.principal import Principal


@pytest.fixture
def cedar_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Counts Cedar's evaluations, with an empty cache before and after."""
    calls: list[int] = []
    real = cedarpy.is_authorized_batch

    def counted(requests: list[dict[str, Any]], *args: Any, **kwargs: Any) -> Any:
        calls.append(len(requests))
        return real(requests, *args, **kwargs)

    monkeypatch.setattr(cedarpy, "is_authorized_batch", counted)
    policy.clear_decision_cache()
    yield calls
    policy.clear_decision_cache()


def test_a_repeat_on_the_same_facts_costs_no_cedar_call(cedar_calls: list[int]) -> None:
    principal, case = situation("care_worker", "health", "care_team")
    consent = consent_in("active")
    first = disclosable_categories(principal, case, consent)
    again = disclosable_categories(principal, case, consent)
    assert again == first and first[DataCategory.CLINICAL].allowed
    assert authorize(principal, Action.VIEW_REFERRAL, case, consent).allowed
    assert authorize(principal, Action.VIEW_REFERRAL, case, consent).allowed
    assert cedar_calls == [len(DataCategory), 1]


def test_any_changed_fact_is_decided_again(cedar_calls: list[int]) -> None:
    principal, case = situation("care_worker", "health", "care_team")
    active = consent_in("active")
    assert disclosable_categories(principal, case, active)[DataCategory.CLINICAL].allowed
    # the consent withdrawn
    withdrawn = active.model_copy(update={"status": ConsentState.WITHDRAWN})
    assert not disclosable_categories(principal, case, withdrawn)[DataCategory.CLINICAL].allowed
    # the care worker released from the case (need to know)
    released = case.model_copy(update={"assigned_workers": frozenset()})
    assert not disclosable_categories(principal, released, active)[DataCategory.CLINICAL].allowed
    # another person of the same organisation, not assigned
    other = principal.model_copy(update={"subject": "someone-else"})
    assert not disclosable_categories(other, case, active)[DataCategory.CLINICAL].allowed
    # the organisation no longer in the framework
    outside = case.model_copy(update={"framework_members": frozenset({case.referring_office})})
    assert authorize(principal, Action.VIEW_REFERRAL, case, active).allowed
    assert not authorize(principal, Action.VIEW_REFERRAL, outside, active).allowed
    # and the first facts still answer as before
    assert disclosable_categories(principal, case, active)[DataCategory.CLINICAL].allowed
    assert len(cedar_calls) == 6  # the repeat of the first facts took none


def test_a_decision_that_could_not_be_evaluated_is_not_kept(
    cedar_calls: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    principal, case = situation("prosecutor", "justice", "referrer")
    real = cedarpy.is_authorized_batch

    def failing(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the engine failed")

    monkeypatch.setattr(cedarpy, "is_authorized_batch", failing)
    failed = authorize(principal, Action.VIEW_REFERRAL, case, None)
    assert not failed.allowed and failed.errors
    monkeypatch.setattr(cedarpy, "is_authorized_batch", real)
    assert authorize(principal, Action.VIEW_REFERRAL, case, None).allowed


def test_a_callers_context_is_never_answered_from_the_cache(cedar_calls: list[int]) -> None:
    principal, case = situation("prosecutor", "justice", "referrer")
    for _ in range(2):
        authorize(principal, Action.VIEW_REFERRAL, case, None, context={"note": "x"})
    assert cedar_calls == [1, 1]


def _rows() -> tuple[Principal, list[tuple[CaseFacts, ConsentFacts | None]]]:
    """A care worker's list: cases in every relation, consent state and provider sector."""
    principal, case = situation("care_worker", "health", "care_team")
    org = principal.organisation
    rows: list[tuple[CaseFacts, ConsentFacts | None]] = []
    for number, relation in enumerate(policy.Relation):
        synthetic = policy.synthetic_case(relation)
        # the principal's organisation in that relation to the case
        theirs = policy.explain_org(relation)
        renamed = {
            field: org if value == theirs else value
            for field, value in synthetic.model_dump().items()
            if field in ("referring_office", "offered_provider", "accepted_provider")
        }
        members = {org if m == theirs else m for m in synthetic.framework_members}
        if relation is not policy.Relation.OUTSIDER:
            members.add(org)
        base = synthetic.model_copy(
            update={
                **renamed,
                "referral_id": f"case-{number}",
                "framework_id": f"framework-{number}",
                "framework_members": frozenset(members),
                "assigned_workers": case.assigned_workers,
            }
        )
        for state in ("active", "withdrawn", "none"):
            rows.append(
                (
                    base.model_copy(update={"referral_id": f"case-{number}-{state}"}),
                    consent_in(state),
                )
            )
    # an accepted provider of unknown sector: its policies fail closed on that sector,
    # while another row knows the same provider's sector
    other = "cad-elsewhere"
    known = case.model_copy(
        update={
            "referral_id": "known-sector",
            "accepted_provider": other,
            "accepted_provider_sector": "welfare",
        }
    )
    unknown = known.model_copy(
        update={"referral_id": "unknown-sector", "accepted_provider_sector": None}
    )
    rows += [(known, consent_in("active")), (unknown, consent_in("active"))]
    # two rows of one id whose facts differ where the policies look (the second's framework
    # leaves the principal's organisation out; a framework is carried only as far as the
    # principal's organisation is concerned, see policy._PRINCIPAL_ONLY_SETS)
    rows += [
        (case.model_copy(update={"referral_id": "twice"}), consent_in("active")),
        (
            case.model_copy(
                update={
                    "referral_id": "twice",
                    "framework_members": case.framework_members - {org},
                }
            ),
            consent_in("active"),
        ),
    ]
    return principal, rows


def test_a_list_decided_in_one_call_is_decided_as_each_row_alone(
    cedar_calls: list[int],
) -> None:
    principal, rows = _rows()
    alone = [authorize(principal, Action.VIEW_REFERRAL, c, k) for c, k in rows]
    disclosed_alone = [disclosable_categories(principal, c, k) for c, k in rows]
    assert any(d.allowed for d in alone) and not all(d.allowed for d in alone)
    policy.clear_decision_cache()
    cedar_calls.clear()

    assert policy.authorize_each(principal, Action.VIEW_REFERRAL, rows) == alone
    assert policy.disclosable_categories_each(principal, rows) == disclosed_alone
    # one call for the rows that share a call; the unknown sector and the second "twice"
    # (its facts differ from the first's) are decided alone
    assert cedar_calls == [len(rows) - 2, 1, 1, (len(rows) - 2) * len(DataCategory), 8, 8]
    assert policy.authorize_each(principal, Action.VIEW_REFERRAL, rows) == alone
    assert policy.disclosable_categories_each(principal, rows) == disclosed_alone
