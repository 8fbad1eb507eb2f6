"""Refusals, list rows, timestamps and the channel to justice say no more than the case view.

Each party of a referral sees the case through the Cedar disclosure decisions of its
detail view (`GET /referrals/{id}`). These tests hold the other ways out to the same line:

- the list (`GET /referrals`): for every caller role (the office's prosecutor and justice
  assistant, the offered provider's intake coordinator, the accepted provider's care
  worker, another provider, an auditor, an administrator), every consent shape (full;
  reporting to justice without the `compliance` category; no reporting purpose) and every
  stage a referral passes, each field of the list row equals the same field of the view;
- refusals: a caller who may not see the stage (the view says `referred_to_care`) gets the
  same status and problem text for every step, whether care has started or not;
- timestamps: what the office sees does not move when only hidden things change (intake,
  progress reports, care notes);
- the channel: Cedar decides each fact at send time with the consent's purposes *and*
  categories, each decision is audited, and the process facts always go.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from api.web.i18n import Translator
from api.web.labels import REFUSALS
from services.audit.models import AuditEntry
from services.errors import StepRefused
from services.models import JusticeMessage, Referral, StatusHistory
from services.runtime import Runtime
from tests.integration.journey import (
    AUDITOR,
    CGG,
    CGG_WORKER,
    CLINICAL_NOTE,
    FREE_CLINIC,
    OFFICE,
    WELFARE_NOTE,
    Journey,
    consent_body,
)
from tests.integration.web_client import WebUser, main_of
from tests.tokens import TokenMinter

UI_WORDS = Translator("en")  # the language of WebUser's pages

Party = tuple[str, str]
JUSTICE_ASSISTANT = ("parket-antwerpen", "justice_assistant")
ADMIN = ("parket-antwerpen", "admin")
CALLERS = [OFFICE, JUSTICE_ASSISTANT, CGG, CGG_WORKER, FREE_CLINIC, AUDITOR, ADMIN]
ALL_CATEGORIES = consent_body()["categories"]
WITHOUT_COMPLIANCE = [c for c in ALL_CATEGORIES if c != "compliance"]
CONSENT_SHAPES = {
    "full": consent_body(),
    "reporting-without-compliance": consent_body(categories=WITHOUT_COMPLIANCE),
    "no-reporting": consent_body(reporting=False),
}
PROGRESS = {"attendance": "attending", "clinical_note": CLINICAL_NOTE, "welfare_note": WELFARE_NOTE}


def now() -> str:
    return datetime.now(UTC).isoformat()


# Every POST step about one referral, with a valid body: what is refused is the step, never
# the request's form.
STEPS: dict[str, Any] = {
    "accept": None,
    "decline": {"reason": "no_capacity"},
    "intake": {"intake_date": "2026-01-05T10:00:00+00:00", "attended": True},
    "progress": PROGRESS,
    "close": {"outcome": "failed", "clinical_note": CLINICAL_NOTE},
    "decision": {"decision": "dismissed"},
    "rematch": None,
    "cancel": None,
}


async def settled(engine: Engine, referral_id: str, stage: str) -> None:
    """Wait until the projection holds `stage` (the exact stage, whoever may see it)."""
    for _ in range(300):
        with Session(engine) as session:
            row = session.get(Referral, uuid.UUID(referral_id))
            if row is not None and row.stage == stage:
                return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never reached {stage}")


async def answers(
    api: httpx.AsyncClient, minter: TokenMinter, party: Party, referral_id: str
) -> tuple[httpx.Response, dict[str, Any] | None]:
    """The caller's detail view, and its list row of the referral (None when not listed)."""
    headers = minter.headers(*party)
    view = await api.get(f"/api/v1/referrals/{referral_id}", headers=headers)
    listed = await api.get("/api/v1/referrals", params={"limit": 100}, headers=headers)
    rows = listed.json()["items"] if listed.status_code == 200 else []
    return view, next((r for r in rows if r["id"] == referral_id), None)


async def assert_list_matches_view(
    api: httpx.AsyncClient, minter: TokenMinter, referral_id: str, where: str
) -> None:
    for party in CALLERS:
        view, row = await answers(api, minter, party, referral_id)
        if view.status_code != 200:
            assert row is None, f"{where} {party}: listed, but the view answers {view.status_code}"
            continue
        body = view.json()
        assert row is not None, f"{where} {party}: the view answers, the list omits the row"
        for key, value in row.items():
            assert key in body, f"{where} {party}: the list has {key}, the view has not"
            assert body[key] == value, f"{where} {party}: {key} list={value!r} view={body[key]!r}"


