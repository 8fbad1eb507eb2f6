"""The tamper-evident audit log: gap-free group-committed appends, signed heads, proofs."""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from sqlalchemy import Connection, Engine, func, insert, select, text
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col

from services.audit import merkle
from services.audit.models import (
    AUDIT_ENTRY_TABLE,
    AUDIT_TREE_HEAD_TABLE,
    AUDIT_TREE_NODE_TABLE,
    AuditEntry,
    AuditEvent,
    SignedTreeHead,
    entry_fields,
    entry_row,
    format_timestamp,
    tree_head_bytes,
)
from services.audit.verification import VerificationResult, verify_records

__all__ = [
    "AuditIntegrityError",
    "AuditLog",
    "ConsistencyProof",
    "InclusionProof",
    "VerificationResult",
]

logger = logging.getLogger(__name__)
T = TypeVar("T")

# One well-known key, so every process appending to the same PostgreSQL log serialises.
ADVISORY_LOCK_KEY = 0x61756469745F6C67  # "audit_lg"
MAX_APPEND_ATTEMPTS = 5
MAX_SEARCH_LIMIT = 500
VERIFY_CHUNK_ROWS = 2000
GROUP_COMMIT_WAIT = 0.002  # seconds a commit waits for more callers under concurrency

ENTRY_TABLE = AUDIT_ENTRY_TABLE
HEAD_TABLE = AUDIT_TREE_HEAD_TABLE
NODE_TABLE = AUDIT_TREE_NODE_TABLE


class AuditIntegrityError(RuntimeError):
    """The stored log is not a gap-free prefix-extension of what this process saw."""


# The current key id, its private key, and every public key so far (oldest first).
KeySource = Callable[[], tuple[str, Ed25519PrivateKey, Mapping[str, Ed25519PublicKey]]]


@dataclass(frozen=True)
class InclusionProof:
    """An audit path from one leaf to the root of the tree of `tree_size` leaves."""

    leaf_index: int
    tree_size: int
    leaf_hash: str
    root_hash: str
    path: list[str]


@dataclass(frozen=True)
class ConsistencyProof:
    """Proof that the tree of size `first` is a prefix of the tree of size `second`."""

    first: int
    second: int
    first_root: str
    second_root: str
    path: list[str]


@dataclass
class _PendingAppend:
    events: list[AuditEvent]
    rows: list[dict[str, Any]] = field(default_factory=list)
    error: BaseException | None = None
    done: bool = False


def _audit_index_clash(error: IntegrityError) -> bool:
    """Whether an integrity error is two writers taking the same audit index."""
    text_ = str(error.orig).lower()
    return "audit_entry" in text_


def _head_record(head: Mapping[Any, Any]) -> dict[str, Any]:
    return {
        "tree_size": head["tree_size"],
        "root_hash": head["root_hash"],
        "signed_at": format_timestamp(head["signed_at"]),
        "key_id": head["key_id"],
        "signature": head["signature"],
    }


