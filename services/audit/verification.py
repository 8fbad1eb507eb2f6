"""Recomputing the audit tree from entry records and checking the signed tree heads."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from services.audit import merkle
from services.audit.models import HASHED_FIELDS, HASHED_FIELDS_V2, canonical_json, tree_head_bytes

# An entry has the fields of its format: before or since one-entry-per-access.
ENTRY_FIELD_SETS = (frozenset(HASHED_FIELDS), frozenset(HASHED_FIELDS_V2))

KeyLookup = Callable[[str], Ed25519PublicKey | None]


@dataclass(frozen=True)
class VerificationResult:
    """The outcome of verifying a log: `first_bad_index` is the first entry not vouched for."""

    ok: bool
    entries: int
    tree_heads: int
    first_bad_index: int | None = None
    reason: str | None = None


def _entry_leaf_hash(position: int, record: Mapping[str, Any]) -> tuple[bytes | None, str]:
    """The recomputed leaf hash of `record` at `position`, or None and why it is bad."""
    fields = {k: v for k, v in record.items() if k not in ("leaf_hash", "type")}
    index = fields.get("index")
    if not isinstance(index, int) or isinstance(index, bool):
        return None, f"entry at position {position} has no valid index"
    if index != position:
        return None, f"expected entry {position} but found entry {index} (deleted or reordered)"
    if set(fields) not in ENTRY_FIELD_SETS:
        return None, f"entry {position} has unexpected or missing fields"
    try:
        computed = merkle.leaf_hash(canonical_json(fields))
    except (TypeError, ValueError):
        return None, f"entry {position} cannot be serialised canonically"
    stored = record.get("leaf_hash")
    if stored is not None and stored != computed.hex():
        return None, f"entry {position} does not match its leaf hash (a field was changed)"
    return computed, ""


def _signature_valid(head: Mapping[str, Any], key_for: KeyLookup) -> bool:
    key = key_for(str(head["key_id"]))
    if key is None:
        return False
    try:
        signature = base64.b64decode(str(head["signature"]), validate=True)
        key.verify(
            signature,
            tree_head_bytes(
                tree_size=int(head["tree_size"]),
                root_hash=str(head["root_hash"]),
                signed_at=str(head["signed_at"]),
                key_id=str(head["key_id"]),
            ),
        )
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


def verify_records(
    entries: Iterable[Mapping[str, Any]],
    heads: Iterable[Mapping[str, Any]],
    key_for: KeyLookup,
) -> VerificationResult:
    """Recompute every leaf and the root at every signed size; report the first bad entry.

    Entries must come in log order. An entry before `first_bad_index` either lies under a
    valid signed head or is internally consistent; when only a head reveals tampering
    (the forger also rewrote leaf hashes), the index is the size of the last good head.
    """
    leaves: list[bytes] = []
    leaf_failure: tuple[int, str] | None = None
    count = 0
    for position, record in enumerate(entries):
        count += 1
        if leaf_failure is not None:
            continue  # keep counting, the first failure is already known
        computed, reason = _entry_leaf_hash(position, record)
        if computed is None:
            if position and record.get("index") == position - 1:
                # Two entries claim the same index: either may be the inserted one.
                leaf_failure = (position - 1, f"entry {position - 1} appears twice (inserted)")
                leaves.pop()
            else:
                leaf_failure = (position, reason)
        else:
            leaves.append(computed)

    head_list = list(heads)
    try:
        ordered = sorted(head_list, key=lambda h: (int(h["tree_size"]), str(h["key_id"])))
    except (KeyError, TypeError, ValueError):
        return VerificationResult(False, count, len(head_list), 0, "malformed tree head")

    def bad(index: int, reason: str) -> VerificationResult:
        return VerificationResult(False, count, len(head_list), index, reason)

    tree = merkle.TreeAccumulator()
    vouched = 0
    for head in ordered:
        size = int(head["tree_size"])
        if leaf_failure is not None and size > leaf_failure[0]:
            break  # the entry-level failure comes first
        if not _signature_valid(head, key_for):
            return bad(
                vouched,
                f"tree head at size {size} has an invalid signature (key {head['key_id']!r})",
            )
        if size > len(leaves):
            return bad(
                len(leaves), f"tree head at size {size} but entries from {len(leaves)} are missing"
            )
        tree.extend(leaves[tree.size : size])
        if tree.root().hex() != head["root_hash"]:
            return bad(
                vouched,
                f"root at signed size {size} does not match; the first altered entry lies "
                f"in {vouched}..{size - 1}",
            )
        vouched = size
    if leaf_failure is not None:
        return bad(*leaf_failure)
    return VerificationResult(True, count, len(head_list))
