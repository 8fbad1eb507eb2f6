"""Envelope encryption of personal fields, key rotation and crypto-shredding."""

from __future__ import annotations

import uuid
from datetime import date
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine
from sqlmodel import Session, SQLModel, create_engine, select

from services.crypto import (
    DataKeyShredded,
    DecryptionError,
    FileKeyRing,
    PersonalDataVault,
    ReferralDataKey,
    UnknownKeyVersion,
    WrappedKey,
)
from tests.refcounts import left_for_the_collector

RECORD = {
    "family_name": "Dubois-Lefèvre",
    "given_names": "Amélie Jeanne",
    "birth_date": date(1991, 4, 17).isoformat(),
    "national_number": "91.04.17-123.45",
    "address": "Rue de la Loi 16, 1000 Bruxelles",
    "phone": "+32 470 12 34 56",
    "email": "amelie@example.org",
    "facts_summary": "Possession of a small quantity of cannabis, first offence.",
}


class CountingKeyRing:
    """A key ring that counts unwraps, to see the data-key cache at work."""

    def __init__(self, inner: FileKeyRing) -> None:
        self.inner = inner
        self.unwraps = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def unwrap(self, wrapped: WrappedKey) -> bytes:
        self.unwraps += 1
        return self.inner.unwrap(wrapped)


def _flip_last_char(token: str) -> str:
    last = token[-1]
    return token[:-1] + ("A" if last != "A" else "B")


def test_seal_and_open_round_trip(vault: PersonalDataVault, session: Session) -> None:
    referral = uuid.uuid4()
    token = vault.seal(session=session, referral_id=referral, field="email", value="a@b.org")
    assert token.isascii() and token.startswith("v1.")
    assert "a@b.org" not in token
    assert vault.open(session=session, referral_id=referral, field="email", token=token) == (
        "a@b.org"
    )


def test_sealing_twice_gives_different_tokens(vault: PersonalDataVault, session: Session) -> None:
    referral = uuid.uuid4()
    first = vault.seal(session=session, referral_id=referral, field="phone", value="0470")
    second = vault.seal(session=session, referral_id=referral, field="phone", value="0470")
    assert first != second


def test_one_data_key_per_referral(vault: PersonalDataVault, session: Session) -> None:
    referral = uuid.uuid4()
    vault.seal_record(session=session, referral_id=referral, fields=RECORD)
    vault.seal(session=session, referral_id=referral, field="extra", value="x")
    session.commit()
    rows = session.exec(select(ReferralDataKey)).all()
    assert [row.referral_id for row in rows] == [referral]
    assert rows[0].destroyed_at is None and len(rows[0].wrapped_key) > 32


def test_record_round_trip(vault: PersonalDataVault, session: Session) -> None:
    referral = uuid.uuid4()
    sealed = vault.seal_record(session=session, referral_id=referral, fields=RECORD)
    assert set(sealed) == set(RECORD)
    assert not any(value in "".join(sealed.values()) for value in RECORD.values())
    assert vault.open_record(session=session, referral_id=referral, fields=sealed) == RECORD


def test_a_tampered_token_fails_without_leaking(vault: PersonalDataVault, session: Session) -> None:
    referral = uuid.uuid4()
    token = vault.seal(session=session, referral_id=referral, field="email", value="secret@x.be")
    with pytest.raises(DecryptionError) as caught:
        vault.open(
            session=session, referral_id=referral, field="email", token=_flip_last_char(token)
        )
    assert "secret" not in str(caught.value)


@pytest.mark.parametrize("token", ["", "v1", "v2.AAAA.AAAA", "v1.!!!.AAAA", "v1.AAAA.AAAA"])
def test_a_malformed_token_fails(vault: PersonalDataVault, session: Session, token: str) -> None:
    referral = uuid.uuid4()
    vault.seal(session=session, referral_id=referral, field="email", value="x")
    with pytest.raises(DecryptionError):
        vault.open(session=session, referral_id=referral, field="email", token=token)


def test_a_swapped_field_fails(vault: PersonalDataVault, session: Session) -> None:
    referral = uuid.uuid4()
    sealed = vault.seal_record(session=session, referral_id=referral, fields=RECORD)
    with pytest.raises(DecryptionError):
        vault.open(session=session, referral_id=referral, field="email", token=sealed["phone"])


