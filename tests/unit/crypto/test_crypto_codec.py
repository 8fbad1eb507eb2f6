"""The Temporal payload codec: every payload encrypted, several key ids readable."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel
from sqlalchemy.pool import StaticPool
from sqlmodel import Session, SQLModel, create_engine
from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import WorkflowSerializationContext

from services.crypto import (
    DataKeyShredded,
    DecryptionError,
    EncryptionCodec,
    FileKeyRing,
    ReferralPayloadKey,
    ReferralPayloadKeys,
    UnknownKeyVersion,
    data_converter,
)


class ReferralInput(BaseModel):
    referral_id: str
    family_name: str
    national_number: str


VALUES = [
    ReferralInput(referral_id="r-1", family_name="Dubois", national_number="91041712345"),
    {"given_names": "Amélie"},
    "Rue de la Loi 16",
]


async def test_values_round_trip_encrypted(keyring: FileKeyRing) -> None:
    converter = data_converter(keyring)
    payloads = await converter.encode(VALUES)
    assert len(payloads) == len(VALUES)
    for payload in payloads:
        assert payload.metadata["encoding"] == b"binary/encrypted"
        assert payload.metadata["encryption-key-id"] == keyring.current_payload_key_id().encode()
        for secret in (b"Dubois", b"91041712345", "Amélie".encode(), b"Rue de la Loi"):
            assert secret not in payload.data
    decoded = await converter.decode(payloads, [ReferralInput, dict, str])
    assert decoded == VALUES


async def test_the_converter_is_the_pydantic_one_with_the_codec(keyring: FileKeyRing) -> None:
    converter = data_converter(keyring)
    assert isinstance(converter.payload_codec, EncryptionCodec)
    assert converter.payload_converter_class is pydantic_data_converter.payload_converter_class
    assert converter.failure_converter_class is pydantic_data_converter.failure_converter_class


async def test_the_codec_restores_the_exact_payload(keyring: FileKeyRing) -> None:
    codec = EncryptionCodec(keyring)
    original = Payload(metadata={"encoding": b"json/plain", "x": b"y"}, data=b'{"a": 1}')
    [encrypted] = await codec.encode([original])
    assert encrypted.data != original.data
    assert await codec.decode([encrypted]) == [original]


async def test_payloads_of_two_key_ids_decode_after_rotation(keyring: FileKeyRing) -> None:
    codec = EncryptionCodec(keyring)
    before = pydantic_data_converter.payload_converter.to_payloads(["before"])
    after = pydantic_data_converter.payload_converter.to_payloads(["after"])
    [old] = await codec.encode(before)
    keyring.rotate_payload_key()
    [new] = await codec.encode(after)
    assert old.metadata["encryption-key-id"] != new.metadata["encryption-key-id"]
    # A worker started after the rotation reads both.
    restarted = EncryptionCodec(FileKeyRing.load(keyring.path))
    assert await restarted.decode([old, new]) == [before[0], after[0]]


async def test_an_unknown_key_id_fails(keyring: FileKeyRing, tmp_path: Path) -> None:
    [payload] = await EncryptionCodec(keyring).encode([Payload(data=b"x")])
    stranger = EncryptionCodec(FileKeyRing.create(tmp_path / "other.json"))
    with pytest.raises(UnknownKeyVersion):
        await stranger.decode([payload])


async def test_a_tampered_payload_fails(keyring: FileKeyRing) -> None:
    codec = EncryptionCodec(keyring)
    [payload] = await codec.encode([Payload(data=b"secret")])
    tampered = Payload()
    tampered.CopyFrom(payload)
    tampered.data = payload.data[:-1] + bytes([payload.data[-1] ^ 1])
    with pytest.raises(DecryptionError):
        await codec.decode([tampered])


async def test_a_relabelled_key_id_fails(keyring: FileKeyRing) -> None:
    codec = EncryptionCodec(keyring)
    [payload] = await codec.encode([Payload(data=b"secret")])
    other_id = keyring.rotate_payload_key()
    relabelled = Payload()
    relabelled.CopyFrom(payload)
    relabelled.metadata["encryption-key-id"] = other_id.encode()
    with pytest.raises(DecryptionError):
        await codec.decode([relabelled])


async def test_a_missing_key_id_fails(keyring: FileKeyRing) -> None:
    payload = Payload(metadata={"encoding": b"binary/encrypted"}, data=b"x" * 40)
    with pytest.raises(DecryptionError):
        await EncryptionCodec(keyring).decode([payload])


async def test_an_unencrypted_payload_passes_through(keyring: FileKeyRing) -> None:
    plain = Payload(metadata={"encoding": b"json/plain"}, data=b'"x"')
    assert await EncryptionCodec(keyring).decode([plain]) == [plain]


# ---- a key per referral ----------------------------------------------------------------


@pytest.fixture
def referral_keys(keyring: FileKeyRing) -> Iterator[ReferralPayloadKeys]:
    engine = create_engine(
        "sqlite://", connect_args={"check_same_thread": False}, poolclass=StaticPool
    )
    SQLModel.metadata.create_all(engine, tables=[ReferralPayloadKey.__table__])  # type: ignore[attr-defined]
    yield ReferralPayloadKeys(engine, keyring)
    engine.dispose()


def _with_key(referral_keys: ReferralPayloadKeys, referral_id: uuid.UUID) -> None:
    with Session(referral_keys._engine) as session:
        referral_keys.create(session=session, referral_id=referral_id)
        session.commit()


def _destroy(referral_keys: ReferralPayloadKeys, referral_id: uuid.UUID) -> None:
    with Session(referral_keys._engine) as session:
        referral_keys.destroy(session=session, referral_id=referral_id)
        session.commit()


def _in_workflow(codec: EncryptionCodec, workflow_id: str) -> EncryptionCodec:
    return codec.with_context(
        WorkflowSerializationContext(namespace="default", workflow_id=workflow_id)
    )


async def test_a_referrals_payloads_are_sealed_with_its_own_key(
    keyring: FileKeyRing, referral_keys: ReferralPayloadKeys
) -> None:
    referral_id = uuid.uuid4()
    _with_key(referral_keys, referral_id)
    codec = _in_workflow(EncryptionCodec(keyring, referral_keys), f"referral-{referral_id}")
    [sealed] = await codec.encode([Payload(data=b"Dubois")])
    assert sealed.metadata["encryption-key-id"] == f"rk-{referral_id}".encode()
    # decoding needs no context: the payload names its key (the Temporal UI's codec)
    assert await EncryptionCodec(keyring, referral_keys).decode([sealed]) == [
        Payload(data=b"Dubois")
    ]
    # the ring's payload key alone does not open it
    with pytest.raises(DecryptionError):
        await EncryptionCodec(keyring).decode([sealed])


async def test_the_purge_makes_the_history_unreadable(
    keyring: FileKeyRing, referral_keys: ReferralPayloadKeys
) -> None:
    referral_id = uuid.uuid4()
    _with_key(referral_keys, referral_id)
    codec = _in_workflow(EncryptionCodec(keyring, referral_keys), f"referral-{referral_id}")
    [sealed] = await codec.encode([Payload(data=b"Dubois")])
    assert await codec.decode([sealed]) == [Payload(data=b"Dubois")]  # now cached
    _destroy(referral_keys, referral_id)
    for reader in (
        codec,
        EncryptionCodec(keyring, ReferralPayloadKeys(referral_keys._engine, keyring)),
    ):
        with pytest.raises(DataKeyShredded):
            await reader.decode([sealed])
    # what the workflow records after its purge (process facts) is sealed with the ring's key
    [after] = await codec.encode([Payload(data=b"purged")])
    assert after.metadata["encryption-key-id"] == keyring.current_payload_key_id().encode()
    assert await codec.decode([after]) == [Payload(data=b"purged")]


@pytest.mark.parametrize(
    "workflow_id", [None, "referral-not-a-uuid", "nightly-report", "referral-{other}"]
)
async def test_payloads_without_a_referral_key_use_the_rings_key(
    keyring: FileKeyRing, referral_keys: ReferralPayloadKeys, workflow_id: str | None
) -> None:
    codec = EncryptionCodec(keyring, referral_keys)
    if workflow_id is not None:
        # "referral-{other}": a referral with no key of its own (started before keys were)
        codec = _in_workflow(codec, workflow_id.format(other=uuid.uuid4()))
    [sealed] = await codec.encode([Payload(data=b"x")])
    assert sealed.metadata["encryption-key-id"] == keyring.current_payload_key_id().encode()
    assert await codec.decode([sealed]) == [Payload(data=b"x")]


async def test_payloads_sealed_before_referral_keys_still_decode(
    keyring: FileKeyRing, referral_keys: ReferralPayloadKeys
) -> None:
    referral_id = uuid.uuid4()
    [old] = await EncryptionCodec(keyring).encode([Payload(data=b"release 2")])
    _with_key(referral_keys, referral_id)
    codec = _in_workflow(EncryptionCodec(keyring, referral_keys), f"referral-{referral_id}")
    assert await codec.decode([old]) == [Payload(data=b"release 2")]


async def test_a_payload_relabelled_to_another_referral_fails(
    keyring: FileKeyRing, referral_keys: ReferralPayloadKeys
) -> None:
    first, second = uuid.uuid4(), uuid.uuid4()
    _with_key(referral_keys, first)
    _with_key(referral_keys, second)
    codec = _in_workflow(EncryptionCodec(keyring, referral_keys), f"referral-{first}")
    [sealed] = await codec.encode([Payload(data=b"x")])
    relabelled = Payload()
    relabelled.CopyFrom(sealed)
    relabelled.metadata["encryption-key-id"] = f"rk-{second}".encode()
    with pytest.raises(DecryptionError):
        await codec.decode([relabelled])
    relabelled.metadata["encryption-key-id"] = b"rk-not-a-uuid"
    with pytest.raises(DecryptionError):
        await codec.decode([relabelled])


async def test_a_referral_key_needs_the_rings_payload_key(
    keyring: FileKeyRing, referral_keys: ReferralPayloadKeys, tmp_path: Path
) -> None:
    referral_id = uuid.uuid4()
    _with_key(referral_keys, referral_id)
    codec = _in_workflow(EncryptionCodec(keyring, referral_keys), f"referral-{referral_id}")
    [sealed] = await codec.encode([Payload(data=b"x")])
    stranger = FileKeyRing.create(tmp_path / "other.json")
    with pytest.raises(DecryptionError):
        await EncryptionCodec(
            stranger, ReferralPayloadKeys(referral_keys._engine, stranger)
        ).decode([sealed])


async def test_a_key_created_after_a_lookup_is_used_at_once(
    keyring: FileKeyRing, referral_keys: ReferralPayloadKeys
) -> None:
    referral_id = uuid.uuid4()
    codec = _in_workflow(EncryptionCodec(keyring, referral_keys), f"referral-{referral_id}")
    [before] = await codec.encode([Payload(data=b"x")])
    assert before.metadata["encryption-key-id"] == keyring.current_payload_key_id().encode()
    _with_key(referral_keys, referral_id)
    [after] = await codec.encode([Payload(data=b"x")])
    assert after.metadata["encryption-key-id"] == f"rk-{referral_id}".encode()
