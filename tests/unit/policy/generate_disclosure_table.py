"""Regenerate disclosure_table.csv from the rules of ARCHITECTURE.md, written out in plain Python.

This is deliberately a second, independent statement of the disclosure rules: the
table it writes is reviewed by hand (a DPO can filter it in a spreadsheet) and then
committed; test_policy_disclosure_table.py checks the Cedar policies against it.
Run it only when a rule, role, sector, relation or consent state changes, and review
the diff of the CSV:  .venv/bin/python tests/unit/policy/generate_disclosure_table.py
"""

from __future__ import annotations

import csv
import itertools
from pathlib import Path

TABLE = Path(__file__).with_name("disclosure_table.csv")
COLUMNS = ("category", "role", "sector", "relation", "consent", "expected")

CATEGORIES = (
    "identity",
    "contact",
    "judicial_context",
    "referral_reason",
    "clinical",
    "welfare",
    "compliance",
    "access_log",
)
ROLES = (
    "prosecutor",
    "justice_assistant",
    "intake_coordinator",
    "care_worker",
    "auditor",
    "admin",
)
SECTORS = ("justice", "health", "welfare", "audit")
RELATIONS = ("referrer", "offered_provider", "care_team", "framework_member", "outsider")
# Every consent state a row can be in. "active" covers every purpose and every category;
# the "active_without_..." states are active consents lacking one purpose, or lacking the
# row's own category.
CONSENTS = (
    "none",
    "active",
    "active_without_referral_to_care",
    "active_without_progress_reporting_to_justice",
    "active_without_care_team_sharing",
    "active_without_this_category",
    "withdrawn",
    "expired",
)

JUSTICE_ROLES = {"prosecutor", "justice_assistant"}
CARE_ROLES = {"intake_coordinator", "care_worker"}
CARE_SECTORS = {"health", "welfare"}
REFERRING_OFFICE_OWN_DATA = {"identity", "contact", "judicial_context", "referral_reason"}
CARE_TEAM_REFERRAL_DATA = {
    "identity",
    "contact",
    "judicial_context",
    "referral_reason",
    "compliance",
}
CARE_TEAM_SHARED_CONTENT = {"clinical", "welfare"}
OFFERED_PROVIDER_DATA = {"referral_reason", "judicial_context"}


def consent_covers(consent: str, purpose: str) -> bool:
    """An active consent that names `purpose` and the row's category."""
    if not consent.startswith("active"):
        return False
    return consent not in (f"active_without_{purpose}", "active_without_this_category")


def expected(category: str, role: str, sector: str, relation: str, consent: str) -> bool:
    """The disclosure rule of ARCHITECTURE.md for one situation."""
    if relation == "outsider":
        return False  # outside the cooperation framework: nothing, ever
    is_justice = sector == "justice" or role in JUSTICE_ROLES
    if is_justice and category in CARE_TEAM_SHARED_CONTENT:
        return False  # clinical and welfare never to justice
    if role == "admin":
        return False  # administrators read no case data
    if sector == "audit" or role == "auditor":
        # auditors see the access log only
        return category == "access_log" and sector == "audit" and role == "auditor"
    if category == "access_log":
        return False
    if sector == "justice" and role in JUSTICE_ROLES and relation == "referrer":
        if category in REFERRING_OFFICE_OWN_DATA:
            return True
        if category == "compliance":
            return consent_covers(consent, "progress_reporting_to_justice")
        return False
    if sector in CARE_SECTORS and role in CARE_ROLES:
        if relation == "care_team":
            if category in CARE_TEAM_REFERRAL_DATA:
                return consent_covers(consent, "referral_to_care")
            if category in CARE_TEAM_SHARED_CONTENT:
                return consent_covers(consent, "care_team_sharing")
        if relation == "offered_provider" and role == "intake_coordinator":
            if category in OFFERED_PROVIDER_DATA:
                return consent_covers(consent, "referral_to_care")
    return False


def rows() -> list[dict[str, str]]:
    """Every combination, in a stable order."""
    return [
        {
            "category": category,
            "role": role,
            "sector": sector,
            "relation": relation,
            "consent": consent,
            "expected": "allow" if expected(category, role, sector, relation, consent) else "deny",
        }
        for category, role, sector, relation, consent in itertools.product(
            CATEGORIES, ROLES, SECTORS, RELATIONS, CONSENTS
        )
    ]


def main() -> None:
    with TABLE.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows())


if __name__ == "__main__":
    main()