async def test_list_rows_are_the_detail_view_for_every_caller_stage_and_consent(
    api: httpx.AsyncClient, minter: TokenMinter, engine: Engine
) -> None:
    waiting = Journey(api, minter)
    await waiting.create()
    await assert_list_matches_view(api, minter, str(waiting.id), "awaiting_consent")
    for shape, consent in CONSENT_SHAPES.items():
        j = Journey(api, minter)
        await j.create()
        rid = str(j.id)
        await j.step(OFFICE, "consent", consent)
        await settled(engine, rid, "offered")
        await assert_list_matches_view(api, minter, rid, f"{shape} offered")
        await j.step(CGG, "accept")
        await assert_list_matches_view(api, minter, rid, f"{shape} accepted")
        await j.step(CGG, "intake", {"intake_date": now(), "attended": True})
        await j.step(CGG_WORKER, "progress", PROGRESS)
        await assert_list_matches_view(api, minter, rid, f"{shape} in_progress")
        await j.step(CGG, "close", {"outcome": "failed", "clinical_note": CLINICAL_NOTE})
        await settled(engine, rid, "outcome_reported")
        await assert_list_matches_view(api, minter, rid, f"{shape} outcome_reported")
        await j.step(OFFICE, "decision", {"decision": "dismissed"})
        await assert_list_matches_view(api, minter, rid, f"{shape} closed")
        withdrawn = Journey(api, minter)
        await withdrawn.create()
        await withdrawn.step(OFFICE, "consent", consent)
        await settled(engine, str(withdrawn.id), "offered")
        await withdrawn.step(CGG, "accept")
        await withdrawn.step(CGG_WORKER, "consent/withdraw")
        await settled(engine, str(withdrawn.id), "outcome_reported")
        await assert_list_matches_view(api, minter, str(withdrawn.id), f"{shape} withdrawn")


async def test_the_list_does_not_show_an_outcome_the_view_withholds(
    api: httpx.AsyncClient, minter: TokenMinter, engine: Engine
) -> None:
    """The reported case: reporting purpose, no `compliance` category, a failed trajectory."""
    j = Journey(api, minter)
    await j.create()
    await j.step(OFFICE, "consent", CONSENT_SHAPES["reporting-without-compliance"])
    await settled(engine, str(j.id), "offered")
    await j.step(CGG, "accept")
    await j.step(CGG, "intake", {"intake_date": now(), "attended": True})
    await j.step(CGG, "close", {"outcome": "failed"})
    await settled(engine, str(j.id), "outcome_reported")
    view, row = await answers(api, minter, OFFICE, str(j.id))
    assert row is not None
    assert view.json()["outcome"] is None and row["outcome"] is None, row
    assert "compliance" in {w["category"] for w in view.json()["withheld"]}


# ----------------------------------------------------------------- timestamps ---


async def test_what_justice_sees_does_not_move_when_only_care_moves(
    api: httpx.AsyncClient, minter: TokenMinter, engine: Engine
) -> None:
    for shape in ("reporting-without-compliance", "no-reporting"):
        j = Journey(api, minter)
        await j.create()
        rid = str(j.id)
        await j.step(OFFICE, "consent", CONSENT_SHAPES[shape])
        await settled(engine, rid, "offered")
        await j.step(CGG, "accept")
        before = await answers(api, minter, OFFICE, rid)
        await asyncio.sleep(0.01)  # so that a timestamp that moves, moves visibly
        await j.step(CGG, "intake", {"intake_date": now(), "attended": True})
        await j.step(CGG_WORKER, "progress", PROGRESS)
        await j.step(CGG_WORKER, "progress", {**PROGRESS, "attendance": "not_attending"})
        after = await answers(api, minter, OFFICE, rid)
        assert before[0].json() == after[0].json(), f"{shape}: the office's view moved"
        assert before[1] == after[1], f"{shape}: the office's list row moved"
        # ... and it does move when something the office may see changes
        await j.step(OFFICE, "consent/withdraw")
        await settled(engine, rid, "outcome_reported")
        ended = (await answers(api, minter, OFFICE, rid))[0].json()
        assert ended["updated_at"] > after[0].json()["updated_at"], shape


