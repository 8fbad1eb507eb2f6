"""The retention clocks' shredding (services/retention.py) on the real database, vault and
audit log: a shredder that leaves the data key fails the purge and changes nothing, and a
retried shredding writes no second audit entry."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from services import retention
from services.db import session_scope
from services.lifecycle import DataHolding
from services.models import Referral
from services.runtime import Runtime
from tests import factories as f
from tests.workflows.test_referral_workflow import PERSON, shredding_entries


class ShredsNothing:
    """A shredder that forgets to destroy the key."""

    def __init__(self, runtime: Runtime) -> None:
        self._vault = runtime.vault

    def shred(self, *, session: Session, referral_id: uuid.UUID) -> None:
        return None

    def is_shredded(self, *, session: Session, referral_id: uuid.UUID) -> bool:
        return self._vault.is_shredded(session=session, referral_id=referral_id)


def sealed_referral(engine: Engine, runtime: Runtime) -> uuid.UUID:
    referral_id = f.referral_row(engine)
    with session_scope(engine) as session:
        row = session.get(Referral, referral_id)
        assert row is not None
        row.personal = runtime.vault.seal_record(
            session=session, referral_id=referral_id, fields=PERSON
        )
        session.add(row)
    return referral_id


def test_a_purge_that_shreds_nothing_fails_and_changes_nothing(
    engine: Engine, runtime: Runtime
) -> None:
    referral_id = sealed_referral(engine, runtime)
    with pytest.raises(retention.ShredFailed):
        retention.purge(
            gatekeeper=runtime.gatekeeper,
            shredder=ShredsNothing(runtime),
            referral_id=referral_id,
        )
    with Session(engine) as s:
        row = s.get(Referral, referral_id)
        assert row is not None and row.purged_at is None and row.office_purged_at is None
        assert set(row.personal) >= {"identity.name", "judicial_context.notice_number"}
    # the care holding's own transaction went through, and only it is in the log
    assert shredding_entries(runtime, referral_id) == [
        ("referral.shred_care_data", ["clinical", "welfare"])
    ]


def test_a_retried_shredding_writes_one_entry(engine: Engine, runtime: Runtime) -> None:
    referral_id = sealed_referral(engine, runtime)
    gatekeeper = runtime.gatekeeper
    assert retention.shred(gatekeeper=gatekeeper, referral_id=referral_id, holding=DataHolding.CARE)
    assert not retention.shred(
        gatekeeper=gatekeeper, referral_id=referral_id, holding=DataHolding.CARE
    )
    assert retention.purge(
        gatekeeper=gatekeeper,
        shredder=runtime.vault,
        referral_id=referral_id,
        holdings=(DataHolding.OFFICE,),
    )
    assert not retention.purge(
        gatekeeper=gatekeeper, shredder=runtime.vault, referral_id=referral_id
    )
    assert shredding_entries(runtime, referral_id) == [
        ("referral.shred_care_data", ["clinical", "welfare"]),
        ("referral.purge", ["identity", "judicial_context", "referral_reason"]),
    ]
    with Session(engine) as s:
        assert runtime.vault.is_shredded(session=s, referral_id=referral_id)
