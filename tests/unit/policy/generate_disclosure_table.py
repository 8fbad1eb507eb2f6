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
COLUMNS = ("category", "role", "sector", "relation", "assigned", "consent", "expected")

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
SECTORS = ("justice", "health", "welfare", "audit", "platform")
RELATIONS = ("referrer", "offered_provider", "care_team", "framework_member", "outsider")
# Whether the intake coordinator of the provider assigned the row's user to the case
# (need to know). It matters only inside the care team.
ASSIGNED = ("yes", "no")
# Every consent state a row can be in. "active" covers every purpose and every category,
# names every sector as a recipient and as a discloser; the "active_without_..." states
# are active consents lacking one purpose, or lacking the row's own category.
# Recipients and disclosers (organisation codes or whole sectors):
#   active_recipient_by_organisation_only: names the row's organisation, no sector;
#   active_not_naming_this_recipient: names every sector except the row's own, and no
#     organisation (e.g. a consent limited to welfare, read by a health provider);
#   active_without_referring_office_as_discloser: neither the justice sector nor the
#     referring office may disclose;
#   active_without_care_provider_as_discloser: only justice and the referring office
#     may disclose, not the provider that accepted the case nor its sector.
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


CARE_PROVIDER_RECORDS = {"clinical", "welfare", "compliance"}


def consent_covers(consent: str, purpose: str, category: str, relation: str) -> bool:
    """An active consent that names `purpose`, the row's category, the row's user as a
    recipient, and the party the data comes from as a discloser."""
    if not consent.startswith("active"):
        return False
    if consent in (f"active_without_{purpose}", "active_without_this_category"):
        return False
    if consent == "active_not_naming_this_recipient":
        return False
    if consent == "active_without_referring_office_as_discloser":
        # the data the referring office sent, toward anyone but the office itself
        if category in REFERRING_OFFICE_OWN_DATA and relation != "referrer":
            return False
    if consent == "active_without_care_provider_as_discloser":
        if category in CARE_PROVIDER_RECORDS:
            return False
    return True


def expected(
    category: str, role: str, sector: str, relation: str, assigned: str, consent: str
) -> bool:
    """The disclosure rule of ARCHITECTURE.md for one situation."""
    if relation == "outsider":
        return False  # outside the cooperation framework: nothing, ever
    is_justice = sector == "justice" or role in JUSTICE_ROLES
    if is_justice and category in CARE_TEAM_SHARED_CONTENT:
        return False  # clinical and welfare never to justice
    if role == "admin":
        return False  # administrators read no case data
    if sector == "platform":
        return False  # the platform's operators are a party to no case
    if sector == "audit" or role == "auditor":
        # auditors see the access log only
        return category == "access_log" and sector == "audit" and role == "auditor"
    if category == "access_log":
        return False
    if relation == "care_team" and role != "intake_coordinator" and assigned == "no":
        return False  # need to know: only assigned workers (and the intake coordinator)

    def covers(purpose: str) -> bool:
        return consent_covers(consent, purpose, category, relation)

    if sector == "justice" and role in JUSTICE_ROLES and relation == "referrer":
        if category in REFERRING_OFFICE_OWN_DATA:
            return True
        if category == "compliance":
            return covers("progress_reporting_to_justice")
        return False
    if sector in CARE_SECTORS and role in CARE_ROLES:
        if relation == "care_team":
            if category in CARE_TEAM_REFERRAL_DATA:
                return covers("referral_to_care")
            if category in CARE_TEAM_SHARED_CONTENT:
                return covers("care_team_sharing")
        if relation == "offered_provider" and role == "intake_coordinator":
            if category in OFFERED_PROVIDER_DATA:
                return covers("referral_to_care")
    return False


def rows() -> list[dict[str, str]]:
    """Every combination, in a stable order."""
    return [
        {
            "category": category,
            "role": role,
            "sector": sector,
            "relation": relation,
            "assigned": assigned,
            "consent": consent,
            "expected": (
                "allow" if expected(category, role, sector, relation, assigned, consent) else "deny"
            ),
        }
        for category, role, sector, relation, assigned, consent in itertools.product(
            CATEGORIES, ROLES, SECTORS, RELATIONS, ASSIGNED, CONSENTS
        )
    ]


def main() -> None:
    with TABLE.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows())


if __name__ == "__main__":
    main()