def _subject(party: tuple[str, str]) -> str:
    """The subject the test tokens of `party` carry (tests/tokens.py)."""
    return f"user-{party[1]}-{party[0]}"


async def test_care_notes_move_updated_at_only_for_those_who_read_them(
    api: httpx.AsyncClient, minter: TokenMinter, engine: Engine
) -> None:
    j = Journey(api, minter)
    await j.to_in_progress(reporting=True)
    # the worker reads care notes only once assigned to the case (need to know)
    await j.call(
        CGG, "POST", f"/api/v1/referrals/{j.id}/care-team", {"subject": _subject(CGG_WORKER)}
    )
    await j.step(CGG_WORKER, "progress", PROGRESS)
    office = (await answers(api, minter, OFFICE, str(j.id)))[0].json()
    worker = (await answers(api, minter, CGG_WORKER, str(j.id)))[0].json()
    with Session(engine) as session:
        last = session.exec(
            select(StatusHistory)
            .where(StatusHistory.referral_id == uuid.UUID(str(j.id)))
            .order_by(col(StatusHistory.version).desc())
        ).first()
    assert last is not None
    # the office (with compliance) sees the progress report, not when the notes were sealed
    assert datetime.fromisoformat(office["updated_at"]) == last.at
    assert datetime.fromisoformat(worker["updated_at"]) > last.at


# ------------------------------------------------------------------- refusals ---


async def twins(
    api: httpx.AsyncClient, minter: TokenMinter, engine: Engine, consent: Any
) -> list[str]:
    """Two referrals the office cannot tell apart without compliance: accepted, in progress."""
    ids = []
    for started in (False, True):
        j = Journey(api, minter)
        await j.create()
        await j.step(OFFICE, "consent", consent)
        await settled(engine, str(j.id), "offered")
        await j.step(CGG, "accept")
        if started:
            await j.step(CGG, "intake", {"intake_date": now(), "attended": True})
        ids.append(str(j.id))
    return ids


def problem(resp: httpx.Response) -> tuple[int, Any, Any, Any]:
    """Status and problem text (a success compares by status: its view differs by id)."""
    body = resp.json() if resp.status_code >= 400 else {}
    return resp.status_code, body.get("title"), body.get("detail"), body.get("type")


async def test_a_refusal_tells_the_office_nothing_of_a_stage_it_may_not_see(
    api: httpx.AsyncClient, app: FastAPI, minter: TokenMinter, engine: Engine
) -> None:
    accepted, in_progress = await twins(
        api, minter, engine, CONSENT_SHAPES["reporting-without-compliance"]
    )
    for party in (OFFICE, JUSTICE_ASSISTANT):
        views = [
            (await answers(api, minter, party, rid))[0].json() for rid in (accepted, in_progress)
        ]
        assert views[0]["stage"] == views[1]["stage"] == "referred_to_care"
    # the web UI says the API's words in the user's language, so the same ones here
    async with WebUser(app, minter, OFFICE) as office:
        pages = [
            await office.post(f"/ui/referrals/{rid}/decision", {"decision": "dismissed"})
            for rid in (accepted, in_progress)
        ]
    assert pages[0].status_code == pages[1].status_code == 409
    assert UI_WORDS(REFUSALS[StepRefused.UNSEEN]) in main_of(pages[0].text)
    assert main_of(pages[0].text) == main_of(pages[1].text).replace(in_progress, accepted)
    # cancel last: a step that succeeds ends both twins
    for party in (JUSTICE_ASSISTANT, OFFICE):
        for step, body in STEPS.items():
            got = [
                await api.post(
                    f"/api/v1/referrals/{rid}/{step}", json=body, headers=minter.headers(*party)
                )
                for rid in (accepted, in_progress)
            ]
            assert problem(got[0]) == problem(got[1]), (party, step, got[0].text, got[1].text)
            if got[0].status_code == 409:
                assert got[0].json()["detail"] == StepRefused.UNSEEN, (party, step)
                assert "stage" not in got[0].text


async def test_a_refusal_names_the_stage_to_whom_may_see_it(
    api: httpx.AsyncClient, minter: TokenMinter, engine: Engine
) -> None:
    """Not vacuous: with the compliance category the office reads why, and so does the care
    team of a consent that names compliance."""
    accepted, _ = await twins(api, minter, engine, CONSENT_SHAPES["full"])
    resp = await api.post(
        f"/api/v1/referrals/{accepted}/decision",
        json={"decision": "dismissed"},
        headers=minter.headers(*OFFICE),
    )
    assert resp.status_code == 409, resp.text
    assert "accepted" in resp.json()["detail"], resp.text
    assert resp.json()["title"] == "Step refused"
    resp = await api.post(
        f"/api/v1/referrals/{accepted}/progress", json=PROGRESS, headers=minter.headers(*CGG)
    )
    assert resp.status_code == 409 and "accepted" in resp.json()["detail"], resp.text


