"""The person field of an entry is a tag of the referral under the referral's own payload key:
two referrals of one person carry different tags, the DPO recomputes both while they live and
finds their entries, and once a referral's key is destroyed (the purge) its tag is gone for
good, while the entries, written before or after the change, still verify."""

from __future__ import annotations

import hashlib
import hmac
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from audit_factories import audit_event
from sqlalchemy import Engine, inspect
from sqlmodel import Session, SQLModel

from services import person_report
from services.access import Gatekeeper
from services.audit.log import AuditLog
from services.audit.models import PERSON_PSEUDONYM_PATTERN, AuditEvent, person_tag
from services.crypto import FileKeyRing, ReferralPayloadKey, ReferralPayloadKeys

PAYLOAD_KEY_TABLE = SQLModel.metadata.tables[ReferralPayloadKey.__tablename__]


@pytest.fixture
def ring(tmp_path: Path) -> FileKeyRing:
    return FileKeyRing.create(tmp_path / "keyring.json")


@pytest.fixture
def payload_keys(engine: Engine, ring: FileKeyRing) -> Iterator[ReferralPayloadKeys]:
    # the database may hold the whole schema already (PostgreSQL, after integration tests)
    created = not inspect(engine).has_table(PAYLOAD_KEY_TABLE.name)
    if created:
        PAYLOAD_KEY_TABLE.create(engine)
    yield ReferralPayloadKeys(engine, ring)
    if created:
        PAYLOAD_KEY_TABLE.drop(engine)


def test_a_tag_is_of_one_referral_and_its_key_in_the_entries_form() -> None:
    first, second = uuid.uuid4(), uuid.uuid4()
    key, other_key = b"k" * 32, b"o" * 32
    tag = person_tag(first, key)
    assert re.fullmatch(PERSON_PSEUDONYM_PATTERN, tag)
    assert person_tag(first, key) == tag  # stable within the referral
    assert len({tag, person_tag(second, key), person_tag(first, other_key)}) == 3
    # not the HMAC of the id under the key itself: derived (HKDF) for this use alone
    plain = hmac.new(key, b"audit-person:" + first.bytes, hashlib.sha256).hexdigest()[:32]
    assert tag != "pp_" + plain
    assert AuditEvent.model_validate({**audit_event(0).model_dump(), "person_pseudonym": tag})
    with pytest.raises(ValueError):
        person_tag(first, b"short")


def test_two_referrals_of_one_person_get_two_tags_both_found_while_they_live(
    engine: Engine,
    make_log: Callable[..., AuditLog],
    payload_keys: ReferralPayloadKeys,
    ring: FileKeyRing,
) -> None:
    log = make_log()
    gatekeeper = Gatekeeper(
        audit=log, pseudonym_key=b"p" * 32, engine=engine, payload_keys=payload_keys
    )
    first, second, stranger = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    with Session(engine) as session:
        for referral_id in (first, second, stranger):
            payload_keys.create(session=session, referral_id=referral_id)
        session.commit()
    tags = {r: gatekeeper.person_tag(r) for r in (first, second, stranger)}
    assert None not in tags.values() and len(set(tags.values())) == 3
    # an entry written before the change: its person field a hash of the subject pseudonym
    legacy = "pp_" + hashlib.sha256(b"legacy").hexdigest()[:32]
    log.append(
        [
            audit_event(0, person_pseudonym=legacy),
            *(
                audit_event(n, referral_pseudonym=gatekeeper.pseudonym(r), person_pseudonym=tags[r])
                for n, r in enumerate((first, second, stranger), start=1)
            ),
            audit_event(4, referral_pseudonym=None),  # e.g. a login: no referral, no person
        ]
    )

    def found(referrals: list[uuid.UUID]) -> list[str | None]:
        """The DPO's search by the tags it can recompute for the person's referrals."""
        with Session(engine) as session:
            recomputed = [gatekeeper.person_tag(r, session) for r in referrals]
            entries = person_report.entries_of_person(
                session=session, person_tags=[t for t in recomputed if t], referral_pseudonyms=[]
            )
        return [e.person_pseudonym for e in entries]

    assert found([first, second]) == [tags[first], tags[second]]
    # the purge destroys the second referral's key: its tag can never be recomputed
    with Session(engine) as session:
        payload_keys.destroy(session=session, referral_id=second)
        session.commit()
    assert gatekeeper.person_tag(second) is None
    assert ReferralPayloadKeys(engine, ring).state(second).destroyed  # a fresh store too
    assert found([first, second]) == [tags[first]]
    # nothing was rewritten: every entry, the one from before the change too, verifies
    log.sign_tree_head()
    assert log.verify().ok
