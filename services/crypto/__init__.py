"""Envelope encryption, crypto-shredding, pseudonyms and the Temporal payload codec."""

from services.crypto.codec import EncryptionCodec, data_converter
from services.crypto.envelope import PersonalDataVault, ReferralDataKey
from services.crypto.errors import (
    CryptoError,
    DataKeyShredded,
    DecryptionError,
    KeyRingError,
    UnknownKeyVersion,
)
from services.crypto.keyring import FileKeyRing, KeyRing, WrappedKey
from services.crypto.payload_keys import ReferralPayloadKey, ReferralPayloadKeys
from services.crypto.pseudonym import Pseudonymizer

__all__ = [
    "CryptoError",
    "DataKeyShredded",
    "DecryptionError",
    "EncryptionCodec",
    "FileKeyRing",
    "KeyRing",
    "KeyRingError",
    "PersonalDataVault",
    "Pseudonymizer",
    "ReferralDataKey",
    "ReferralPayloadKey",
    "ReferralPayloadKeys",
    "UnknownKeyVersion",
    "WrappedKey",
    "data_converter",
]