# -------------------------------------------------------------------- channel ---


def facts(engine: Engine, referral_id: str) -> list[str]:
    with Session(engine) as session:
        rows = session.exec(
            select(JusticeMessage)
            .where(JusticeMessage.referral_id == uuid.UUID(referral_id))
            .order_by(col(JusticeMessage.created_at))
        ).all()
    return [row.fact for row in rows]


def channel_audit(
    engine: Engine, runtime: Runtime, referral_id: str, *, received: bool = False
) -> list[tuple[str, str, str | None, str | None]]:
    """One entry per message the channel sent or held back: (event, action, decision,
    outcome); `received`: the office's receipts instead (the first reading of messages)."""
    pseudonym = runtime.gatekeeper.pseudonym(uuid.UUID(referral_id))
    action = "justice_channel.receive." if received else "justice_channel.send"
    with Session(engine) as session:
        rows = session.exec(
            select(AuditEntry)
            .where(AuditEntry.referral_pseudonym == pseudonym)
            .where(col(AuditEntry.action).startswith(action))
            .order_by(col(AuditEntry.index))
        ).all()
    return [(row.event_type, row.action, row.decision, row.outcome) for row in rows]


async def lived(j: Journey, engine: Engine, consent: Any, outcome: str) -> str:
    await j.create()
    await j.step(OFFICE, "consent", consent)
    await settled(engine, str(j.id), "offered")
    await j.step(CGG, "accept")
    await j.step(CGG, "intake", {"intake_date": now(), "attended": True})
    await j.step(CGG_WORKER, "progress", PROGRESS)
    await j.step(CGG, "close", {"outcome": outcome})
    await settled(engine, str(j.id), "outcome_reported")
    return str(j.id)


async def test_the_channel_asks_cedar_with_the_consents_categories(
    api: httpx.AsyncClient, minter: TokenMinter, engine: Engine, runtime: Runtime
) -> None:
    full = await lived(Journey(api, minter), engine, CONSENT_SHAPES["full"], "completed")
    assert facts(engine, full) == ["registered", "started", "attending", "completed"]
    audit = channel_audit(engine, runtime, full)
    assert audit == [("disclosure_source", "justice_channel.send", "permit", "success")] * 4

    narrow = await lived(
        Journey(api, minter), engine, CONSENT_SHAPES["reporting-without-compliance"], "failed"
    )
    # no progress fact, and of the outcome only that the referral ended
    assert facts(engine, narrow) == ["ended_without_reporting_consent"]
    audit = channel_audit(engine, runtime, narrow)
    held = ("disclosure_source", "justice_channel.send", "deny", "refused")
    # registered, started, attending held back; the outcome replaced by the process fact
    assert audit == [held] * 3 + [("disclosure_source", "justice_channel.send", "deny", "success")]


async def test_process_facts_always_reach_the_office(
    api: httpx.AsyncClient, minter: TokenMinter, engine: Engine, runtime: Runtime
) -> None:
    j = Journey(api, minter)
    await j.create()
    await j.step(OFFICE, "consent", CONSENT_SHAPES["reporting-without-compliance"])
    await settled(engine, str(j.id), "offered")
    await j.step(CGG, "accept")
    await j.step(OFFICE, "consent/withdraw")
    await settled(engine, str(j.id), "outcome_reported")
    assert facts(engine, str(j.id)) == ["consent_withdrawn"]
    # a process fact needs no decision; its message is audited at the source
    assert channel_audit(engine, runtime, str(j.id)) == [
        ("disclosure_source", "justice_channel.send", "deny", "refused"),  # registered, at accept
        ("disclosure_source", "justice_channel.send", None, "success"),
    ]
    view = await j.view(OFFICE)
    assert [f["fact"] for f in view["process_facts"]] == ["consent_withdrawn"]
    # ... and at the recipient, once, when the office first reads it (no category: no care)
    assert channel_audit(engine, runtime, str(j.id), received=True) == [
        ("disclosure_recipient", "justice_channel.receive.1", "permit", "success")
    ]
