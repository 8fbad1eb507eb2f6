"""Recomputing the audit tree from entry records and checking the signed tree heads."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from services.audit import merkle
from services.audit.models import (
    HASHED_FIELDS,
    HASHED_FIELDS_V2,
    HASHED_FIELDS_V3,
    SOURCE_FIELDS,
    canonical_json,
    tree_head_bytes,
)

# An entry has the fields of its format: before or since one-entry-per-access, and before or
# since it names its source node (migration 0010).
ENTRY_FIELD_SETS = (
    frozenset(HASHED_FIELDS),
    frozenset(HASHED_FIELDS_V2),
    frozenset(HASHED_FIELDS_V3),
    frozenset(HASHED_FIELDS + SOURCE_FIELDS),
)

KeyLookup = Callable[[str], Ed25519PublicKey | None]


@dataclass(frozen=True)
class HeadCoverage:
    """One verified head: its size, its key, and how many entries it first covers."""

    tree_size: int
    key_id: str
    new_entries: int
    cosigned_by: tuple[str, ...] = ()


@dataclass(frozen=True)
class VerificationResult:
    """The outcome of verifying a log: `first_bad_index` is the first entry not vouched for."""

    ok: bool
    entries: int
    tree_heads: int
    first_bad_index: int | None = None
    reason: str | None = None
    heads: tuple[HeadCoverage, ...] = ()
    # Entries under a verified head (the rest are only internally consistent).
    covered: int = 0


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
    except (InvalidSignature, binascii.Error, ValueError, KeyError, TypeError):
        return False
    return True


def verify_records(
    entries: Iterable[Mapping[str, Any]],
    heads: Iterable[Mapping[str, Any]],
    key_for: KeyLookup,
    *,
    require_coverage: bool = False,
    key_order: Sequence[str] = (),
) -> VerificationResult:
    """Recompute every leaf and the root at every signed size; report the first bad entry."""
    return check_records(
        entries, heads, key_for, require_coverage=require_coverage, key_order=key_order
    )[0]


def check_records(
    entries: Iterable[Mapping[str, Any]],
    heads: Iterable[Mapping[str, Any]],
    key_for: KeyLookup,
    *,
    require_coverage: bool = False,
    key_order: Sequence[str] = (),
) -> tuple[VerificationResult, list[bytes]]:
    """`verify_records`, also returning the recomputed leaf hashes (for consistency proofs).

    Entries come in log order and heads in the order they were signed: a head that
    repeats the one before it or is smaller goes back in history and is refused. An entry
    before `first_bad_index` either lies under a valid signed head or is internally
    consistent; when only a head reveals tampering (the forger also rewrote leaf hashes),
    the index is the size of the last good head. With `require_coverage` (an export, which
    ends with a head signed when it was made) every entry must lie under a verified head.
    `key_order` lists key ids oldest first: once a newer key has signed, a head of an older
    (retired) key is refused, so a retired key that leaks cannot extend the log.
    """
    rank = {key_id: position for position, key_id in enumerate(key_order)}
    newest_key: tuple[int, str, int] | None = None  # (rank, key id, size it signed)
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
    coverage: list[HeadCoverage] = []

    def bad(index: int, reason: str) -> tuple[VerificationResult, list[bytes]]:
        result = VerificationResult(
            False, count, len(head_list), index, reason, tuple(coverage), vouched
        )
        return result, leaves

    tree = merkle.TreeAccumulator()
    vouched = 0
    previous: tuple[int, str] | None = None
    seen: set[tuple[int, str]] = set()
    for head in head_list:
        try:
            size, key_id = int(head["tree_size"]), str(head["key_id"])
            root_hash = str(head["root_hash"])
        except (KeyError, TypeError, ValueError):
            return bad(vouched, "malformed tree head")
        if leaf_failure is not None and size > leaf_failure[0]:
            break  # the entry-level failure comes first
        if previous is not None and size < previous[0]:
            return bad(
                vouched,
                f"tree head at size {size} goes back from size {previous[0]} (heads must grow)",
            )
        if (size, key_id) in seen:
            return bad(vouched, f"tree head at size {size} repeats an earlier one")
        if key_for(key_id) is None:
            return bad(vouched, f"tree head at size {size} is signed by unknown key {key_id!r}")
        if not _signature_valid(head, key_for):
            return bad(
                vouched,
                f"tree head at size {size} has an invalid signature (key {key_id!r})",
            )
        if size > len(leaves):
            return bad(
                len(leaves), f"tree head at size {size} but entries from {len(leaves)} are missing"
            )
        tree.extend(leaves[tree.size : size])
        if tree.root().hex() != root_hash:
            return bad(
                vouched,
                f"root at signed size {size} does not match; the first altered entry lies "
                f"in {vouched}..{size - 1}",
            )
        key_rank = rank.get(key_id)
        if key_rank is not None:
            if newest_key is not None and key_rank < newest_key[0]:
                return bad(
                    vouched,
                    f"tree head at size {size} is signed by key {key_id!r}, retired before "
                    f"key {newest_key[1]!r} signed the head at size {newest_key[2]}",
                )
            newest_key = (key_rank, key_id, size)
        coverage.append(HeadCoverage(size, key_id, size - vouched))
        vouched, previous = size, (size, key_id)
        seen.add(previous)
    if leaf_failure is not None:
        return bad(*leaf_failure)
    if require_coverage and vouched < count:
        where = "no signed tree head" if not head_list else "no signed tree head covers them"
        return bad(vouched, f"entries {vouched}..{count - 1} are not covered: {where}")
    result = VerificationResult(True, count, len(head_list), None, None, tuple(coverage), vouched)
    return result, leaves
