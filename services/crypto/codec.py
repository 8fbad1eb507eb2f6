"""A Temporal payload codec that encrypts every payload, so the Temporal server and its UI
never see plaintext (after the temporalio samples-python `encryption` sample)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter, PayloadCodec

from services.crypto.errors import DecryptionError
from services.crypto.keyring import NONCE_BYTES, KeyRing

ENCODING = b"binary/encrypted"
KEY_ID_METADATA = "encryption-key-id"
_AAD_PREFIX = b"referral-engine/temporal-payload/v1\x00"


class EncryptionCodec(PayloadCodec):
    """Encrypts whole serialized payloads with AES-256-GCM under the key ring's payload key."""

    def __init__(self, keyring: KeyRing) -> None:
        super().__init__()
        self._keyring = keyring
        self._ciphers: dict[str, AESGCM] = {}

    def _cipher(self, key_id: str) -> AESGCM:
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            # Raises UnknownKeyVersion for an id the key ring does not hold.
            cipher = AESGCM(self._keyring.payload_key(key_id))
            self._ciphers[key_id] = cipher
        return cipher

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        """Encrypt each payload under the current payload key, naming the key in metadata."""
        key_id = self._keyring.current_payload_key_id()
        cipher = self._cipher(key_id)
        # The key id is in the associated data, so a payload cannot be relabelled.
        aad = _AAD_PREFIX + key_id.encode("utf-8")
        encoded: list[Payload] = []
        for payload in payloads:
            nonce = os.urandom(NONCE_BYTES)
            sealed = cipher.encrypt(nonce, payload.SerializeToString(), aad)
            encoded.append(
                Payload(
                    metadata={"encoding": ENCODING, KEY_ID_METADATA: key_id.encode("utf-8")},
                    data=nonce + sealed,
                )
            )
        return encoded

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        """Decrypt payloads under any key id the key ring holds; others pass through as is."""
        decoded: list[Payload] = []
        for payload in payloads:
            if payload.metadata.get("encoding", b"") != ENCODING:
                # Like the sample: payloads written before encryption stay readable.
                decoded.append(payload)
                continue
            raw_id = payload.metadata.get(KEY_ID_METADATA)
            if raw_id is None:
                raise DecryptionError("an encrypted payload names no key id")
            key_id = raw_id.decode("utf-8", errors="replace")
            cipher = self._cipher(key_id)
            data = payload.data
            try:
                plain = cipher.decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], _AAD_PREFIX + raw_id)
            except (InvalidTag, ValueError) as exc:
                raise DecryptionError("an encrypted payload failed authentication") from exc
            decoded.append(Payload.FromString(plain))
        return decoded


def data_converter(keyring: KeyRing) -> DataConverter:
    """The pydantic data converter with every payload encrypted by `EncryptionCodec`."""
    return dataclasses.replace(pydantic_data_converter, payload_codec=EncryptionCodec(keyring))
