"""What a care team may do does not hang on what justice may see (issue 15, item 4).

A consent that leaves out the `compliance` category keeps the progress of care from
justice; it must not keep the care team from the case it runs. Through the HTTP API and
the role UI on the real Temporal dev server and database:

- the care team (intake coordinator, care workers) reads the exact stage, status and next
  report due, in the detail view and in its list, and its page offers the trajectory's
  forms (intake, progress, close);
- the referring office still reads only the coarse stage (`referred_to_care`) and no
  status, outcome or report due, and a step refused to it names no stage.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import httpx
import pytest
from fastapi import FastAPI

from tests.integration.journey import CGG, CGG_WORKER, OFFICE, Journey, consent_body
from tests.integration.web_client import WebUser
from tests.tokens import TokenMinter

pytestmark = pytest.mark.integration

WITHOUT_COMPLIANCE = [
    "identity",
    "contact",
    "judicial_context",
    "referral_reason",
    "clinical",
    "welfare",
]
STAGE_FIELDS = ("status", "business_status", "outcome", "next_progress_report_due")


async def _listed(j: Journey, party: tuple[str, str]) -> dict[str, object]:
    page = await j.call(party, "GET", "/api/v1/referrals?limit=100")
    rows = [row for row in page["items"] if row["id"] == j.id]
    assert len(rows) == 1, page
    return rows[0]  # type: ignore[no-any-return]


async def test_the_care_team_follows_its_case_without_the_compliance_category(
    app: FastAPI, api: httpx.AsyncClient, minter: TokenMinter
) -> None:
    j = Journey(api, minter)
    await j.create()
    await j.step(OFFICE, "consent", consent_body(categories=WITHOUT_COMPLIANCE))
    await j.wait_stage("offered")
    await j.step(CGG, "accept")

    # accepted: the care team sees it so, in the view and in its list; its page offers intake
    for party in (CGG, CGG_WORKER):
        view = await j.view(party)
        assert view["stage"] == "accepted", (party, view["stage"])
        assert view["status"] is not None and view["business_status"] is not None
        assert "compliance" not in view["content"]  # the category itself stays withheld
        row = await _listed(j, party)
        assert row["stage"] == "accepted" and row["updated_at"] == view["updated_at"]
    async with WebUser(app, minter, CGG_WORKER) as worker:
        html = await worker.page(f"/ui/referrals/{j.id}")
        assert f'action="/ui/referrals/{j.id}/intake"' in html
        assert (
            await worker.submit(
                f"/ui/referrals/{j.id}/intake",
                {"intake_date": datetime.now(UTC).date().isoformat()},
            )
            == f"/ui/referrals/{j.id}?done=intake"
        )
        html = await worker.page(f"/ui/referrals/{j.id}")
        assert "stage-in_progress" in html
        for step in ("progress", "close"):
            assert f'action="/ui/referrals/{j.id}/{step}"' in html, step
        care = await worker.page("/ui/care")
        active = care.split('id="ended-h"', 1)[0]
        assert f"/ui/referrals/{j.id}" in active

    view = await j.view(CGG_WORKER)
    assert view["stage"] == "in_progress" and view["next_progress_report_due"] is not None

    # justice: the coarse stage only, nothing of how care goes
    office = await j.view(OFFICE)
    assert office["stage"] == "referred_to_care"
    for name in STAGE_FIELDS:
        assert office.get(name) is None, name
    row = await _listed(j, OFFICE)
    assert row["stage"] == "referred_to_care" and row["next_progress_report_due"] is None
    refused = await j.step(OFFICE, "rematch", expect=409)  # rematch needs on_hold
    assert "in_progress" not in str(refused) and "stage" not in refused["detail"]

    # the care team closes the case it runs
    await j.step(CGG_WORKER, "progress", {"attendance": "attending"})
    await j.step(CGG_WORKER, "close", {"outcome": "completed"})
    for _ in range(100):
        if (await j.view(CGG))["stage"] == "outcome_reported":
            break
        await asyncio.sleep(0.05)
    assert (await j.view(CGG))["stage"] == "outcome_reported"
