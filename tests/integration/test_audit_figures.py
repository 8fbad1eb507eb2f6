"""The auditor's figures over HTTP (real Temporal, real database): the API counts what the
log holds, the page shows the API's figures, and a bar leads to exactly its entries."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import Engine, func
from sqlmodel import Session, col, select

from services.audit.figures import OFFICE_TIMEZONE, outside_office_hours
from services.audit.models import AuditEntry
from tests.integration.journey import AUDITOR, OFFICE, OTHER_OFFICE, Journey
from tests.integration.web_client import WebUser, main_of
from tests.tokens import TokenMinter

pytestmark = pytest.mark.integration

FIGURES = ("accesses", "denials", "outside_office_hours", "no_active_role")


def _today() -> str:
    return datetime.now(OFFICE_TIMEZONE).date().isoformat()


def _entries_today(engine: Engine) -> list[AuditEntry]:
    day = datetime.now(OFFICE_TIMEZONE).replace(hour=0, minute=0, second=0, microsecond=0)
    since, until = day.astimezone(UTC), (day + timedelta(days=1)).astimezone(UTC)
    with Session(engine) as s:
        return list(
            s.exec(
                select(AuditEntry).where(
                    col(AuditEntry.recorded_at) >= since, col(AuditEntry.recorded_at) < until
                )
            )
        )


def _others_since(engine: Engine, index: int, own: str) -> list[AuditEntry]:
    """Entries after `index` other than the auditor's own `own` accesses (a worker's, say)."""
    with Session(engine) as s:
        after = s.exec(select(AuditEntry).where(col(AuditEntry.index) > index)).all()
    return [e for e in after if not (e.actor_organisation == AUDITOR[0] and e.action == own)]


def _last_index(engine: Engine) -> int:
    with Session(engine) as s:
        return s.exec(select(func.coalesce(func.max(AuditEntry.index), -1))).one()


def _page_totals(html: str) -> dict[str, int]:
    found = re.findall(r'<span class="total" data-figure="(\w+)">(\d+)</span>', html)
    return {figure: int(total) for figure, total in found}


async def test_the_figures_count_the_log_and_the_page_shows_them(
    app: FastAPI, api: httpx.AsyncClient, minter: TokenMinter, engine: Engine
) -> None:
    j = Journey(api, minter)
    await j.create()
    # another office has no role in the case: refused, and counted as a denial
    refused = await api.get(f"/api/v1/referrals/{j.id}", headers=minter.headers(*OTHER_OFFICE))
    assert refused.status_code == 404
    await j.view(OFFICE)

    today = _today()
    params = {"since": today, "until": today}
    # Exact counts need a log nobody else writes to meanwhile (a worker of an earlier test
    # may still be finishing): measure again when someone did.
    for _ in range(10):
        mark = _last_index(engine)
        entries = _entries_today(engine)  # the figures request's own entry comes after
        resp = await api.get(
            "/api/v1/audit/figures", params=params, headers=minter.headers(*AUDITOR)
        )
        assert resp.status_code == 200, resp.text
        found = resp.json()
        if not _others_since(engine, mark, "audit.figures"):
            break
        await asyncio.sleep(0.5)
    else:
        pytest.fail("the log never stood still for a measurement")
    assert found["buckets"] == [today]
    got = {figure: found["figures"][figure]["total"] for figure in FIGURES}
    assert got["accesses"] == len(entries)
    assert got["denials"] == sum(e.decision == "deny" for e in entries) >= 1
    assert got["outside_office_hours"] == sum(outside_office_hours(e.recorded_at) for e in entries)
    by_org = {
        o["organisation"]: o["total"] for o in found["figures"]["accesses"]["by_organisation"]
    }
    assert by_org[OTHER_OFFICE[0]] >= 1
    assert sum(by_org.values()) == got["accesses"]
    # the other office's refused read is an access without a role in the case
    assert got["no_active_role"] >= 1

    # the page, read next, shows the same figures plus the API request's own entry
    with Session(engine) as s:
        own = s.exec(
            select(AuditEntry)
            .where(col(AuditEntry.index) > mark, AuditEntry.action == "audit.figures")
            .order_by(col(AuditEntry.index))
        ).first()
    assert own is not None
    async with WebUser(app, minter, AUDITOR) as auditor:
        mark = _last_index(engine)
        page = await auditor.get(f"/ui/audit/figures?since={today}&until={today}")
        assert page.status_code == 200, main_of(page.text)[:800]
        assert not _others_since(engine, mark, "audit.figures"), "someone else wrote meanwhile"
        html = page.text
        shown = _page_totals(html)
        assert shown == {
            "accesses": got["accesses"] + 1,
            "denials": got["denials"],
            "outside_office_hours": got["outside_office_hours"]
            + int(outside_office_hours(own.recorded_at)),
            "no_active_role": got["no_active_role"],
        }
        assert html.count('<svg class="chart"') == len(FIGURES)
        assert "<script" not in main_of(html) and "style=" not in main_of(html)

        # a bar's drill-down: the denials of the day, over the API and on the page
        drill = await api.get(
            "/api/v1/audit/figures/denials/entries",
            params={**params, "limit": 500},
            headers=minter.headers(*AUDITOR),
        )
        assert drill.status_code == 200, drill.text
        denied = drill.json()["entries"]
        assert len(denied) == got["denials"]
        assert all(e["decision"] == "deny" for e in denied)
        link = f"/ui/audit/figures/denials?since={today}&amp;until={today}"
        assert link in html
        listed = await auditor.get(link.replace("&amp;", "&"))
        assert listed.status_code == 200
        indices = [int(i) for i in re.findall(r'data-index="(\d+)"', listed.text)]
        assert indices == [e["index"] for e in denied][:50]


async def test_only_auditors_see_the_figures(api: httpx.AsyncClient, minter: TokenMinter) -> None:
    resp = await api.get("/api/v1/audit/figures", headers=minter.headers(*OFFICE))
    assert resp.status_code == 403
    assert resp.headers["content-type"].startswith("application/problem+json")
    bad = await api.get(
        "/api/v1/audit/figures",
        params={"since": "2026-12-02", "until": "2026-12-01"},
        headers=minter.headers(*AUDITOR),
    )
    assert bad.status_code == 422
    assert bad.headers["content-type"].startswith("application/problem+json")
    for params in ({"until": "0001-01-03"}, {"since": "9999-12-30", "until": "9999-12-31"}):
        edge = await api.get(
            "/api/v1/audit/figures", params=params, headers=minter.headers(*AUDITOR)
        )
        assert edge.status_code == 422, edge.text
        assert edge.headers["content-type"].startswith("application/problem+json")