def test_a_swapped_referral_fails(vault: PersonalDataVault, session: Session) -> None:
    first, second = uuid.uuid4(), uuid.uuid4()
    token = vault.seal(session=session, referral_id=first, field="email", value="x@y.be")
    vault.seal(session=session, referral_id=second, field="email", value="z@y.be")
    with pytest.raises(DecryptionError):
        vault.open(session=session, referral_id=second, field="email", token=token)


def test_a_referral_without_a_key_fails(vault: PersonalDataVault, session: Session) -> None:
    token = vault.seal(session=session, referral_id=uuid.uuid4(), field="email", value="x")
    with pytest.raises(DecryptionError):
        vault.open(session=session, referral_id=uuid.uuid4(), field="email", token=token)


def test_an_unknown_key_version_fails(
    keyring: FileKeyRing, vault: PersonalDataVault, session: Session
) -> None:
    referral = uuid.uuid4()
    token = vault.seal(session=session, referral_id=referral, field="email", value="x")
    row = session.get(ReferralDataKey, referral)
    assert row is not None
    row.kek_version = "kek-99-abcdef"
    session.add(row)
    session.commit()
    with pytest.raises(UnknownKeyVersion):
        PersonalDataVault(keyring).open(
            session=session, referral_id=referral, field="email", token=token
        )


def test_retiring_a_version_without_rewrap_makes_its_keys_unreadable(
    keyring: FileKeyRing, vault: PersonalDataVault, session: Session
) -> None:
    referral = uuid.uuid4()
    token = vault.seal(session=session, referral_id=referral, field="email", value="x")
    old = keyring.current_kek_version()
    keyring.rotate()
    keyring.retire(old)
    with pytest.raises(UnknownKeyVersion):
        PersonalDataVault(keyring).open(
            session=session, referral_id=referral, field="email", token=token
        )


def test_opening_a_record_unwraps_once(keyring: FileKeyRing, session: Session) -> None:
    referral = uuid.uuid4()
    sealed = PersonalDataVault(keyring).seal_record(
        session=session, referral_id=referral, fields=RECORD
    )
    counting = CountingKeyRing(keyring)
    vault = PersonalDataVault(counting)  # type: ignore[arg-type]
    for _ in range(3):
        assert vault.open_record(session=session, referral_id=referral, fields=sealed) == RECORD
        for field, token in sealed.items():
            vault.open(session=session, referral_id=referral, field=field, token=token)
    assert counting.unwraps == 1


def test_the_key_cache_is_bounded_and_brief(keyring: FileKeyRing, session: Session) -> None:
    now = [0.0]
    counting = CountingKeyRing(keyring)
    vault = PersonalDataVault(
        counting,  # type: ignore[arg-type]
        cache_entries=1,
        cache_seconds=10,
        clock=lambda: now[0],
    )
    first, second = uuid.uuid4(), uuid.uuid4()
    token_1 = PersonalDataVault(keyring).seal(
        session=session, referral_id=first, field="f", value="1"
    )
    token_2 = PersonalDataVault(keyring).seal(
        session=session, referral_id=second, field="f", value="2"
    )
    vault.open(session=session, referral_id=first, field="f", token=token_1)
    vault.open(session=session, referral_id=first, field="f", token=token_1)
    assert counting.unwraps == 1
    vault.open(session=session, referral_id=second, field="f", token=token_2)
    vault.open(session=session, referral_id=first, field="f", token=token_1)
    assert counting.unwraps == 3  # one entry only: the second referral evicted the first
    now[0] = 11.0
    vault.open(session=session, referral_id=first, field="f", token=token_1)
    assert counting.unwraps == 4  # expired


