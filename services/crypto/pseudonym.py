"""Keyed, non-reversible pseudonyms that link records of one person without storing the
identifier in clear."""

from __future__ import annotations

import hashlib
import hmac
import unicodedata
import uuid
from datetime import date

MIN_KEY_BYTES = 32
_DIGITS = frozenset("0123456789")


def _normalise_name(name: str) -> str:
    # Compatibility decomposition splits accents from letters (and folds full-width forms),
    # so "Émile" and "Emile" link; punctuation becomes a space so "Jean-Luc" and
    # "Jean Luc" link too.
    decomposed = unicodedata.normalize("NFKD", name)
    kept: list[str] = []
    for char in decomposed:
        category = unicodedata.category(char)
        if category.startswith("M"):
            continue
        kept.append(" " if category.startswith(("P", "Z", "C")) else char)
    return " ".join("".join(kept).casefold().split())


class Pseudonymizer:
    """HMAC-SHA256 pseudonyms, each purpose domain-separated under one secret key."""

    def __init__(self, key: bytes, key_id: str | None = None) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(f"a pseudonym key needs at least {MIN_KEY_BYTES} bytes")
        self._key = key
        # the key ring's version of `key`, stored with the pseudonyms (None: not known)
        self.key_id = key_id

    def _digest(self, purpose: bytes, *parts: bytes) -> str:
        # A purpose label and length-prefixed parts keep pseudonyms of different kinds, and
        # of different splits of the same bytes, apart.
        mac = hmac.new(self._key, purpose + b"\x00", hashlib.sha256)
        for part in parts:
            mac.update(len(part).to_bytes(4, "big") + part)
        return mac.hexdigest()

    def national_number(self, value: str) -> str:
        """Pseudonym of a national number; separators and spaces are ignored."""
        digits = "".join(c for c in unicodedata.normalize("NFKC", value) if c in _DIGITS)
        if not digits:
            raise ValueError("a national number needs at least one digit")
        return "nn_" + self._digest(b"national-number", digits.encode("ascii"))[:32]

    def name_and_birth_date(self, name: str, birth_date: date) -> str:
        """Pseudonym of a name and birth date, insensitive to case, accents and spacing."""
        normalised = _normalise_name(name)
        if not normalised:
            raise ValueError("a name needs at least one letter")
        return (
            "nb_"
            + self._digest(
                b"name-birth-date",
                normalised.encode("utf-8"),
                birth_date.isoformat().encode("ascii"),
            )[:32]
        )

    def referral_pseudonym(self, referral_id: uuid.UUID) -> str:
        """Short stable pseudonym of a referral, for audit logs."""
        return "ref_" + self._digest(b"referral", referral_id.bytes)[:20]
