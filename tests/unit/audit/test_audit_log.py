"""The audit log in the database: appends, signed heads, proofs, search, append-only rows."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

import pytest
from audit_factories import audit_event, execute_raw, quoted_index
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine, event
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session
from test_audit_merkle import reference_mth, reference_path, reference_subproof

from services.audit import merkle
from services.audit.log import AuditIntegrityError, AuditLog
from services.audit.models import (
    AUDIT_ENTRY_TABLE,
    AUDIT_TREE_NODE_TABLE,
    AuditDecision,
    AuditEntry,
    AuditEvent,
    AuditEventType,
    canonical_bytes,
    entry_row,
    new_entry,
    pseudonymise_referral,
)
from services.audit.offline import export, public_key_pem, verify_file

LogFactory = Callable[..., AuditLog]


def test_entries_get_gap_free_indices_and_hash_their_canonical_bytes(
    make_log: LogFactory,
) -> None:
    log = make_log()
    first = log.append([audit_event(0), audit_event(1)])
    second = log.append([audit_event(2)])
    assert [e.index for e in first + second] == [0, 1, 2]
    for entry in first + second:
        assert entry.recorded_at.tzinfo is not None
        assert entry.leaf_hash == merkle.leaf_hash(canonical_bytes(entry)).hex()
    assert log.verify().ok


def test_an_appended_row_is_the_entry_model_column_for_column() -> None:
    """Appends insert rows built without a model object: the same columns, the same hash."""
    when = datetime(2026, 12, 3, 4, 5, 6, 789000, tzinfo=UTC)
    row = entry_row(audit_event(7), index=7, recorded_at=when)
    assert set(row) == {column.name for column in AUDIT_ENTRY_TABLE.columns}
    entry = new_entry(audit_event(7), index=7, recorded_at=when)
    assert entry.leaf_hash == merkle.leaf_hash(canonical_bytes(entry)).hex()
    assert row["leaf_hash"] == merkle.leaf_hash(canonical_bytes(AuditEntry(**row))).hex()


@pytest.mark.parametrize("behind", ["entry", "tree"])
def test_an_append_stops_when_entries_and_their_tree_disagree(
    engine: Engine, make_log: LogFactory, behind: str
) -> None:
    """A row written past the log (an entry without its tree node, or a node without its
    entry) stops every later append rather than fork the tree; nothing more is written."""
    log = make_log()
    log.append([audit_event(0), audit_event(1)])
    with engine.begin() as conn:
        if behind == "tree":
            row = entry_row(audit_event(2), index=2, recorded_at=datetime.now(UTC))
            conn.execute(AUDIT_ENTRY_TABLE.insert(), [row])
        else:
            conn.execute(
                AUDIT_TREE_NODE_TABLE.insert(), [{"node": merkle.node_key(0, 2), "hash": b"x" * 32}]
            )
    with pytest.raises(AuditIntegrityError, match="the log ends at entry"):
        make_log().append([audit_event(3)])
    with engine.connect() as conn:
        stored = conn.execute(AUDIT_ENTRY_TABLE.select()).all()
    assert len(stored) == (3 if behind == "tree" else 2)


def test_canonical_bytes_are_sorted_compact_utf8_json(make_log: LogFactory) -> None:
    [entry] = make_log().append([audit_event(1, actor_subject="officier-ë")])
    data = canonical_bytes(entry)
    assert data.startswith(b'{"action":"referral.read","actor_organisation":')
    assert b" " not in data
    assert "officier-ë".encode() in data
    assert b'"leaf_hash"' not in data


def test_a_referral_pseudonym_must_not_be_a_real_identifier() -> None:
    with pytest.raises(ValueError):
        audit_event(1, referral_pseudonym="3f2b8c1e-1d4c-4c55-9a43-7e0f6f1d8a10")
    referral_id = uuid.uuid4()
    pseudonym = pseudonymise_referral(referral_id, b"k" * 32)
    assert pseudonym != str(referral_id)
    assert audit_event(1, referral_pseudonym=pseudonym).referral_pseudonym == pseudonym
    assert pseudonymise_referral(referral_id, b"x" * 32) != pseudonym


def test_the_database_refuses_updates_and_deletes(engine: Engine, make_log: LogFactory) -> None:
    log = make_log()
    log.append([audit_event(0), audit_event(1)])
    log.sign_tree_head()
    index = quoted_index(engine)
    refused = [
        "UPDATE audit_entry SET actor_subject = 'someone-else'",
        f"DELETE FROM audit_entry WHERE {index} = 1",
        "DELETE FROM audit_entry",
        "UPDATE audit_tree_head SET root_hash = '00'",
        "DELETE FROM audit_tree_head",
    ]
    for statement in refused:
        with pytest.raises(DBAPIError, match="append-only"):
            execute_raw(engine, statement)
    assert log.verify().ok
    assert log.verify().entries == 2


def test_tree_heads_are_signed_every_n_entries_and_on_demand(make_log: LogFactory) -> None:
    log = make_log(sth_every_entries=3)
    for number in range(7):
        log.append([audit_event(number)])
    assert [h.tree_size for h in log.tree_heads()] == [3, 6]
    head = log.sign_tree_head()
    assert head.tree_size == 7
    assert log.sign_tree_head() == head  # nothing new: the same head, not a second one
    assert [h.tree_size for h in log.tree_heads()] == [3, 6, 7]
    assert head.root_hash == log.inclusion_proof(0).root_hash
    result = log.verify()  # every entry recomputed, each of the three heads checked
    assert (result.ok, result.entries, result.tree_heads) == (True, 7, 3), result
    assert log.verify().tree_heads == 3


def test_tree_heads_are_signed_after_the_time_cadence(make_log: LogFactory) -> None:
    log = make_log(sth_every_seconds=0.01)
    log.append([audit_event(0)])
    time.sleep(0.02)
    log.append([audit_event(1)])
    assert log.tree_heads()[-1].tree_size == 2


def test_proofs_from_the_log_verify_against_the_signed_heads(make_log: LogFactory) -> None:
    log = make_log(sth_every_entries=5)
    for number in range(23):
        log.append([audit_event(number)])
    heads = log.tree_heads()
    assert [h.tree_size for h in heads] == [5, 10, 15, 20]
    for head in heads:
        for index in (0, head.tree_size // 2, head.tree_size - 1):
            proof = log.inclusion_proof(index, head.tree_size)
            assert proof.root_hash == head.root_hash
            assert merkle.verify_inclusion(
                bytes.fromhex(proof.leaf_hash),
                index,
                head.tree_size,
                [bytes.fromhex(p) for p in proof.path],
                bytes.fromhex(head.root_hash),
            )
    older, newer = heads[0], heads[-1]
    consistency = log.consistency_proof(older.tree_size, newer.tree_size)
    assert merkle.verify_consistency(
        older.tree_size,
        newer.tree_size,
        bytes.fromhex(older.root_hash),
        bytes.fromhex(newer.root_hash),
        [bytes.fromhex(p) for p in consistency.path],
    )
    with pytest.raises(ValueError):
        log.inclusion_proof(23)
    with pytest.raises(ValueError):
        log.consistency_proof(10, 24)


def test_eight_concurrent_writers_build_one_consistent_tree(
    engine: Engine, make_log: LogFactory, tmp_path: Path, signing_key: Ed25519PrivateKey
) -> None:
    log = make_log(sth_every_entries=25)
    per_thread: dict[int, list[int]] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def writer(thread: int) -> None:
        try:
            start.wait()
            indices = []
            for number in range(50):
                [entry] = log.append([audit_event(thread * 1000 + number)])
                indices.append(entry.index)
            per_thread[thread] = indices
        except BaseException as error:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    every_index = sorted(i for indices in per_thread.values() for i in indices)
    assert every_index == list(range(400))
    for indices in per_thread.values():
        assert indices == sorted(indices)  # each writer's events keep their order

    log.sign_tree_head()
    result = log.verify()
    assert result.ok, result.reason
    assert result.entries == 400
    heads = log.tree_heads()
    assert heads[-1].tree_size == 400
    # A head follows the batch that crossed 25 new entries; a batch holds at most 8.
    sizes = [0] + [h.tree_size for h in heads]
    assert all(0 < later - earlier < 25 + 8 for earlier, later in pairwise(sizes))
    for older, newer in pairwise(heads):
        proof = log.consistency_proof(older.tree_size, newer.tree_size)
        assert merkle.verify_consistency(
            older.tree_size,
            newer.tree_size,
            bytes.fromhex(older.root_hash),
            bytes.fromhex(newer.root_hash),
            [bytes.fromhex(p) for p in proof.path],
        )
    out = tmp_path / "audit.jsonl"
    assert export(engine, out) == 400
    assert verify_file(out, public_key_pem(signing_key)).ok


def test_a_second_log_instance_continues_the_same_tree(make_log: LogFactory) -> None:
    first = make_log(sth_every_entries=4)
    first.append([audit_event(n) for n in range(5)])
    second = make_log(sth_every_entries=4)  # another process, in effect
    [entry] = second.append([audit_event(5)])
    assert entry.index == 5
    [entry] = first.append([audit_event(6)])
    assert entry.index == 6
    assert first.inclusion_proof(6).root_hash == second.inclusion_proof(6).root_hash
    assert first.verify().ok


def test_search_filters_in_log_order(engine: Engine, make_log: LogFactory) -> None:
    log = make_log()
    pseudonym = pseudonymise_referral(uuid.uuid4(), b"p" * 32)
    before = datetime.now(UTC) - timedelta(seconds=1)
    log.append(
        [
            audit_event(0, referral_pseudonym=pseudonym, action="referral.accept"),
            audit_event(1, event_type=AuditEventType.AUTHORIZATION_DENY,
                        decision=AuditDecision.DENY, actor_subject="care-7",
                        actor_organisation="jellinek", actor_role="care_coordinator"),
            audit_event(2, referral_pseudonym=pseudonym, event_type=AuditEventType.QUERY),
        ]
    )  # fmt: skip
    with Session(engine) as session:
        found = log.search(session, referral_pseudonym=pseudonym)
        assert [e.index for e in found] == [0, 2]
        assert [e.index for e in log.search(session, decision="deny")] == [1]
        assert [e.index for e in log.search(session, organisation="jellinek")] == [1]
        assert [e.index for e in log.search(session, actor="care-7")] == [1]
        assert [e.index for e in log.search(session, action="referral.accept")] == [0]
        assert len(log.search(session, since=before)) == 3
        assert log.search(session, until=before) == []
        assert [e.index for e in log.search(session, offset=1, limit=1)] == [1]
        assert found[0].recorded_at.tzinfo is not None
        with pytest.raises(ValueError):
            log.search(session, limit=10_000)


def test_an_empty_append_writes_nothing(make_log: LogFactory) -> None:
    log = make_log()
    assert log.append([]) == []
    head = log.sign_tree_head()
    assert (head.tree_size, head.root_hash) == (0, merkle.EMPTY_ROOT.hex())


def test_unknown_fields_and_types_are_refused() -> None:
    with pytest.raises(ValueError):
        AuditEvent.model_validate({**audit_event(0).model_dump(), "name": "Jan Jansen"})
    with pytest.raises(ValueError):
        audit_event(0, event_type="gossip")


def test_proofs_from_the_stored_tree_agree_with_the_rfc_reference(make_log: LogFactory) -> None:
    # Uneven batches from two instances (two processes, in effect), so that the stored tree
    # is built across batch and process boundaries.
    first, second = make_log(), make_log()
    entries = []
    for number, size in enumerate((1, 2, 5, 1, 8, 3, 13, 1, 7)):
        log = first if number % 2 else second
        entries += log.append([audit_event(len(entries) + n) for n in range(size)])
    leaves = [bytes.fromhex(e.leaf_hash) for e in entries]
    n = len(leaves)
    for size in range(1, n + 1):
        prefix = leaves[:size]
        for index in range(size):
            proof = first.inclusion_proof(index, size)
            assert proof.root_hash == reference_mth(prefix).hex()
            assert proof.leaf_hash == prefix[index].hex()
            assert proof.path == [h.hex() for h in reference_path(index, prefix)]
        for m in range(0, size + 1):
            consistency = second.consistency_proof(m, size)
            assert (
                consistency.first_root
                == (reference_mth(prefix[:m]) if m else merkle.EMPTY_ROOT).hex()
            )
            expected = reference_subproof(m, prefix, True) if 0 < m < size else []
            assert consistency.path == [h.hex() for h in expected]
    assert second.sign_tree_head().root_hash == reference_mth(leaves).hex()


def test_a_proof_reads_a_logarithmic_number_of_stored_nodes(
    engine: Engine, make_log: LogFactory
) -> None:
    log = make_log()
    for start in range(0, 1000, 100):
        log.append([audit_event(n) for n in range(start, start + 100)])
    statements: list[tuple[str, int]] = []

    def record(
        conn: object, cursor: object, statement: str, parameters: object, *_: object
    ) -> None:
        size = len(parameters) if isinstance(parameters, tuple | list | dict) else 0
        statements.append((statement, size))

    event.listen(engine, "before_cursor_execute", record)
    try:
        log.inclusion_proof(517)
        log.consistency_proof(333, 1000)
        log.inclusion_proof(700, 777)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert not [s for s, _ in statements if "audit_entry" in s]  # no leaf list is read
    reads = [size for s, size in statements if "audit_tree_node" in s and " IN " in s]
    assert len(reads) == 3
    # log2(1000) < 10: a leaf, the root's peaks and the path, each O(log n)
    assert all(size <= 30 for size in reads), reads
