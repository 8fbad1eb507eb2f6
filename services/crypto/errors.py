"""Domain exceptions of the crypto package; messages never carry plaintext or key material."""

from __future__ import annotations


class CryptoError(Exception):
    """Base class of every error raised by `services.crypto`."""


class KeyRingError(CryptoError):
    """The key ring is missing, malformed, unsafe or asked for an impossible change."""


class DecryptionError(CryptoError):
    """A sealed value or payload could not be authenticated and decrypted."""


class UnknownKeyVersion(DecryptionError, KeyRingError):
    """The ciphertext names a key version the key ring does not (or no longer) hold."""


class DataKeyShredded(DecryptionError):
    """The referral's data key was destroyed (crypto-shredding); its data is gone for good."""
