"""A Temporal payload codec that encrypts every payload, so the Temporal server and its UI
never see plaintext (after the temporalio samples-python `encryption` sample).

A payload of a referral's workflow (known from the serialization context's workflow id) is
sealed with that referral's own payload key (services.crypto.payload_keys), which the purge
destroys: afterwards its history cannot be read by anyone. Other payloads (no context, other
workflows, a referral without a key of its own, or one already purged) use the key ring's
shared payload key. Every payload names its key in its metadata, so decoding needs no
context, and payloads sealed with any shared key the ring still holds keep decoding.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import uuid
from collections.abc import Sequence
from typing import Self

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import (
    ActivitySerializationContext,
    DataConverter,
    PayloadCodec,
    SerializationContext,
    WithSerializationContext,
    WorkflowSerializationContext,
)

from services.crypto.errors import DataKeyShredded, DecryptionError
from services.crypto.keyring import NONCE_BYTES, KeyRing
from services.crypto.payload_keys import (
    ReferralPayloadKeys,
    referral_key_id,
    referral_of_key_id,
)

ENCODING = b"binary/encrypted"
KEY_ID_METADATA = "encryption-key-id"
_AAD_PREFIX = b"referral-engine/temporal-payload/v1\x00"
# workflows.referral.workflow_id: "referral-<uuid>"
_REFERRAL_WORKFLOW_PREFIX = "referral-"


def referral_of_workflow(workflow_id: str | None) -> uuid.UUID | None:
    """The referral a workflow id belongs to, or None for any other workflow."""
    if not workflow_id or not workflow_id.startswith(_REFERRAL_WORKFLOW_PREFIX):
        return None
    try:
        return uuid.UUID(workflow_id[len(_REFERRAL_WORKFLOW_PREFIX) :])
    except ValueError:
        return None


class EncryptionCodec(PayloadCodec, WithSerializationContext):
    """Encrypts whole serialized payloads with AES-256-GCM: under the referral's own key
    within a referral's workflow, else under the key ring's current payload key."""

    def __init__(
        self,
        keyring: KeyRing,
        referral_keys: ReferralPayloadKeys | None = None,
        *,
        referral_id: uuid.UUID | None = None,
    ) -> None:
        super().__init__()
        self._keyring = keyring
        self._referral_keys = referral_keys
        self._referral_id = referral_id
        self._ciphers: dict[str, AESGCM] = {}

    def with_context(self, context: SerializationContext) -> Self:
        """A codec bound to the referral whose workflow the payloads belong to."""
        workflow_id = None
        if isinstance(context, WorkflowSerializationContext | ActivitySerializationContext):
            workflow_id = context.workflow_id
        referral_id = referral_of_workflow(workflow_id)
        if referral_id == self._referral_id:
            return self
        bound = type(self)(self._keyring, self._referral_keys, referral_id=referral_id)
        bound._ciphers = self._ciphers  # shared: the ring's keys never change meaning
        return bound

    def _ring_cipher(self, key_id: str) -> AESGCM:
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            # Raises UnknownKeyVersion for an id the key ring does not hold.
            cipher = AESGCM(self._keyring.payload_key(key_id))
            self._ciphers[key_id] = cipher
        return cipher

    async def _referral_cipher(self, referral_id: uuid.UUID) -> AESGCM | None:
        """The referral's own cipher; None if it has no key; raises if it was purged."""
        if self._referral_keys is None:
            raise DecryptionError("a payload names a referral key and no referral keys are set")
        state = self._referral_keys.cached(referral_id)
        if state is None:
            state = await asyncio.to_thread(self._referral_keys.state, referral_id)
        if state.destroyed:
            raise DataKeyShredded("the referral's payload key was destroyed by its purge")
        return AESGCM(state.key) if state.key is not None else None

    async def _encoding_key(self) -> tuple[str, AESGCM]:
        if self._referral_id is not None and self._referral_keys is not None:
            try:
                cipher = await self._referral_cipher(self._referral_id)
            except DataKeyShredded:
                # After the purge the workflow still records its last process facts (the
                # purge's result, the end); they hold nothing personal.
                cipher = None
            if cipher is not None:
                return referral_key_id(self._referral_id), cipher
        key_id = self._keyring.current_payload_key_id()
        return key_id, self._ring_cipher(key_id)

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        """Encrypt each payload, naming its key in the metadata."""
        if not payloads:
            return []
        key_id, cipher = await self._encoding_key()
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
        """Decrypt payloads under the key each names; unencrypted ones pass through as is."""
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
            referral_id = referral_of_key_id(key_id)
            if referral_id is None:
                cipher = self._ring_cipher(key_id)
            else:
                found = await self._referral_cipher(referral_id)
                if found is None:
                    raise DecryptionError("a payload names a referral key that does not exist")
                cipher = found
            data = payload.data
            try:
                plain = cipher.decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], _AAD_PREFIX + raw_id)
            except (InvalidTag, ValueError) as exc:
                raise DecryptionError("an encrypted payload failed authentication") from exc
            decoded.append(Payload.FromString(plain))
        return decoded


def data_converter(
    keyring: KeyRing, referral_keys: ReferralPayloadKeys | None = None
) -> DataConverter:
    """The pydantic data converter with every payload encrypted by `EncryptionCodec`; with
    `referral_keys`, a referral's payloads are sealed with that referral's own key."""
    return dataclasses.replace(
        pydantic_data_converter, payload_codec=EncryptionCodec(keyring, referral_keys)
    )
