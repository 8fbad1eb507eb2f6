"""What the purge removes besides the sealed fields, and the expiry of request fingerprints
(on the suite's migrated database: SQLite, or PostgreSQL in CI)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine
from sqlmodel import Session, select

from services import unlinking
from services.crypto import FileKeyRing, ReferralPayloadKey, ReferralPayloadKeys
from services.models import Consent, IdempotencyRecord, Referral, StepAnswer
from tests.factories import referral_row

NOW = datetime.now(UTC)


def _step(referral_id: uuid.UUID, *, expires_at: datetime) -> StepAnswer:
    return StepAnswer(
        organisation="cgg-antwerpen",
        key=f"k-{uuid.uuid4()}",
        fingerprint="f" * 64,
        referral_id=referral_id,
        action="accept",
        status_code=200,
        created_at=expires_at - timedelta(days=1),
        expires_at=expires_at,
    )


def _create_record(referral_id: uuid.UUID, *, created_at: datetime) -> IdempotencyRecord:
    return IdempotencyRecord(
        organisation="parket-antwerpen",
        key=f"k-{uuid.uuid4()}",
        request_hash="e" * 64,
        referral_id=referral_id,
        created_at=created_at,
    )


def test_unlink_leaves_nothing_that_links_back(engine: Engine, tmp_path: Path) -> None:
    keys = ReferralPayloadKeys(engine, FileKeyRing.create(tmp_path / "keyring.json"))
    purged, other = referral_row(engine), referral_row(engine)
    with Session(engine) as session:
        for rid in (purged, other):
            keys.create(session=session, referral_id=rid)
            session.add(_step(rid, expires_at=NOW + timedelta(days=1)))
            session.add(_create_record(rid, created_at=NOW))
            session.add(
                Consent(
                    id=uuid.uuid4(),
                    referral_id=rid,
                    status="active",
                    recorded_by="demo-prosecutor-antwerpen",
                    recorded_by_organisation="parket-antwerpen",
                    evidence_hash="hmac-sha256:" + "c" * 64,
                    valid_from=NOW,
                )
            )
        session.commit()
        done = unlinking.unlink(session=session, referral_id=purged, payload_keys=keys)
        session.commit()
    assert done == unlinking.Unlinked(request_fingerprints=2, evidence_fingerprints=1)
    with Session(engine) as session:
        row = session.get(Referral, purged)
        assert row is not None
        assert (row.subject_pseudonym, row.name_pseudonym, row.target_group) == ("", "", "")
        assert row.personal == {}
        for model in (StepAnswer, IdempotencyRecord):
            left = session.exec(select(model).where(model.referral_id == purged)).all()
            assert left == []
        [consent] = session.exec(select(Consent).where(Consent.referral_id == purged)).all()
        assert consent.evidence_hash == ""
        key = session.get(ReferralPayloadKey, purged)
        assert key is not None and key.destroyed_at is not None and key.wrapped_key == b""
        # another referral keeps all of it
        kept = session.get(Referral, other)
        assert kept is not None and kept.subject_pseudonym and kept.target_group
        assert session.exec(select(StepAnswer).where(StepAnswer.referral_id == other)).all()
        [kept_consent] = session.exec(select(Consent).where(Consent.referral_id == other)).all()
        assert kept_consent.evidence_hash
    assert keys.state(purged).destroyed and keys.state(other).key is not None


def test_request_fingerprints_expire(engine: Engine) -> None:
    rid = referral_row(engine)
    ttl = timedelta(hours=24)
    with Session(engine) as session:
        old_step = _step(rid, expires_at=NOW - timedelta(seconds=1))
        new_step = _step(rid, expires_at=NOW + timedelta(hours=1))
        old_create = _create_record(rid, created_at=NOW - ttl - timedelta(seconds=1))
        new_create = _create_record(rid, created_at=NOW - timedelta(hours=1))
        session.add_all([old_step, new_step, old_create, new_create])
        session.commit()
        names = {
            "old step": (StepAnswer, (old_step.organisation, old_step.key)),
            "new step": (StepAnswer, (new_step.organisation, new_step.key)),
            "old create": (IdempotencyRecord, (old_create.organisation, old_create.key)),
            "new create": (IdempotencyRecord, (new_create.organisation, new_create.key)),
        }
        assert unlinking.forget_expired(session=session, now=NOW, ttl=ttl) >= 2
        session.commit()
    with Session(engine) as session:
        left = {name for name, (model, pk) in names.items() if session.get(model, pk)}
    assert left == {"new step", "new create"}
