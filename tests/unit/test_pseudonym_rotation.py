"""Retiring a pseudonym key version only when nothing stored needs it, and the keyed
fingerprints that match under every live version (a database of its own: the count of what
a version still keys is over the whole database)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from services import idempotency, pseudonym_rotation
from services.consent import evidence_fingerprint, evidence_matches
from services.crypto import FileKeyRing, KeyRingError
from services.db import make_engine, migrate, session_scope
from services.demo import load_demo
from services.models import Consent, IdempotencyRecord, Referral, StepAnswer, utcnow
from services.unlinking import UNLINKED
from tests.factories import referral_row

TTL = timedelta(hours=24)
EVIDENCE = "sha256:" + "ab" * 32


@pytest.fixture
def own_engine(tmp_path: Path) -> Iterator[Engine]:
    url = f"sqlite:///{tmp_path / 'rotation.db'}"
    migrate(url)
    engine = make_engine(url)
    with session_scope(engine) as session:
        load_demo(session=session)
    yield engine
    engine.dispose()


def test_a_version_is_retired_only_when_nothing_needs_it(
    own_engine: Engine, tmp_path: Path
) -> None:
    ring = FileKeyRing.create(tmp_path / "keyring.json")
    old = ring.current_pseudonym_key_id()
    rid = referral_row(own_engine)  # pseudonyms made before versions were recorded
    with Session(own_engine) as session:
        session.add(
            IdempotencyRecord(organisation="o", key="k", request_hash="e" * 64, referral_id=rid)
        )
        session.add(
            StepAnswer(
                organisation="o",
                key="s",
                fingerprint="f" * 64,
                referral_id=rid,
                action="accept",
                expires_at=utcnow() + TTL,
            )
        )
        session.add(
            Consent(
                id=uuid.uuid4(),
                referral_id=rid,
                status="active",
                recorded_by="x",
                recorded_by_organisation="parket-antwerpen",
                evidence_hash="hmac-sha256:" + "c" * 64,
                valid_from=utcnow(),
            )
        )
        session.commit()
    new = ring.rotate_pseudonym_key()

    def using() -> pseudonym_rotation.StillUsing:
        with Session(own_engine) as session:
            return pseudonym_rotation.still_using(
                session=session, keyring=ring, key_id=old, request_ttl=TTL
            )

    assert using() == pseudonym_rotation.StillUsing(1, 2, 1)
    with Session(own_engine) as session, pytest.raises(pseudonym_rotation.KeyVersionInUse):
        pseudonym_rotation.retire(session=session, keyring=ring, key_id=old, request_ttl=TTL)
    assert old in dict(ring.pseudonym_keys())
    # what the new version made does not hold the old one
    with Session(own_engine) as session:
        referral = session.get(Referral, rid)
        assert referral is not None
        referral.pseudonym_key_id = new
        session.add(referral)
        session.add(
            IdempotencyRecord(organisation="o", key="k2", request_hash="e" * 64, referral_id=rid)
        )
        session.commit()
    assert using() == pseudonym_rotation.StillUsing(0, 2, 1)
    # fingerprints expire, evidence fingerprints go with the purge
    with Session(own_engine) as session:
        record = session.get(IdempotencyRecord, ("o", "k"))
        step = session.get(StepAnswer, ("o", "s"))
        assert record is not None and step is not None
        record.created_at = utcnow() - TTL - timedelta(seconds=1)
        step.expires_at = utcnow() - timedelta(seconds=1)
        for consent in session.exec(select(Consent)).all():
            consent.evidence_hash = UNLINKED
            session.add(consent)
        session.add_all([record, step])
        session.commit()
    assert using() == pseudonym_rotation.StillUsing(0, 0, 0)
    with Session(own_engine) as session:
        with pytest.raises(KeyRingError, match="current"):
            pseudonym_rotation.retire(session=session, keyring=ring, key_id=new, request_ttl=TTL)
        pseudonym_rotation.retire(session=session, keyring=ring, key_id=old, request_ttl=TTL)
    assert [k for k, _ in FileKeyRing.load(ring.path).pseudonym_keys()] == [new]


def test_an_evidence_fingerprint_matches_under_every_live_version(tmp_path: Path) -> None:
    ring = FileKeyRing.create(tmp_path / "keyring.json")
    rid = uuid.uuid4()
    stored = evidence_fingerprint(ring.pseudonym_key(), referral_id=rid, evidence_hash=EVIDENCE)
    old = ring.current_pseudonym_key_id()
    ring.rotate_pseudonym_key()
    keys = [key for _, key in ring.pseudonym_keys()]
    assert evidence_matches(keys, referral_id=rid, evidence_hash=EVIDENCE, stored=stored)
    other = "sha256:" + "cd" * 32
    assert not evidence_matches(keys, referral_id=rid, evidence_hash=other, stored=stored)
    assert not evidence_matches(keys, referral_id=rid, evidence_hash=EVIDENCE, stored=UNLINKED)
    ring.retire_pseudonym_key(old)
    keys = [key for _, key in ring.pseudonym_keys()]
    assert not evidence_matches(keys, referral_id=rid, evidence_hash=EVIDENCE, stored=stored)


def test_a_step_claimed_before_a_rotation_matches_after_it(own_engine: Engine) -> None:
    rid = referral_row(own_engine)
    body = {"intake_date": "2026-01-01"}
    old_key, new_key = b"o" * 32, b"n" * 32
    first = idempotency.fingerprint(old_key, purpose=f"intake:{rid}", body=body)
    with Session(own_engine) as session:
        claimed = idempotency.claim(
            session=session,
            organisation="o",
            key="k",
            fingerprints=[first],
            referral_id=rid,
            action="intake",
            ttl_seconds=3600,
        )
        assert claimed == idempotency.Claim(replay_status=None)
        idempotency.answered(session=session, organisation="o", key="k", status_code=200)
        session.commit()
    after = [
        idempotency.fingerprint(key, purpose=f"intake:{rid}", body=body)
        for key in (new_key, old_key)
    ]
    with Session(own_engine) as session:
        replay = idempotency.claim(
            session=session,
            organisation="o",
            key="k",
            fingerprints=after,
            referral_id=rid,
            action="intake",
            ttl_seconds=3600,
        )
    # the first answer, and the version the first request used (for its update id)
    assert replay == idempotency.Claim(replay_status=200, matched=1)
