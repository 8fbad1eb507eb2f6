"""The consent service's pure parts: the state of a stored consent at a moment, what a new
version adds to it (the policies decide who may record it), and the form a consent needs."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta

import pytest

from services import consent
from services.lifecycle import SignedBy, SignerCapacity, SigningMethod
from services.models import Consent
from services.policy import ConsentState

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def stored(**fields: object) -> Consent:
    values: dict[str, object] = {
        "id": uuid.uuid4(),
        "referral_id": uuid.uuid4(),
        "status": "active",
        "purposes": ["referral_to_care"],
        "categories": ["identity", "clinical"],
        "recipients": ["cgg-antwerpen", "parket-antwerpen"],
        "disclosers": ["parket-antwerpen", "health"],
        "recorded_by": "s",
        "recorded_by_organisation": "parket-antwerpen",
        "valid_from": NOW - timedelta(days=10),
        "valid_until": NOW + timedelta(days=10),
    }
    values.update(fields)
    return Consent(**values)


@pytest.mark.parametrize(
    ("fields", "state"),
    [
        ({}, ConsentState.ACTIVE),
        ({"valid_until": NOW}, ConsentState.EXPIRED),  # the validity ends at that moment
        ({"status": "expired"}, ConsentState.EXPIRED),
        ({"status": "withdrawn"}, ConsentState.WITHDRAWN),
        ({"withdrawn_at": NOW - timedelta(seconds=1)}, ConsentState.WITHDRAWN),
        ({"status": "withdrawn", "valid_until": NOW}, ConsentState.WITHDRAWN),
        ({"status": "refused"}, ConsentState.REFUSED),
    ],
)
def test_the_state_of_a_stored_consent(fields: dict[str, object], state: ConsentState) -> None:
    assert consent.state_at(stored(**fields), NOW) is state


def test_the_facts_carry_recipients_and_disclosers() -> None:
    facts = consent.facts(stored(), NOW)
    assert facts.recipients == {"cgg-antwerpen", "parket-antwerpen"}
    assert facts.disclosers == {"parket-antwerpen", "health"}


def test_what_a_new_version_adds() -> None:
    added = consent.widening(
        current=stored(),
        at=NOW,
        purposes=["referral_to_care", "care_team_sharing"],
        categories=["identity"],
        recipients=["cgg-antwerpen", "health"],
        disclosers=["parket-antwerpen"],
        valid_until=NOW + timedelta(days=5),
    )
    assert added.purposes == {"care_team_sharing"}
    assert added.categories == set() and added.disclosers == set()
    assert added.recipients == {"health"}
    assert added.extends_validity is False
    longer = consent.widening(
        current=stored(),
        at=NOW,
        purposes=[],
        categories=[],
        recipients=[],
        disclosers=[],
        valid_until=NOW + timedelta(days=11),
    )
    assert longer.extends_validity is True


def test_without_an_active_consent_a_version_adds_everything() -> None:
    for current in (None, stored(status="withdrawn"), stored(valid_until=NOW)):
        added = consent.widening(
            current=current,
            at=NOW,
            purposes=["referral_to_care"],
            categories=["identity"],
            recipients=["health"],
            disclosers=["justice"],
            valid_until=NOW + timedelta(days=1),
        )
        assert added.purposes == {"referral_to_care"} and added.extends_validity


def _form(**overrides: object) -> list[str]:
    values: dict[str, object] = {
        "given": True,
        "purposes": ["referral_to_care"],
        "categories": ["identity"],
        "recipients": ["health"],
        "disclosers": ["justice"],
        "right_to_revoke_explained": True,
        "valid_until": NOW + timedelta(days=30),
        "now": NOW,
        "signed_by": SignedBy.PERSON,
        "signer_capacity": SignerCapacity.SELF,
        "signed_on": NOW.date(),
        "signing_method": SigningMethod.PAPER_FORM,
    }
    values.update(overrides)
    return consent.check_form(**values)  # type: ignore[arg-type]


def test_a_complete_form_lacks_nothing() -> None:
    assert _form() == []
    assert (
        _form(signed_by=SignedBy.LEGAL_REPRESENTATIVE, signer_capacity=SignerCapacity.GUARDIAN)
        == []
    )


@pytest.mark.parametrize(
    "overrides",
    [
        {"signed_by": None},
        {"signer_capacity": None},
        {"signer_capacity": SignerCapacity.PARENT},
        {"signed_by": SignedBy.LEGAL_REPRESENTATIVE},
        {"signed_on": None},
        {"signed_on": date(2026, 12, 2)},
        {"signing_method": None},
        {"right_to_revoke_explained": False},
    ],
)
def test_an_incomplete_form_says_what_it_lacks(overrides: dict[str, object]) -> None:
    assert _form(**overrides)


def test_a_refusal_needs_no_signature_fields() -> None:
    assert _form(given=False, signed_by=None, signing_method=None, signed_on=None) == []