class AuditLog:
    """An append-only RFC 6962 Merkle log of audit events stored in the database."""

    def __init__(
        self,
        engine: Engine,
        signing_key: Ed25519PrivateKey,
        key_id: str,
        sth_every_entries: int = 1000,
        sth_every_seconds: float = 60.0,
        *,
        verify_keys: Mapping[str, Ed25519PublicKey] | None = None,
        key_source: KeySource | None = None,
    ) -> None:
        if sth_every_entries < 1 or sth_every_seconds <= 0:
            raise ValueError("tree heads must be signed at a positive cadence")
        self._engine = engine
        self._signing_key = signing_key
        self._key_id = key_id
        self._sth_every_entries = sth_every_entries
        self._sth_every_seconds = sth_every_seconds
        # Older key ids stay verifiable after rotation (oldest first: a head of an older
        # key may not follow a head of a newer one).
        self._public_keys: dict[str, Ed25519PublicKey] = dict(verify_keys or {})
        self._public_keys[key_id] = signing_key.public_key()
        # Where the current key comes from when it rotates while this process runs.
        self._key_source = key_source

        # Group commit: callers queue, one of them (the leader) writes a whole batch.
        self._queue: list[_PendingAppend] = []
        self._queue_cond = threading.Condition()
        self._flushing = False
        self._concurrent = False
        # Serialises every write transaction (appends and heads) within this process.
        self._write_lock = threading.RLock()

        # Only the peaks of the stored tree (O(log n) hashes), to extend it and sign its
        # root; every other subtree hash lives in the node table, read by the proofs.
        self._cache_lock = threading.Lock()
        self._tree = merkle.TreeAccumulator()
        self._last_head_size: int | None = None
        self._last_head_time = time.monotonic()

    @property
    def key_id(self) -> str:
        """The id of the key that signs new tree heads."""
        return self._key_id

    # -- appending ---------------------------------------------------------------------

    def append(self, events: Sequence[AuditEvent]) -> list[AuditEntry]:
        """Append `events` atomically and in order; returns the stored entries."""
        return [AuditEntry(**row) for row in self._append(events)]

    def record(self, events: Sequence[AuditEvent]) -> None:
        """`append` for a caller that needs no entries back (an access being recorded)."""
        self._append(events)

    def _append(self, events: Sequence[AuditEvent]) -> list[dict[str, Any]]:
        """Append `events` atomically and in order; returns the stored rows."""
        if not events:
            return []
        pending = _PendingAppend(list(events))
        with self._queue_cond:
            self._queue.append(pending)
            while self._flushing and not pending.done:
                self._queue_cond.wait()
            if not pending.done:
                self._flushing = True
                if self._concurrent:
                    # The last commit served several callers: those it answered are about
                    # to append again, so wait a moment for them to join this commit rather
                    # than commit half of them now (a commit costs far more than the wait).
                    self._queue_cond.wait(GROUP_COMMIT_WAIT)
                batch, self._queue = self._queue, []
                self._concurrent = len(batch) > 1
        if not pending.done:
            try:
                self._flush(batch)
                try:
                    self._maybe_sign_tree_head()
                except Exception:
                    # The entries are committed; the next append or timer signs instead.
                    logger.exception("signing the audit tree head failed")
            finally:
                with self._queue_cond:
                    self._flushing = False
                    self._queue_cond.notify_all()
        if pending.error is not None:
            raise pending.error
        return pending.rows

    def append_with(
        self, write: Callable[[Session], T], events: Callable[[T], Sequence[AuditEvent]]
    ) -> T:
        """Run `write` (state changes, flushed, not committed) and append the `events` it
        leads to in ONE transaction of the audit writer: both are stored, or neither."""
        with self._write_lock:
            result, _ = self._write_entries_with(write, events)
        try:
            self._maybe_sign_tree_head()
        except Exception:
            logger.exception("signing the audit tree head failed")
        return result

    def _flush(self, batch: list[_PendingAppend]) -> None:
        events = [event for pending in batch for event in pending.events]
        try:
            rows = self._write_entries(events)
        except BaseException as error:
            for pending in batch:
                pending.error = error
                pending.done = True
            raise
        position = 0
        for pending in batch:
            pending.rows = rows[position : position + len(pending.events)]
            position += len(pending.events)
            pending.done = True

    def _write_entries(self, events: list[AuditEvent]) -> list[dict[str, Any]]:
        return self._write_entries_with(lambda _: None, lambda _: events)[1]

    def _write_entries_with(
        self, write: Callable[[Session], T], make_events: Callable[[T], Sequence[AuditEvent]]
    ) -> tuple[T, list[dict[str, Any]]]:
        for attempt in range(1, MAX_APPEND_ATTEMPTS + 1):
            with self._write_lock, self._engine.connect() as conn:
                self._lock_database(conn)
                start = self._sync(conn)
                with self._cache_lock:
                    tree = self._tree.copy()
                try:
                    # The state joins the audit writer's transaction, taken under the append
                    # lock: on SQLite no second writer can deadlock with it.
                    with Session(bind=conn, expire_on_commit=False) as session:
                        result = write(session)
                        session.flush()
                    events = list(make_events(result))
                    recorded_at = datetime.now(UTC)
                    rows = [
                        entry_row(event, index=start + offset, recorded_at=recorded_at)
                        for offset, event in enumerate(events)
                    ]
                    if rows:
                        conn.execute(_INSERT_ENTRY, rows)
                        # The tree grows in the same transaction as its leaves.
                        nodes = [
                            {"node": key, "hash": digest}
                            for row in rows
                            for key, digest in tree.append_nodes(bytes.fromhex(row["leaf_hash"]))
                        ]
                        conn.execute(_INSERT_NODE, nodes)
                    conn.commit()
                except IntegrityError as error:
                    conn.rollback()
                    if not _audit_index_clash(error) or attempt == MAX_APPEND_ATTEMPTS:
                        raise
                    # The primary key on `index` caught a writer the locks did not
                    # serialise (e.g. another process without them): resync and retry.
                    continue
                except BaseException:
                    conn.rollback()
                    raise
            self._publish(tree)
            return result, rows
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _lock_database(conn: Connection) -> None:
        """Take the database-wide append lock for the rest of this transaction."""
        dialect = conn.dialect.name
        if dialect == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY})
        elif dialect == "sqlite":
            # The driver would only BEGIN (deferred) at the first write; taking the write
            # lock up front makes reading the size and inserting one atomic step.
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    def _sync(self, conn: Connection, *, locked: bool = True) -> int:
        """Catch up with appends by others (reading O(log n) rows); returns the log size."""
        with self._cache_lock:
            if self._last_head_size is None:
                self._last_head_size = conn.execute(
                    select(func.coalesce(func.max(HEAD_TABLE.c.tree_size), 0)).where(
                        HEAD_TABLE.c.key_id == self._key_id
                    )
                ).scalar_one()
            known = self._tree.size
        if locked:
            # Only under the append lock is this stable. A shrunken table must stop appends
            # rather than fork the tree; max() reads the primary key index where count()
            # would scan, and holes in the middle are for `verify()` to find. Both ends are
            # read in one statement: this runs on every append.
            last_node, last = conn.execute(_LAST_NODE_AND_INDEX).one()
            size = merkle.size_of_last_key(last_node)
            stored = 0 if last is None else last + 1
            if stored != size:
                raise AuditIntegrityError(
                    f"the log ends at entry {stored}, but its stored tree at size {size}"
                )
            if size < known:
                raise AuditIntegrityError(f"the log ends at entry {size}, expected {known}")
        else:
            size = _stored_size(conn)
        if size > known:
            tree = _load_tree(conn, size)
            with self._cache_lock:
                if tree.size > self._tree.size:
                    self._tree = tree
        return size

    def _publish(self, tree: merkle.TreeAccumulator) -> None:
        with self._cache_lock:
            # A reader may already have loaded this committed tree (or a later one).
            if tree.size > self._tree.size:
                self._tree = tree

    def _catch_up(self) -> None:
        with self._engine.connect() as conn:
            self._sync(conn, locked=False)
            conn.rollback()

    # -- tree heads --------------------------------------------------------------------

    def _maybe_sign_tree_head(self) -> None:
        with self._cache_lock:
            size, last = self._tree.size, self._last_head_size or 0
        if size <= last:
            return
        elapsed = time.monotonic() - self._last_head_time
        if size - last >= self._sth_every_entries or elapsed >= self._sth_every_seconds:
            self.sign_tree_head()

    def maybe_sign_tree_head(self) -> None:
        """Sign a head if the cadence is due (for a periodic timer when appends are rare)."""
        with self._write_lock:
            self._catch_up()
            self._maybe_sign_tree_head()

    def _refresh_keys(self) -> None:
        if self._key_source is None:
            return
        key_id, signing_key, public_keys = self._key_source()
        if key_id != self._key_id:
            self._key_id, self._signing_key = key_id, signing_key
            self._last_head_size = None  # counted per key: read again for the new one
        self._public_keys = {**self._public_keys, **public_keys}
        self._public_keys[key_id] = signing_key.public_key()

    def sign_tree_head(self) -> SignedTreeHead:
        """Sign (and store) the head of the log as it is now."""
        with self._write_lock:
            with self._engine.connect() as conn:
                self._lock_database(conn)
                # Under the append lock, so after a rotation no process signs with the
                # old key once any has signed with the new one.
                self._refresh_keys()
                size = self._sync(conn)
                existing = conn.execute(
                    select(HEAD_TABLE).where(
                        HEAD_TABLE.c.tree_size == size, HEAD_TABLE.c.key_id == self._key_id
                    )
                ).first()
                if existing is not None:
                    conn.rollback()
                    return SignedTreeHead(**existing._mapping)
                with self._cache_lock:
                    root_hash = self._tree.root().hex()
                signed_at = datetime.now(UTC)
                message = tree_head_bytes(
                    tree_size=size,
                    root_hash=root_hash,
                    signed_at=format_timestamp(signed_at),
                    key_id=self._key_id,
                )
                head = SignedTreeHead(
                    tree_size=size,
                    key_id=self._key_id,
                    root_hash=root_hash,
                    signed_at=signed_at,
                    signature=base64.b64encode(self._signing_key.sign(message)).decode(),
                )
                conn.execute(
                    insert(HEAD_TABLE),
                    [{column.name: getattr(head, column.name) for column in HEAD_TABLE.columns}],
                )
                conn.commit()
            self._last_head_size = size
            self._last_head_time = time.monotonic()
            return head

    def tree_heads(self) -> list[SignedTreeHead]:
        """Every signed tree head, smallest tree first."""
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(HEAD_TABLE).order_by(HEAD_TABLE.c.tree_size, HEAD_TABLE.c.signed_at)
            )
            return [SignedTreeHead(**row._mapping) for row in rows]

    # -- proofs ------------------------------------------------------------------------

    def inclusion_proof(self, index: int, tree_size: int | None = None) -> InclusionProof:
        """The audit path proving entry `index` is in the tree of `tree_size` (default now)."""
        with self._engine.connect() as conn:
            stored = _stored_size(conn)
            size = stored if tree_size is None else tree_size
            if not 0 <= index < size <= stored:
                raise ValueError(f"no entry {index} in a tree of size {size} (log has {stored})")
            ranges = merkle.inclusion_ranges(index, size)
            hashes = _range_hashes(conn, [(index, index + 1), (0, size), *ranges])
        return InclusionProof(
            leaf_index=index,
            tree_size=size,
            leaf_hash=hashes[0].hex(),
            root_hash=hashes[1].hex(),
            path=[h.hex() for h in hashes[2:]],
        )

    def consistency_proof(self, first: int, second: int) -> ConsistencyProof:
        """The proof that the tree of size `first` is a prefix of the tree of size `second`."""
        with self._engine.connect() as conn:
            stored = _stored_size(conn)
            if not 0 <= first <= second <= stored:
                raise ValueError(f"sizes {first}..{second} are not within the log ({stored})")
            ranges = merkle.consistency_ranges(first, second)
            hashes = _range_hashes(conn, [(0, first), (0, second), *ranges])
        return ConsistencyProof(
            first=first,
            second=second,
            first_root=hashes[0].hex(),
            second_root=hashes[1].hex(),
            path=[h.hex() for h in hashes[2:]],
        )

    # -- verification and search -------------------------------------------------------

    def verify(self) -> VerificationResult:
        """Recompute every leaf from its stored fields and check every signed head."""
        with self._engine.connect() as conn:
            # Heads first: entries only grow, so every head read here is covered below.
            heads = [
                _head_record(row._mapping)
                for row in conn.execute(
                    select(HEAD_TABLE).order_by(HEAD_TABLE.c.tree_size, HEAD_TABLE.c.signed_at)
                )
            ]
            rows = conn.execution_options(yield_per=VERIFY_CHUNK_ROWS).execute(
                select(ENTRY_TABLE).order_by(ENTRY_TABLE.c.index)
            )

            def records() -> Iterator[dict[str, Any]]:
                for row in rows:
                    mapping = row._mapping
                    yield {**entry_fields(mapping), "leaf_hash": mapping["leaf_hash"]}

            self._refresh_keys()
            return verify_records(
                records(), heads, self._public_keys.get, key_order=list(self._public_keys)
            )

    def search(
        self,
        session: Session,
        *,
        referral_pseudonym: str | None = None,
        person_pseudonym: str | None = None,
        actor: str | None = None,
        organisation: str | None = None,
        action: str | None = None,
        decision: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> list[AuditEntry]:
        """Entries matching every given filter, in log order (`until` is exclusive)."""
        if offset < 0 or not 0 < limit <= MAX_SEARCH_LIMIT:
            raise ValueError(f"offset must be >= 0 and limit within 1..{MAX_SEARCH_LIMIT}")
        statement = select(AuditEntry)
        filters = (
            (col(AuditEntry.referral_pseudonym), referral_pseudonym),
            (col(AuditEntry.person_pseudonym), person_pseudonym),
            (col(AuditEntry.actor_subject), actor),
            (col(AuditEntry.actor_organisation), organisation),
            (col(AuditEntry.action), action),
            (col(AuditEntry.decision), decision),
        )
        for column, value in filters:
            if value is not None:
                statement = statement.where(column == value)
        if since is not None:
            statement = statement.where(col(AuditEntry.recorded_at) >= since)
        if until is not None:
            statement = statement.where(col(AuditEntry.recorded_at) < until)
        statement = statement.order_by(col(AuditEntry.index)).offset(offset).limit(limit)
        return list(session.scalars(statement))


# -- the stored tree -------------------------------------------------------------------------

# Built once: every append runs them, and a statement built per call costs more Python than
# the database takes to answer it.
_LAST_NODE = select(func.max(NODE_TABLE.c.node))
_LAST_NODE_AND_INDEX = select(
    select(func.max(NODE_TABLE.c.node)).scalar_subquery(),
    select(func.max(ENTRY_TABLE.c.index)).scalar_subquery(),
)
_INSERT_ENTRY = insert(ENTRY_TABLE)
_INSERT_NODE = insert(NODE_TABLE)


def _stored_size(conn: Connection) -> int:
    """The size of the stored tree, from the largest node key (its last leaf)."""
    return merkle.size_of_last_key(conn.execute(_LAST_NODE).scalar_one())


def _range_hashes(conn: Connection, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
    """MTH of each leaf range [start, end), from O(log n) stored subtrees each, in one read."""
    parts = [merkle.subtrees(start, end) for start, end in ranges]
    keys = {merkle.node_key(level, start) for tiles in parts for level, start in tiles}
    found: dict[int, bytes] = {}
    if keys:
        rows = conn.execute(
            select(NODE_TABLE.c.node, NODE_TABLE.c.hash).where(NODE_TABLE.c.node.in_(keys))
        )
        found = {node: bytes(digest) for node, digest in rows}
    missing = keys - found.keys()
    if missing:
        raise AuditIntegrityError(f"the stored tree lacks node {min(missing)}")
    return [
        merkle.fold_subtrees([found[merkle.node_key(level, start)] for level, start in tiles])
        for tiles in parts
    ]


def _load_tree(conn: Connection, size: int) -> merkle.TreeAccumulator:
    """The peaks of the stored tree of `size` leaves, ready to extend."""
    tiles = merkle.subtrees(0, size)
    peaks = _range_hashes(conn, [(start, start + (1 << level)) for level, start in tiles])
    return merkle.TreeAccumulator.from_peaks(size, peaks)
