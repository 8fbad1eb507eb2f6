"""The Temporal payload codec: every payload encrypted, several key ids readable."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel
from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import pydantic_data_converter

from services.crypto import (
    DecryptionError,
    EncryptionCodec,
    FileKeyRing,
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
