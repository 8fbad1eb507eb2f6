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
    """Recompute every leaf and the root at every signed size; report the first bad entry.

    The entries are streamed: memory holds the tree's peaks and the leaves since the last
    signed size (at most FLUSH_LEAVES once no head waits for them), never the whole log.
    """
    return check_records(
        entries,
        heads,
        key_for,
        require_coverage=require_coverage,
        key_order=key_order,
        keep_leaves=False,
    )[0]


FLUSH_LEAVES = 16 * merkle.EXTEND_CHUNK


class _Checker:
    """The state of one streamed verification (see `check_records`)."""

    def __init__(
        self,
        heads: list[Mapping[str, Any]],
        key_for: KeyLookup,
        key_order: Sequence[str],
        keep_leaves: bool,
    ) -> None:
        self.heads = heads
        self.key_for = key_for
        self.rank = {key_id: position for position, key_id in enumerate(key_order)}
        self.keep_leaves = keep_leaves
        self.kept: list[bytes] = []
        self.tree = merkle.TreeAccumulator()
        self.pending: list[bytes] = []  # good leaves not yet in the tree
        self.leaf_failure: tuple[int, str] | None = None
        self.failure: tuple[int, str] | None = None  # a head's, with the state below frozen
        self.coverage: list[HeadCoverage] = []
        self.vouched = 0
        self.previous: tuple[int, str] | None = None
        self.seen: set[tuple[int, str]] = set()
        self.newest_key: tuple[int, str, int] | None = None  # (rank, key id, size it signed)
        self.next_head = 0
        self.heads_done = False

    @property
    def good(self) -> int:
        return self.tree.size + len(self.pending)

    def add(self, leaf: bytes) -> None:
        self.pending.append(leaf)
        if self.keep_leaves:
            self.kept.append(leaf)
        if len(self.pending) >= FLUSH_LEAVES:
            # Into the tree, up to the size the next head needs to see.
            bound = self.good
            if not self.heads_done and self.next_head < len(self.heads):
                try:
                    bound = int(self.heads[self.next_head]["tree_size"])
                except (KeyError, TypeError, ValueError):
                    bound = self.tree.size
            self._grow(max(self.tree.size, min(bound, self.good)))

    def drop_last(self) -> None:
        # The last good leaf turned out to be one of two entries with its index.
        self.pending.pop()
        if self.keep_leaves:
            self.kept.pop()

    def _grow(self, size: int) -> None:
        take = size - self.tree.size
        if take > 0:
            self.tree.extend(self.pending[:take])
            del self.pending[:take]

    def fail(self, index: int, reason: str) -> None:
        self.failure = (index, reason)

    def decide_heads(self, limit: int | None) -> None:
        """Check, in order, every head whose size is at most `limit` (None: the end)."""
        while self.failure is None and not self.heads_done and self.next_head < len(self.heads):
            head = self.heads[self.next_head]
            try:
                size, key_id = int(head["tree_size"]), str(head["key_id"])
                root_hash = str(head["root_hash"])
            except (KeyError, TypeError, ValueError):
                return self.fail(self.vouched, "malformed tree head")
            if limit is not None and size > limit:
                return  # wait for the entries up to its size (and the one after)
            if self.leaf_failure is not None and size > self.leaf_failure[0]:
                self.heads_done = True  # the entry-level failure comes first
                return
            previous = self.previous
            if previous is not None and size < previous[0]:
                return self.fail(
                    self.vouched,
                    f"tree head at size {size} goes back from size {previous[0]} (heads must grow)",
                )
            if (size, key_id) in self.seen:
                return self.fail(self.vouched, f"tree head at size {size} repeats an earlier one")
            if self.key_for(key_id) is None:
                return self.fail(
                    self.vouched, f"tree head at size {size} is signed by unknown key {key_id!r}"
                )
            if not _signature_valid(head, self.key_for):
                return self.fail(
                    self.vouched,
                    f"tree head at size {size} has an invalid signature (key {key_id!r})",
                )
            if size > self.good:
                return self.fail(
                    self.good,
                    f"tree head at size {size} but entries from {self.good} are missing",
                )
            self._grow(size)
            if self.tree.root().hex() != root_hash:
                return self.fail(
                    self.vouched,
                    f"root at signed size {size} does not match; the first altered entry lies "
                    f"in {self.vouched}..{size - 1}",
                )
            key_rank = self.rank.get(key_id)
            if key_rank is not None:
                newest = self.newest_key
                if newest is not None and key_rank < newest[0]:
                    return self.fail(
                        self.vouched,
                        f"tree head at size {size} is signed by key {key_id!r}, retired before "
                        f"key {newest[1]!r} signed the head at size {newest[2]}",
                    )
                self.newest_key = (key_rank, key_id, size)
            self.coverage.append(HeadCoverage(size, key_id, size - self.vouched))
            self.vouched, self.previous = size, (size, key_id)
            self.seen.add(self.previous)
            self.next_head += 1
        return


def check_records(
    entries: Iterable[Mapping[str, Any]],
    heads: Iterable[Mapping[str, Any]],
    key_for: KeyLookup,
    *,
    require_coverage: bool = False,
    key_order: Sequence[str] = (),
    keep_leaves: bool = True,
) -> tuple[VerificationResult, list[bytes]]:
    """`verify_records`, also returning the recomputed leaf hashes (for consistency proofs;
    none without `keep_leaves`).

    Entries come in log order and heads in the order they were signed: a head that
    repeats the one before it or is smaller goes back in history and is refused. An entry
    before `first_bad_index` either lies under a valid signed head or is internally
    consistent; when only a head reveals tampering (the forger also rewrote leaf hashes),
    the index is the size of the last good head. With `require_coverage` (an export, which
    ends with a head signed when it was made) every entry must lie under a verified head.
    `key_order` lists key ids oldest first: once a newer key has signed, a head of an older
    (retired) key is refused, so a retired key that leaks cannot extend the log.

    A head of size s is decided once entry s has been read (or the entries ended): only
    then is it known that entry s - 1 is not one of two entries claiming its index.
    """
    state = _Checker(list(heads), key_for, key_order, keep_leaves)
    count = 0
    for position, record in enumerate(entries):
        count += 1
        if state.failure is not None:
            continue  # keep counting, the first failure is already known
        computed: bytes | None = None
        if state.leaf_failure is None:
            computed, reason = _entry_leaf_hash(position, record)
            if computed is None:
                if position and record.get("index") == position - 1:
                    # Two entries claim the same index: either may be the inserted one.
                    state.leaf_failure = (
                        position - 1,
                        f"entry {position - 1} appears twice (inserted)",
                    )
                    state.drop_last()
                else:
                    state.leaf_failure = (position, reason)
        state.decide_heads(position)
        if computed is not None and state.leaf_failure is None:
            state.add(computed)
    if state.failure is None:
        state.decide_heads(None)

    def result(ok: bool, index: int | None = None, reason: str | None = None) -> VerificationResult:
        return VerificationResult(
            ok,
            count,
            len(state.heads),
            index,
            reason,
            tuple(state.coverage),
            state.vouched,
        )

    if state.failure is not None:
        return result(False, *state.failure), state.kept
    if state.leaf_failure is not None:
        return result(False, *state.leaf_failure), state.kept
    if require_coverage and state.vouched < count:
        where = "no signed tree head" if not state.heads else "no signed tree head covers them"
        return result(
            False, state.vouched, f"entries {state.vouched}..{count - 1} are not covered: {where}"
        ), state.kept
    return result(True), state.kept
