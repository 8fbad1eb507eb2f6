"""The person's access report on request (GDPR art. 15), produced by the data-protection
officer: every access to the person's data across all their referrals, and what went to
justice, as a PDF letter in Dutch, French, German or English.

The person is found by their national number, which is never stored: its keyed pseudonym
(`Pseudonymizer.national_number`, under every live pseudonym key version) names their living
referrals, and each referral's audit pseudonym and person tag
(`services.audit.models.person_tag`) name the entries. A purged referral no longer leads to
the person: its subject pseudonym and the key of its tag are gone, so its entries, which
outlive it, are no longer found (nor by anyone else).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from babel.dates import format_date, format_datetime
from fpdf import FPDF
from sqlalchemy import or_
from sqlmodel import Session, col, select

from services.audit.models import AuditEntry
from services.models import Organisation, Referral
from services.subject_report import LANGUAGES, translate

if TYPE_CHECKING:
    from services.access import Gatekeeper
    from services.crypto import Pseudonymizer

# What the person is shown: accesses to their data that took place (refused and failed ones
# disclosed nothing), not the authorisation decisions or logins behind them.
_SHOWN = {
    "create",
    "read",
    "update",
    "delete",
    "export",
    "disclosure_source",
    "disclosure_recipient",
}
CHANNEL_SEND = "justice_channel.send"


@dataclass(frozen=True)
class AccessLine:
    at: str
    organisation: str
    role: str
    action: str
    categories: tuple[str, ...]
    purpose: str


@dataclass(frozen=True)
class JusticeLine:
    at: str
    office: str
    what: str


@dataclass
class PersonReport:
    """The letter's content, labelled in one language."""

    language: str
    title: str
    date: str
    salutation: str
    intro: str
    referrals: list[tuple[str, list[AccessLine]]] = field(default_factory=list)
    justice_title: str = ""
    justice: list[JusticeLine] = field(default_factory=list)
    justice_none: str = ""
    nothing: str = ""
    footer: str = ""
    closing: str = ""
    signature: str = ""
    labels: dict[str, str] = field(default_factory=dict)


def entries_of_person(
    *, session: Session, person_tags: Sequence[str], referral_pseudonyms: Sequence[str]
) -> list[AuditEntry]:
    """Every entry naming the person by the tag of one of their referrals, or naming one of
    their referrals (entries written before they named the person), in log order."""
    if not person_tags and not referral_pseudonyms:
        return []
    condition = or_(
        col(AuditEntry.person_pseudonym).in_(person_tags),
        col(AuditEntry.referral_pseudonym).in_(referral_pseudonyms),
    )
    return list(session.exec(select(AuditEntry).where(condition).order_by(col(AuditEntry.index))))


def referral_ids_of(*, session: Session, subject_pseudonyms: Sequence[str]) -> list[uuid.UUID]:
    """The referrals of the person with these subject pseudonyms (one per live pseudonym key
    version: a rotation may not have re-derived them all yet; a purged referral no longer has
    one: it is not found)."""
    return list(
        session.exec(
            select(Referral.id).where(col(Referral.subject_pseudonym).in_(subject_pseudonyms))
        )
    )


def entries_of_national_number(
    *,
    session: Session,
    national_number: str,
    pseudonymizers: Sequence[Pseudonymizer],
    gatekeeper: Gatekeeper,
) -> list[AuditEntry]:
    """Every entry about the person with this national number, looked up under every live
    pseudonym key version (`Runtime.pseudonymizers`), in log order."""
    subjects = [p.national_number(national_number) for p in pseudonymizers]
    referral_ids = referral_ids_of(session=session, subject_pseudonyms=subjects)
    tags = [gatekeeper.person_tag(rid, session) for rid in referral_ids]
    pseudonyms = [gatekeeper.pseudonym(rid) for rid in referral_ids]
    return entries_of_person(
        session=session,
        person_tags=[tag for tag in tags if tag is not None],
        referral_pseudonyms=[p for p in pseudonyms if p is not None],
    )