def test_rotate_then_rewrap_keeps_everything_readable(
    keyring: FileKeyRing, vault: PersonalDataVault, engine: Engine
) -> None:
    sealed: dict[uuid.UUID, dict[str, str]] = {}
    with Session(engine) as session:
        for _ in range(5):
            referral = uuid.uuid4()
            sealed[referral] = vault.seal_record(
                session=session, referral_id=referral, fields=RECORD
            )
        session.commit()
    old = keyring.current_kek_version()
    new = keyring.rotate()
    with Session(engine) as session:
        latecomer = uuid.uuid4()
        sealed[latecomer] = vault.seal_record(session=session, referral_id=latecomer, fields=RECORD)
        session.commit()
        row = session.get(ReferralDataKey, latecomer)
        assert row is not None and row.kek_version == new
        # The old keys are still readable before the rewrap: rotation needs no downtime.
        assert all(
            PersonalDataVault(keyring).open_record(session=session, referral_id=r, fields=s)
            == RECORD
            for r, s in sealed.items()
        )
    with Session(engine) as session:
        assert vault.rewrap_all(session=session, batch_size=2) == 5
        assert vault.rewrap_all(session=session) == 0
    keyring.retire(old)
    with Session(engine) as session:
        versions = {row.kek_version for row in session.exec(select(ReferralDataKey)).all()}
        assert versions == {new}
        fresh = PersonalDataVault(keyring)
        for referral, fields in sealed.items():
            assert fresh.open_record(session=session, referral_id=referral, fields=fields) == RECORD


def test_shredded_data_can_never_be_read_again(
    keyring: FileKeyRing, vault: PersonalDataVault, engine: Engine
) -> None:
    referral, other = uuid.uuid4(), uuid.uuid4()
    with Session(engine) as session:
        sealed = vault.seal_record(session=session, referral_id=referral, fields=RECORD)
        kept = vault.seal_record(session=session, referral_id=other, fields=RECORD)
        session.commit()
        vault.shred(session=session, referral_id=referral)
        vault.shred(session=session, referral_id=referral)  # idempotent
        session.commit()
        with pytest.raises(DataKeyShredded):
            vault.open_record(session=session, referral_id=referral, fields=sealed)
        with pytest.raises(DataKeyShredded):
            vault.seal(session=session, referral_id=referral, field="email", value="again")
        row = session.get(ReferralDataKey, referral)
        assert row is not None and row.wrapped_key == b"" and row.destroyed_at is not None
    keyring.rotate()
    with Session(engine) as session:
        assert vault.rewrap_all(session=session) == 1
    for instance in (
        vault,
        PersonalDataVault(keyring),
        PersonalDataVault(FileKeyRing.load(keyring.path)),
    ):
        with Session(engine) as session:
            assert instance.is_shredded(session=session, referral_id=referral)
            for field, token in sealed.items():
                with pytest.raises(DataKeyShredded):
                    instance.open(session=session, referral_id=referral, field=field, token=token)
            assert instance.open_record(session=session, referral_id=other, fields=kept) == RECORD


def _sealed_and_opened(vault: PersonalDataVault, session: Session) -> tuple[uuid.UUID, str]:
    """A referral with one sealed field, committed, then opened in the session's next
    transaction (its key now cached, and its key row pinned for that transaction)."""
    referral = uuid.uuid4()
    token = vault.seal(session=session, referral_id=referral, field="email", value="x")
    session.commit()
    assert vault.open(session=session, referral_id=referral, field="email", token=token)
    return referral, token


def test_a_shred_elsewhere_beats_this_vaults_cache(
    keyring: FileKeyRing, vault: PersonalDataVault, engine: Engine
) -> None:
    with Session(engine) as session:
        referral, token = _sealed_and_opened(vault, session)
    with Session(engine) as session:
        PersonalDataVault(keyring).shred(session=session, referral_id=referral)
        session.commit()
    with Session(engine) as session, pytest.raises(DataKeyShredded):
        vault.open(session=session, referral_id=referral, field="email", token=token)


def test_a_shred_in_the_same_transaction_is_refused_at_once(
    vault: PersonalDataVault, engine: Engine
) -> None:
    with Session(engine) as session:
        referral, token = _sealed_and_opened(vault, session)
        vault.shred(session=session, referral_id=referral)
        with pytest.raises(DataKeyShredded):
            vault.open(session=session, referral_id=referral, field="email", token=token)


def test_a_shred_elsewhere_is_refused_from_this_sessions_next_transaction(
    keyring: FileKeyRing, vault: PersonalDataVault, engine: Engine
) -> None:
    with Session(engine) as session:
        referral, token = _sealed_and_opened(vault, session)
        session.commit()  # this session's next transaction starts with its next read
        with Session(engine) as elsewhere:
            PersonalDataVault(keyring).shred(session=elsewhere, referral_id=referral)
            elsewhere.commit()
        with pytest.raises(DataKeyShredded):
            vault.open(session=session, referral_id=referral, field="email", token=token)


