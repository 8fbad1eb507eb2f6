"""A referral's journey over HTTP, step by step, as each party would take it."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from services.demo import DEMO_FRAMEWORK_ID
from tests.tokens import TokenMinter

OFFICE = ("parket-antwerpen", "prosecutor")
OTHER_OFFICE = ("parquet-bruxelles", "prosecutor")
CGG = ("cgg-antwerpen", "intake_coordinator")
CGG_WORKER = ("cgg-antwerpen", "care_worker")
FREE_CLINIC = ("free-clinic-antwerpen", "intake_coordinator")
CAW = ("caw-brussel", "intake_coordinator")
AUDITOR = ("dpo-office", "auditor")

# Invented personal data: tests look for these values where they must never be.
PERSON = {
    "name": "Zoë Testpersoon-Vandenbroucke",
    "birth_date": "1991-04-17",
    "national_number": "91.04.17-123.45",
}
PHONE = "+32 470 12 34 56"
NOTE = "Referrer note: met during a night patrol"
CLINICAL_NOTE = "Clinical: moderate cannabis use disorder, CBT plan agreed"
WELFARE_NOTE = "Welfare: housing unstable, debt counselling started"


def new_referral(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "framework_id": str(DEMO_FRAMEWORK_ID),
        "district": "antwerpen",
        "language": "nl",
        "identity": dict(PERSON),
        "contact": {"phone": PHONE, "address": "Teststraat 1, 2000 Antwerpen"},
        "judicial_context": {
            "offence_category": "drug_possession",
            "notice_number": "AN.12.L1.000042-26",
            "deadline": "2027-03-01",
        },
        "referral_reason": {
            "target_group": "substance_use",
            "substance_or_behaviour": "cannabis",
            "note": NOTE,
        },
    }
    body.update(overrides)
    return body


def consent_body(*, reporting: bool = True, **overrides: Any) -> dict[str, Any]:
    purposes = ["referral_to_care", "care_team_sharing"]
    if reporting:
        purposes.append("progress_reporting_to_justice")
    body: dict[str, Any] = {
        "purposes": purposes,
        "categories": [
            "identity",
            "contact",
            "judicial_context",
            "referral_reason",
            "clinical",
            "welfare",
            "compliance",
        ],
        "recipients": ["health", "welfare", "parket-antwerpen"],
        "disclosers": ["parket-antwerpen", "health", "welfare"],
        "right_to_revoke_explained": True,
        "valid_until": (datetime.now(UTC) + timedelta(days=365)).isoformat(),
        "evidence_hash": "sha256:" + "ab" * 32,
        "signed_by": "person",
        "signer_capacity": "self",
        "signed_on": datetime.now(UTC).date().isoformat(),
        "signing_method": "paper_form",
    }
    body.update(overrides)
    return body


class Journey:
    """Drives one referral through the API with the right party's token for each step."""

    def __init__(self, api: httpx.AsyncClient, minter: TokenMinter) -> None:
        self.api = api
        self.minter = minter
        self.id: str | None = None

    def headers(self, party: tuple[str, str]) -> dict[str, str]:
        return self.minter.headers(*party)

    async def call(
        self,
        party: tuple[str, str],
        method: str,
        path: str,
        json: Any = None,
        expect: int = 200,
        **kwargs: Any,
    ) -> dict[str, Any]:
        headers = {**self.headers(party), **kwargs.pop("headers", {})}
        resp = await self.api.request(method, path, json=json, headers=headers, **kwargs)
        assert resp.status_code == expect, (resp.status_code, resp.text)
        return resp.json()  # type: ignore[no-any-return]

    async def create(self, party: tuple[str, str] = OFFICE, **overrides: Any) -> dict[str, Any]:
        view = await self.call(
            party,
            "POST",
            "/api/v1/referrals",
            new_referral(**overrides),
            expect=201,
            headers={"Idempotency-Key": f"it-{uuid.uuid4()}"},
        )
        self.id = view["id"]
        return view

    async def step(
        self, party: tuple[str, str], path: str, body: Any = None, expect: int = 200
    ) -> dict[str, Any]:
        return await self.call(party, "POST", f"/api/v1/referrals/{self.id}/{path}", body, expect)

    async def view(self, party: tuple[str, str] = OFFICE, expect: int = 200) -> dict[str, Any]:
        return await self.call(party, "GET", f"/api/v1/referrals/{self.id}", expect=expect)

    async def wait_stage(self, stage: str, party: tuple[str, str] = OFFICE) -> dict[str, Any]:
        for _ in range(300):
            view = await self.view(party)
            if view["stage"] == stage:
                return view
            await asyncio.sleep(0.05)
        raise AssertionError(f"never reached {stage}: {view}")

    async def to_in_progress(self, *, reporting: bool = True) -> None:
        await self.create()
        await self.step(OFFICE, "consent", consent_body(reporting=reporting))
        await self.wait_stage("offered")
        await self.step(CGG, "accept")
        await self.step(CGG, "intake", {"intake_date": datetime.now(UTC).isoformat()})
