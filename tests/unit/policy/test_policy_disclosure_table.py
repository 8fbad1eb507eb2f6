"""The Cedar policies decide every row of disclosure_table.csv as the table says."""

from __future__ import annotations

import csv
import itertools
from collections import defaultdict
from pathlib import Path

import pytest
from policy_factories import consent_in, situation

from services.policy import DataCategory, Relation, disclosable_categories, may_disclose
from services.principal import Role, Sector

TABLE = Path(__file__).with_name("disclosure_table.csv")
CONSENTS = (
    "none",
    "active",
    "active_without_referral_to_care",
    "active_without_progress_reporting_to_justice",
    "active_without_care_team_sharing",
    "active_without_this_category",
    "active_recipient_by_organisation_only",
    "active_not_naming_this_recipient",
    "active_without_referring_office_as_discloser",
    "active_without_care_provider_as_discloser",
    "withdrawn",
    "expired",
)
ASSIGNED = ("yes", "no")
Key = tuple[str, str, str, str]  # role, sector, relation, assigned


def _load() -> dict[Key, dict[tuple[str, str], str]]:
    """(role, sector, relation) -> {(consent, category): expected}."""
    table: dict[Key, dict[tuple[str, str], str]] = defaultdict(dict)
    with TABLE.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            key = (row["role"], row["sector"], row["relation"], row["assigned"])
            cell = (row["consent"], row["category"])
            assert cell not in table[key], f"duplicate row {row}"
            assert row["expected"] in ("allow", "deny"), row
            table[key][cell] = row["expected"]
    return table


ROWS = _load()


def test_the_table_is_complete() -> None:
    expected_keys = set(
        itertools.product(
            [r.value for r in Role], [s.value for s in Sector], list(Relation), ASSIGNED
        )
    )
    assert set(ROWS) == expected_keys
    cells = set(itertools.product(CONSENTS, [c.value for c in DataCategory]))
    for key, decisions in ROWS.items():
        assert set(decisions) == cells, key


@pytest.mark.parametrize(
    ("role", "sector"), list(itertools.product([r.value for r in Role], [s.value for s in Sector]))
)
def test_policies_follow_the_disclosure_table(role: str, sector: str) -> None:
    mismatches: list[str] = []
    for relation, assigned in itertools.product(Relation, ASSIGNED):
        principal, case = situation(role, sector, relation, assigned=assigned == "yes")
        expected = ROWS[(role, sector, relation.value, assigned)]
        for consent_state in CONSENTS:
            if consent_state == "active_without_this_category":
                decisions = {
                    category: may_disclose(
                        principal, category, case, consent_in(consent_state, category)
                    )
                    for category in DataCategory
                }
            else:
                decisions = disclosable_categories(
                    principal, case, consent_in(consent_state, principal=principal)
                )
            for category, decision in decisions.items():
                want = expected[(consent_state, category.value)]
                got = "allow" if decision.allowed else "deny"
                assert not decision.errors, decision
                if got != want:
                    mismatches.append(
                        f"{category},{role},{sector},{relation},{assigned},{consent_state}: "
                        f"table says {want}, policies say {got} {decision.policy_ids}"
                    )
    assert not mismatches, "\n".join(mismatches)
