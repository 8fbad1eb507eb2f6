"""The person's access report (GDPR art. 15): which organisations and roles accessed or
received which data categories of their referral, when, and for what purpose.

Labels come from Babel catalogs (`services/locale/<lang>/messages.po`, read at run time,
no build step) in Dutch, French, German and English; dates are formatted per locale.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from babel.dates import format_datetime
from babel.messages.catalog import Catalog
from babel.messages.pofile import read_po
from sqlmodel import Session, col, select

from services.audit.models import AuditEntry
from services.models import Organisation

LANGUAGES = ("nl", "fr", "de", "en")
LOCALE_DIR = Path(__file__).parent / "locale"

# Access events shown to the person: reads, disclosures, creations and updates (the
# authorisation decisions behind them stay in the auditor's view).
_SHOWN = {"create", "read", "update", "disclosure_source", "disclosure_recipient"}


@lru_cache
def catalog(lang: str) -> Catalog:
    """The message catalog of one language."""
    with (LOCALE_DIR / lang / "LC_MESSAGES" / "messages.po").open("rb") as handle:
        return read_po(handle, locale=lang)


def translate(lang: str, msgid: str) -> str:
    """A label in `lang`; an unknown id is shown as is (the completeness test forbids it)."""
    message = catalog(lang).get(msgid)
    return str(message.string) if message is not None and message.string else msgid


@dataclass(frozen=True)
class ReportRow:
    organisation: str
    organisation_name: str
    role: str
    action: str
    categories: tuple[str, ...]
    purpose: str
    at: str


def build(*, session: Session, referral_pseudonym: str, lang: str) -> dict[str, Any]:
    """The report for one referral, labelled in `lang` (nl, fr, de, en)."""
    if lang not in LANGUAGES:
        raise ValueError("unsupported language")
    entries = session.exec(
        select(AuditEntry)
        .where(AuditEntry.referral_pseudonym == referral_pseudonym)
        .order_by(col(AuditEntry.index))
    ).all()
    names = {o.code: o.name for o in session.exec(select(Organisation)).all()}

    def t(msgid: str) -> str:
        return translate(lang, msgid)

    rows = [
        ReportRow(
            organisation=e.actor_organisation,
            organisation_name=names.get(e.actor_organisation, e.actor_organisation),
            role=t(f"role.{e.actor_role.split(',')[0]}"),
            action=t(f"event.{e.event_type}"),
            categories=tuple(t(f"category.{c}") for c in e.categories),
            purpose=t(f"purpose.{e.purpose_of_use}"),
            at=format_datetime(e.recorded_at, format="medium", locale=lang),
        )
        for e in entries
        # refused and failed accesses disclosed nothing: they stay in the auditor's view
        if e.event_type in _SHOWN and e.outcome in (None, "success")
    ]
    by_org: dict[str, list[ReportRow]] = defaultdict(list)
    for row in rows:
        by_org[row.organisation_name].append(row)
    return {
        "language": lang,
        "title": t("report.title"),
        "intro": t("report.intro"),
        "columns": {
            "organisation": t("column.organisation"),
            "role": t("column.role"),
            "action": t("column.action"),
            "categories": t("column.categories"),
            "purpose": t("column.purpose"),
            "at": t("column.at"),
        },
        "organisations": [
            {"organisation": name, "accesses": [row.__dict__ for row in org_rows]}
            for name, org_rows in by_org.items()
        ],
        "footer": t("report.footer"),
    }


def as_text(report: dict[str, Any]) -> str:
    """A printable plain-text version of the report."""
    cols = report["columns"]
    lines = [report["title"], "=" * len(report["title"]), "", report["intro"], ""]
    for group in report["organisations"]:
        lines.append(f"{cols['organisation']}: {group['organisation']}")
        for row in group["accesses"]:
            categories = ", ".join(row["categories"]) or "-"
            lines.append(
                f"  {row['at']}  {cols['role']}: {row['role']}  {cols['action']}: "
                f"{row['action']}  {cols['categories']}: {categories}  "
                f"{cols['purpose']}: {row['purpose']}"
            )
        lines.append("")
    lines.append(report["footer"])
    return "\n".join(lines) + "\n"
