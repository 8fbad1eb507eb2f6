"""The decision cache answers a repeat from memory, and never what Cedar would not answer."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import cedarpy
import pytest
from policy_factories import consent_in, situation

from services import policy
from services.policy import Action, ConsentState, DataCategory, authorize, disclosable_categories


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
