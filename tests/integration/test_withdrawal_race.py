"""A progress report racing a consent withdrawal never reaches justice after the withdrawal.

Both HTTP calls are sent at once (asyncio.gather) on fresh referrals that are in
progress with reporting consent. Whichever the workflow serialises first, the channel
to justice (`justice_message`) holds no compliance fact dated after the consent's
`withdrawn_at`, and the office's view after the withdrawal shows no `attending` fact
dated after it.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime

import httpx
from sqlalchemy import Engine
from sqlmodel import Session, col, select

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

ROUNDS = 10


def _withdrawn_at(engine: Engine, referral_id: uuid.UUID) -> datetime:
    with Session(engine) as session:
        rows = session.exec(
            select(Consent)
            .where(Consent.referral_id == referral_id)
            .where(col(Consent.withdrawn_at).is_not(None))
        ).all()
    assert rows, "the withdrawal was not recorded"
    stamps = [row.withdrawn_at for row in rows if row.withdrawn_at is not None]
    return min(stamps)


def _messages(engine: Engine, referral_id: uuid.UUID) -> list[JusticeMessage]:
    with Session(engine) as session:
        return list(
            session.exec(
                select(JusticeMessage)
                .where(JusticeMessage.referral_id == referral_id)
                .order_by(col(JusticeMessage.created_at))
            ).all()
        )


async def test_progress_racing_a_withdrawal_is_never_disclosed_after_it(
    api: httpx.AsyncClient, minter: TokenMinter, engine: Engine
) -> None:
    # per round: the progress call's status, and whether its fact went first (both happen)
    outcomes: list[tuple[int, bool]] = []
    for round_ in range(ROUNDS):
        j = Journey(api, minter)
        await j.to_in_progress(reporting=True)
        rid = uuid.UUID(str(j.id))
        # who withdraws alternates: the person tells the office, or their care worker
        withdrawer = OFFICE if round_ % 2 == 0 else CGG_WORKER
        progress, withdraw = await asyncio.gather(
            api.post(
                f"/api/v1/referrals/{rid}/progress",
                json={
                    "attendance": "attending",
                    "clinical_note": CLINICAL_NOTE,
                    "welfare_note": WELFARE_NOTE,
                },
                headers=minter.headers(*CGG),
            ),
            api.post(
                f"/api/v1/referrals/{rid}/consent/withdraw", headers=minter.headers(*withdrawer)
            ),
        )
        # 200: the report took effect before the withdrawal; 409: the referral had ended when
        # the report arrived or while it waited for the case's lock
        assert progress.status_code in (200, 409), progress.text
        assert withdraw.status_code == 200, withdraw.text

        office = await j.wait_stage("outcome_reported")
        withdrawn_at = _withdrawn_at(engine, rid)

        messages = _messages(engine, rid)
        late = [
            (m.fact, m.created_at.isoformat())
            for m in messages
            if m.fact not in PROCESS_FACTS and m.created_at > withdrawn_at
        ]
        assert not late, (
            f"round {round_}: compliance facts created after the withdrawal at "
            f"{withdrawn_at.isoformat()}: {late}"
        )
        assert "consent_withdrawn" in {m.fact for m in messages}
        # care notes are kept only when the report took effect before the consent ended
        with Session(engine) as session:
            sealed = set(session.get_one(Referral, rid).personal)
        if progress.status_code == 409:
            assert not sealed & {"clinical.note", "welfare.note"}, (round_, sorted(sealed))
        else:
            assert {"clinical.note", "welfare.note"} <= sealed, (round_, sorted(sealed))
        outcomes.append((progress.status_code, "attending" in {m.fact for m in messages}))

        # the office's own view after the withdrawal: the process fact, nothing dated later
        assert "compliance" not in office["content"]
        shown = list(office.get("process_facts") or [])
        shown += office["content"].get("compliance", {}).get("facts", [])
        assert "consent_withdrawn" in {f["fact"] for f in shown}
        for fact in shown:
            if fact["fact"] == "attending":
                assert datetime.fromisoformat(fact["at"]) <= withdrawn_at, (round_, fact)
        text = repr(office)
        assert CLINICAL_NOTE not in text and WELFARE_NOTE not in text
    # both orders are legitimate; the property holds whichever the workflow serialised first
    assert len(outcomes) == ROUNDS, outcomes