def build(
    *, session: Session, entries: Sequence[AuditEntry], lang: str, today: datetime
) -> PersonReport:
    """The letter for these entries, labelled in `lang` (nl, fr, de, en)."""
    if lang not in LANGUAGES:
        raise ValueError("unsupported language")

    def t(msgid: str) -> str:
        return translate(lang, msgid)

    names = {o.code: o.name for o in session.exec(select(Organisation)).all()}
    report = PersonReport(
        language=lang,
        title=t("letter.title"),
        date=f"{t('letter.date')}: {format_date(today, format='long', locale=lang)}",
        salutation=t("letter.salutation"),
        intro=t("letter.intro"),
        justice_title=t("letter.justice"),
        justice_none=t("letter.justice_none"),
        nothing=t("letter.none"),
        footer=t("report.footer"),
        closing=t("letter.closing"),
        signature=t("letter.signature"),
        labels={
            "role": t("column.role"),
            "categories": t("column.categories"),
            "purpose": t("column.purpose"),
        },
    )
    by_referral: dict[str, list[AccessLine]] = {}
    for entry in entries:
        if entry.event_type not in _SHOWN or entry.outcome not in (None, "success"):
            continue
        at = format_datetime(entry.recorded_at, format="medium", locale=lang)
        organisation = names.get(entry.actor_organisation, entry.actor_organisation)
        if entry.action == CHANNEL_SEND:
            what = (
                "letter.justice_fact"
                if "compliance" in entry.categories
                else "letter.justice_process"
            )
            report.justice.append(JusticeLine(at=at, office=organisation, what=t(what)))
            continue
        if entry.referral_pseudonym is None:
            continue  # e.g. an earlier report for the person: it concerns no referral
        by_referral.setdefault(entry.referral_pseudonym, []).append(
            AccessLine(
                at=at,
                organisation=organisation,
                role=t(f"role.{entry.actor_role.split(',')[0]}"),
                action=t(f"event.{entry.event_type}"),
                categories=tuple(t(f"category.{c}") for c in entry.categories),
                purpose=t(f"purpose.{entry.purpose_of_use}"),
            )
        )
    # numbered in the order they began; the letter names no referral id or pseudonym
    report.referrals = [
        (f"{t('letter.referral')} {number}", lines)
        for number, lines in enumerate(by_referral.values(), start=1)
    ]
    return report


# The PDF's core fonts are Latin-1: the letter's languages fit, typography is folded.
_FOLD = str.maketrans({"\u202f": " ", "\u00a0": " ", "\u2019": "'", "\u2013": "-", "\u2014": "-"})


def _latin1(text: str) -> str:
    return text.translate(_FOLD).encode("latin-1", "replace").decode("latin-1")


def render_pdf(report: PersonReport) -> bytes:
    """The letter as a PDF (A4, core fonts, no images)."""
    pdf = FPDF(format="A4")
    pdf.set_auto_page_break(auto=True, margin=18)
    pdf.set_title(_latin1(report.title))
    pdf.set_lang(report.language)
    pdf.set_creator("referral-engine")
    pdf.add_page()

    def para(text: str, size: float = 10.5, style: str = "", gap: float = 2) -> None:
        pdf.set_font("Helvetica", style, size)
        pdf.multi_cell(0, size * 0.5, _latin1(text), new_x="LMARGIN", new_y="NEXT")
        pdf.ln(gap)

    para(report.date, gap=6)
    para(report.title, size=15, style="B", gap=5)
    para(report.salutation)
    para(report.intro, gap=5)
    if not report.referrals:
        para(report.nothing)
    labels = report.labels
    for heading, lines in report.referrals:
        para(heading, size=12.5, style="B", gap=1)
        for line in lines:
            categories = ", ".join(line.categories) or "-"
            para(
                f"{line.at} - {line.organisation} ({labels['role']}: {line.role}): "
                f"{line.action}; {labels['categories']}: {categories}; "
                f"{labels['purpose']}: {line.purpose}",
                size=9.5,
                gap=1,
            )
        pdf.ln(3)
    para(report.justice_title, size=12.5, style="B", gap=1)
    if not report.justice:
        para(report.justice_none)
    for sent in report.justice:
        para(f"{sent.at} - {sent.office}: {sent.what}", size=9.5, gap=1)
    pdf.ln(4)
    para(report.footer, gap=6)
    para(report.closing, gap=8)
    para(report.signature, style="B")
    return bytes(pdf.output())
