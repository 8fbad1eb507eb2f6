"""Demo organisations and one demo cooperation framework (clearly marked `demo`)."""

from __future__ import annotations

import uuid

from sqlmodel import Session, select

from services.models import CooperationFramework, FrameworkParticipant, Organisation

DEMO_FRAMEWORK_ID = uuid.UUID("00000000-0000-4000-8000-00000000f001")

ALL_CATEGORIES = [
    "identity",
    "contact",
    "judicial_context",
    "referral_reason",
    "clinical",
    "welfare",
    "compliance",
]

DEMO_ORGANISATIONS: list[dict[str, object]] = [
    {
        "code": "parket-antwerpen",
        "name": "Parket Antwerpen (demo)",
        "sector": "justice",
        "district": "antwerpen",
        "languages": ["nl"],
        "target_groups": [],
    },
    {
        "code": "parquet-bruxelles",
        "name": "Parquet de Bruxelles (demo)",
        "sector": "justice",
        "district": "brussel",
        "languages": ["fr", "nl"],
        "target_groups": [],
    },
    {
        "code": "cgg-antwerpen",
        "name": "CGG Antwerpen, drug care (demo)",
        "sector": "health",
        "district": "antwerpen",
        "languages": ["nl", "fr", "en"],
        "target_groups": ["substance_use", "gambling", "gaming"],
    },
    {
        "code": "free-clinic-antwerpen",
        "name": "Free Clinic Antwerpen (demo)",
        "sector": "health",
        "district": "antwerpen",
        "languages": ["nl", "en"],
        "target_groups": ["substance_use"],
    },
    {
        "code": "caw-brussel",
        "name": "CAW Brussel, welfare (demo)",
        "sector": "welfare",
        "district": "brussel",
        "languages": ["nl", "fr"],
        "target_groups": ["substance_use", "gambling"],
    },
    {
        "code": "dpo-office",
        "name": "Data protection office (demo)",
        "sector": "audit",
        "district": "national",
        "languages": ["nl", "fr", "de", "en"],
        "target_groups": [],
    },
]


def load_demo(*, session: Session) -> None:
    """Insert or refresh the demo organisations and framework (idempotent)."""
    for data in DEMO_ORGANISATIONS:
        org = session.exec(select(Organisation).where(Organisation.code == data["code"])).first()
        if org is None:
            session.add(Organisation(demo=True, **data))  # type: ignore[arg-type]
    session.flush()
    if session.get(CooperationFramework, DEMO_FRAMEWORK_ID) is None:
        session.add(
            CooperationFramework(
                id=DEMO_FRAMEWORK_ID,
                name="Demo: diversion to care at the prosecutor's office (Antwerpen, Brussel)",
                legal_basis_reference=(
                    "DEMO - reasoned authorisation of the prosecutor, Criminal Code art. 458ter"
                ),
                legal_basis_version="demo-2026-1",
                purposes=["referral_to_care", "progress_reporting_to_justice", "care_team_sharing"],
                data_categories={
                    "justice": [
                        "identity",
                        "contact",
                        "judicial_context",
                        "referral_reason",
                        "compliance",
                    ],
                    "health": ALL_CATEGORIES,
                    "welfare": ALL_CATEGORIES,
                },
                reporting_cadence_days=30,
                retention_justice_days=365 * 5,
                retention_care_days=365 * 2,
                demo=True,
            )
        )
        session.flush()
        for data in DEMO_ORGANISATIONS:
            if data["sector"] != "audit":
                session.add(
                    FrameworkParticipant(
                        framework_id=DEMO_FRAMEWORK_ID, organisation_code=str(data["code"])
                    )
                )
