"""A progress report with care notes against a consent withdrawal, in each of the three
orders they can take, each one made to happen (not left to luck):

- report first: the report is answered before the withdrawal is sent. Its fact and notes
  stay; the withdrawal then ends the referral.
- withdrawal first: the withdrawal is answered before the report is sent. The report is
  refused and stores nothing.
- interleaved: the workflow takes the report, then, before the API stores the report's
  notes (a test gate holds it there), the withdrawal takes effect. The notes must not be
  stored after the consent that allowed them ended: the report is refused (409) for them.

After each: the office gets `consent_withdrawn` exactly once; no compliance fact and no care
note is dated after the withdrawal; the office's view shows no care content.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from services.access import Access
from services.models import Consent, JusticeMessage, Referral
from services.referrals import PROCESS_FACTS
from tests.integration.journey import (
    CGG,
    CGG_WORKER,
    CLINICAL_NOTE,
    OFFICE,
    WELFARE_NOTE,
    Journey,
)
from tests.tokens import TokenMinter

pytestmark = pytest.mark.integration

REPORT = {"attendance": "attending", "clinical_note": CLINICAL_NOTE, "welfare_note": WELFARE_NOTE}
NOTES = {"clinical.note", "welfare.note"}


class NotesGate:
    """Holds the progress step of one referral just before the API stores its notes (after
    the workflow took the report), until released."""

    def __init__(self) -> None:
        self.referral_id: uuid.UUID | None = None
        self.reached = threading.Event()
        self.release = threading.Event()

    def wrap(self, original: Callable[..., Any]) -> Callable[..., Any]:
        def finish_with(access: Access, write: Callable[..., Any]) -> Any:
            if access.action == "referral.report_progress" and access.referral_id == (
                self.referral_id
            ):
                self.reached.set()
                assert self.release.wait(timeout=60), "the gate was never released"
            return original(access, write)

        return finish_with


@pytest.fixture
def notes_gate(monkeypatch: pytest.MonkeyPatch) -> Iterator[NotesGate]:
    gate = NotesGate()
    monkeypatch.setattr(Access, "finish_with", gate.wrap(Access.finish_with))
    yield gate
    gate.release.set()


def _withdrawn_at(engine: Engine, referral_id: uuid.UUID) -> datetime | None:
    with Session(engine) as session:
        stamps = session.exec(
            select(Consent.withdrawn_at)
            .where(Consent.referral_id == referral_id)
            .where(col(Consent.withdrawn_at).is_not(None))
        ).all()
    return min(stamps) if stamps else None


def _facts(engine: Engine, referral_id: uuid.UUID) -> list[JusticeMessage]:
    with Session(engine) as session:
        return list(
            session.exec(
                select(JusticeMessage)
                .where(JusticeMessage.referral_id == referral_id)
                .order_by(col(JusticeMessage.created_at))
            ).all()
        )


def _notes(engine: Engine, referral_id: uuid.UUID) -> set[str]:
    with Session(engine) as session:
        return set(session.get_one(Referral, referral_id).personal) & NOTES


async def _until(check: Callable[[], bool], what: str) -> None:
    for _ in range(600):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never: {what}")


def _post(
    api: httpx.AsyncClient, minter: TokenMinter, party: tuple[str, str], path: str, body: Any
) -> Any:
    return api.post(path, json=body, headers=minter.headers(*party))


@pytest.mark.parametrize("order", ["report-first", "withdrawal-first", "interleaved"])
@pytest.mark.parametrize("withdrawer", [OFFICE, CGG_WORKER], ids=["office", "care-worker"])
async def test_progress_against_a_withdrawal_in_every_order(
    order: str,
    withdrawer: tuple[str, str],
    api: httpx.AsyncClient,
    minter: TokenMinter,
    engine: Engine,
    notes_gate: NotesGate,
) -> None:
    j = Journey(api, minter)
    await j.to_in_progress(reporting=True)
    rid = uuid.UUID(str(j.id))
    progress_url = f"/api/v1/referrals/{rid}/progress"
    withdraw_url = f"/api/v1/referrals/{rid}/consent/withdraw"

    if order == "report-first":
        progress = await _post(api, minter, CGG, progress_url, REPORT)
        withdraw = await _post(api, minter, withdrawer, withdraw_url, None)
    elif order == "withdrawal-first":
        withdraw = await _post(api, minter, withdrawer, withdraw_url, None)
        progress = await _post(api, minter, CGG, progress_url, REPORT)
    else:
        notes_gate.referral_id = rid
        report = asyncio.create_task(_post(api, minter, CGG, progress_url, REPORT))
        # the workflow took the report (its fact is on the channel); the notes wait
        await _until(notes_gate.reached.is_set, "the report reached the notes")
        assert "attending" in [m.fact for m in _facts(engine, rid)]
        withdrawal = asyncio.create_task(_post(api, minter, withdrawer, withdraw_url, None))
        await _until(lambda: _withdrawn_at(engine, rid) is not None, "the withdrawal took effect")
        notes_gate.release.set()
        progress, withdraw = await report, await withdrawal

    assert withdraw.status_code == 200, withdraw.text
    expected = 200 if order == "report-first" else 409
    assert progress.status_code == expected, progress.text
    await j.wait_stage("outcome_reported")
    withdrawn_at = _withdrawn_at(engine, rid)
    assert withdrawn_at is not None

    facts = _facts(engine, rid)
    assert [m.fact for m in facts].count("consent_withdrawn") == 1
    late = [m.fact for m in facts if m.fact not in PROCESS_FACTS and m.created_at > withdrawn_at]
    assert not late, late
    notes = _notes(engine, rid)
    if order == "report-first":
        assert notes == NOTES
    else:
        assert not notes, f"{order}: care notes stored after the withdrawal: {sorted(notes)}"
    # the office's view: the process fact, never care content
    office = await j.view(OFFICE)
    text = repr(office)
    assert CLINICAL_NOTE not in text and WELFARE_NOTE not in text
    assert "consent_withdrawn" in {f["fact"] for f in office.get("process_facts") or []}