def test_shredding_an_unknown_referral_blocks_future_seals(
    vault: PersonalDataVault, session: Session
) -> None:
    referral = uuid.uuid4()
    vault.shred(session=session, referral_id=referral)
    with pytest.raises(DataKeyShredded):
        vault.seal(session=session, referral_id=referral, field="email", value="x")


def test_neither_key_ring_nor_store_holds_plaintext(
    keyring: FileKeyRing, vault: PersonalDataVault, session: Session
) -> None:
    referral = uuid.uuid4()
    vault.seal_record(session=session, referral_id=referral, fields=RECORD)
    session.commit()
    stored = session.exec(select(ReferralDataKey)).one()
    ring_text = keyring.path.read_text()
    for value in RECORD.values():
        assert value not in ring_text
    data_key = keyring.unwrap(WrappedKey(stored.kek_version, stored.wrapped_key))
    assert data_key not in keyring.path.read_bytes()
    assert data_key not in stored.wrapped_key


def test_an_empty_field_name_is_refused(vault: PersonalDataVault, session: Session) -> None:
    with pytest.raises(ValueError):
        vault.seal(session=session, referral_id=uuid.uuid4(), field="", value="x")


@settings(max_examples=150, deadline=None)
@given(value=st.text(), field=st.text(min_size=1))
def test_any_unicode_round_trips(
    shared_store: tuple[PersonalDataVault, Engine], value: str, field: str
) -> None:
    vault, engine = shared_store
    referral = uuid.uuid4()
    with Session(engine) as session:
        token = vault.seal(session=session, referral_id=referral, field=field, value=value)
        session.commit()
    with Session(engine) as session:
        assert vault.open(session=session, referral_id=referral, field=field, token=token) == value


def test_a_rewrap_never_resurrects_a_key_shredded_meanwhile(
    keyring: FileKeyRing, tmp_path: Path
) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'store.db'}")
    SQLModel.metadata.create_all(engine, tables=[ReferralDataKey.__table__])  # type: ignore[attr-defined]
    referral = uuid.uuid4()
    try:
        with Session(engine) as session:
            PersonalDataVault(keyring).ensure_data_key(session=session, referral_id=referral)
            session.commit()
        keyring.rotate()

        class ShredWhileUnwrapping(CountingKeyRing):
            def unwrap(self, wrapped: WrappedKey) -> bytes:
                # Another worker purges the referral between the rewrap's read and write.
                with Session(engine) as other:
                    PersonalDataVault(keyring).shred(session=other, referral_id=referral)
                    other.commit()
                return super().unwrap(wrapped)

        racing = PersonalDataVault(ShredWhileUnwrapping(keyring))  # type: ignore[arg-type]
        with Session(engine) as session:
            assert racing.rewrap_all(session=session) == 0
        with Session(engine) as session:
            row = session.get(ReferralDataKey, referral)
            assert row is not None and row.wrapped_key == b"" and row.destroyed_at is not None
    finally:
        engine.dispose()


def test_a_key_from_a_rolled_back_transaction_is_not_reused(
    keyring: FileKeyRing, vault: PersonalDataVault, engine: Engine
) -> None:
    referral = uuid.uuid4()
    with Session(engine) as session:
        vault.seal(session=session, referral_id=referral, field="email", value="lost")
        session.rollback()
    with Session(engine) as session:
        # Another worker creates the referral's key for real.
        token = PersonalDataVault(keyring).seal(
            session=session, referral_id=referral, field="email", value="kept"
        )
        session.commit()
    with Session(engine) as session:
        assert vault.open(session=session, referral_id=referral, field="email", token=token) == (
            "kept"
        )


def test_a_session_that_opened_a_record_is_freed_by_its_reference_counts(
    vault: PersonalDataVault, engine: Engine
) -> None:
    """The key row pinned in the session holds its transaction weakly (`services.db.pinned_to`):
    no cycle keeps the session, its transaction and its connection for a garbage collection."""
    referral_id = uuid.uuid4()
    with Session(engine) as session:
        sealed = vault.seal_record(session=session, referral_id=referral_id, fields={"a": "b"})
        session.commit()

    def open_it(session: Session) -> None:
        assert vault.open_record(session=session, referral_id=referral_id, fields=sealed) == {
            "a": "b"
        }

    assert left_for_the_collector(engine, open_it) == []
