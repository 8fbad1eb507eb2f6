"""Tampering with the stored or exported log is caught, at the right entry, online and offline."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from audit_factories import audit_event, execute_raw, quoted_index, triggers_disabled
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine, delete, insert, select

from services.audit import merkle
from services.audit.keys import AuditKeyFile, key_id_of
from services.audit.log import AuditLog
from services.audit.models import (
    AUDIT_ENTRY_TABLE,
    AUDIT_TREE_HEAD_TABLE,
    AuditEntry,
    canonical_json,
    compute_leaf_hash,
    format_timestamp,
    tree_head_bytes,
)
from services.audit.offline import export, public_key_pem, verify_file
from services.audit.verification import VerificationResult

LogFactory = Callable[..., AuditLog]
ENTRIES = 35  # signed heads at 10, 20 and 30; entries 30..34 not yet under a head


@pytest.fixture
def log(make_log: LogFactory) -> AuditLog:
    """A log of 35 entries with heads signed at sizes 10, 20 and 30."""
    log = make_log(sth_every_entries=10)
    for number in range(ENTRIES):
        log.append([audit_event(number)])
    assert [h.tree_size for h in log.tree_heads()] == [10, 20, 30]
    return log


def both_verdicts(
    log: AuditLog, engine: Engine, key: Ed25519PrivateKey, tmp_path: Path
) -> tuple[VerificationResult, VerificationResult]:
    """What `verify()` says about the database and `verify_file` about its export."""
    out = tmp_path / "export.jsonl"
    export(engine, out)
    return log.verify(), verify_file(out, public_key_pem(key))


def assert_caught(
    log: AuditLog,
    engine: Engine,
    key: Ed25519PrivateKey,
    tmp_path: Path,
    index: int,
    reason: str,
) -> None:
    for result in both_verdicts(log, engine, key, tmp_path):
        assert not result.ok
        assert result.first_bad_index == index, result.reason
        assert result.reason is not None and reason in result.reason


def entries_of(engine: Engine) -> list[AuditEntry]:
    with engine.connect() as conn:
        rows = conn.execute(select(AUDIT_ENTRY_TABLE).order_by(AUDIT_ENTRY_TABLE.c.index))
        return [AuditEntry(**row._mapping) for row in rows]


def rewrite_from(engine: Engine, start: int, entries: list[AuditEntry]) -> None:
    """Replace every entry from `start` on, as a forger with table rights would."""
    with triggers_disabled(engine), engine.begin() as conn:
        conn.execute(delete(AUDIT_ENTRY_TABLE).where(AUDIT_ENTRY_TABLE.c.index >= start))
        columns = [c.name for c in AUDIT_ENTRY_TABLE.columns]
        conn.execute(
            insert(AUDIT_ENTRY_TABLE), [{c: getattr(e, c) for c in columns} for e in entries]
        )


def test_an_untouched_log_verifies(
    log: AuditLog, engine: Engine, signing_key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    # Online, entries after the newest head are normal (the next head will cover them).
    online = log.verify()
    assert (online.ok, online.entries, online.tree_heads, online.covered) == (True, ENTRIES, 3, 30)
    # An export ends with a head signed when it is made, so it covers every entry.
    out = tmp_path / "export.jsonl"
    export(engine, out, head=log.sign_tree_head())
    result = verify_file(out, public_key_pem(signing_key))
    assert result.ok, result.reason
    assert (result.entries, result.tree_heads, result.covered) == (ENTRIES, 4, ENTRIES)
    assert [(h.tree_size, h.new_entries) for h in result.heads] == [
        (10, 10),
        (20, 10),
        (30, 10),
        (ENTRIES, ENTRIES - 30),
    ]


def test_a_changed_field_is_caught_at_its_entry(
    log: AuditLog, engine: Engine, signing_key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    with triggers_disabled(engine):
        execute_raw(
            engine,
            f"UPDATE audit_entry SET actor_subject = 'someone-else' "
            f"WHERE {quoted_index(engine)} = 7",
        )
    assert_caught(log, engine, signing_key, tmp_path, 7, "a field was changed")


def test_a_changed_field_beyond_the_last_head_is_caught(
    log: AuditLog, engine: Engine, signing_key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    with triggers_disabled(engine):
        execute_raw(
            engine,
            f"UPDATE audit_entry SET decision = 'deny' WHERE {quoted_index(engine)} = 33",
        )
    assert_caught(log, engine, signing_key, tmp_path, 33, "a field was changed")


def test_a_deleted_entry_is_caught_at_its_index(
    log: AuditLog, engine: Engine, signing_key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    with triggers_disabled(engine):
        execute_raw(engine, f"DELETE FROM audit_entry WHERE {quoted_index(engine)} = 12")
    assert_caught(log, engine, signing_key, tmp_path, 12, "expected entry 12")


def test_deleting_the_newest_signed_entries_is_caught(
    log: AuditLog, engine: Engine, signing_key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    with triggers_disabled(engine):
        execute_raw(engine, f"DELETE FROM audit_entry WHERE {quoted_index(engine)} >= 28")
    assert_caught(log, engine, signing_key, tmp_path, 28, "missing")


def test_reordered_entries_are_caught_at_the_first_moved_one(
    log: AuditLog, engine: Engine, signing_key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    index = quoted_index(engine)
    with triggers_disabled(engine):
        execute_raw(engine, f"UPDATE audit_entry SET {index} = -1 WHERE {index} = 15")
        execute_raw(engine, f"UPDATE audit_entry SET {index} = 15 WHERE {index} = 16")
        execute_raw(engine, f"UPDATE audit_entry SET {index} = 16 WHERE {index} = -1")
    assert_caught(log, engine, signing_key, tmp_path, 15, "entry 15")


def test_a_forged_entry_with_rewritten_hashes_is_caught_by_the_signed_heads(
    log: AuditLog, engine: Engine, signing_key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    # The forger inserts an entry at 20, renumbers the rest and recomputes every leaf
    # hash, so each row looks right on its own; only the head signed at 30 disagrees.
    entries = entries_of(engine)
    forged = entries[3].model_copy(update={"actor_subject": "forger", "id": uuid.uuid4()})
    tail = [forged, *entries[20:]]
    for offset, entry in enumerate(tail):
        entry.index = 20 + offset
        entry.leaf_hash = compute_leaf_hash(entry).hex()
    rewrite_from(engine, 20, tail)
    assert_caught(log, engine, signing_key, tmp_path, 20, "root at signed size 30")


def test_a_forged_entry_appended_with_a_wrong_hash_is_caught(
    log: AuditLog, engine: Engine, signing_key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    forged = entries_of(engine)[4].model_copy(update={"index": ENTRIES, "id": uuid.uuid4()})
    rewrite_from(engine, ENTRIES, [forged])
    assert_caught(log, engine, signing_key, tmp_path, ENTRIES, "leaf hash")


def test_a_head_signed_with_another_key_is_caught(
    log: AuditLog, engine: Engine, signing_key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    # The forger rewrites entry 25 with a valid leaf hash and re-signs the head at 30
    # with a key of their own, so the roots agree but the signature does not.
    entries = entries_of(engine)
    entries[25].actor_role = "judge"
    entries[25].leaf_hash = compute_leaf_hash(entries[25]).hex()
    rewrite_from(engine, 25, entries[25:])
    root = merkle.root([bytes.fromhex(e.leaf_hash) for e in entries[:30]]).hex()
    [head] = [h for h in log.tree_heads() if h.tree_size == 30]
    signed_at = format_timestamp(head.signed_at)
    message = tree_head_bytes(tree_size=30, root_hash=root, signed_at=signed_at, key_id=head.key_id)
    signature = base64.b64encode(Ed25519PrivateKey.generate().sign(message)).decode()
    with triggers_disabled(engine), engine.begin() as conn:
        conn.execute(delete(AUDIT_TREE_HEAD_TABLE).where(AUDIT_TREE_HEAD_TABLE.c.tree_size == 30))
        conn.execute(
            insert(AUDIT_TREE_HEAD_TABLE),
            [{**head.model_dump(), "root_hash": root, "signature": signature}],
        )
    assert_caught(log, engine, signing_key, tmp_path, 20, "invalid signature")


def test_a_file_checked_against_another_key_fails_at_the_first_head(
    log: AuditLog, engine: Engine, tmp_path: Path
) -> None:
    out = tmp_path / "export.jsonl"
    export(engine, out)
    result = verify_file(out, public_key_pem(Ed25519PrivateKey.generate()))
    assert (result.ok, result.first_bad_index) == (False, 0)
    assert result.reason is not None and "unknown key" in result.reason


# -- tampering with the exported file itself ---------------------------------------------


def exported_lines(engine: Engine, tmp_path: Path) -> list[dict[str, Any]]:
    out = tmp_path / "clean.jsonl"
    export(engine, out)
    return [json.loads(line) for line in out.read_text().splitlines()]


def forged_line(original: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A copy of an entry line with changes and a correctly recomputed leaf hash."""
    fields = {k: v for k, v in original.items() if k not in ("type", "leaf_hash")}
    fields.update(changes, id=str(uuid.uuid4()))
    leaf_hash = merkle.leaf_hash(canonical_json(fields)).hex()
    return {"type": "entry", **fields, "leaf_hash": leaf_hash}


def verify_lines(
    lines: list[dict[str, Any]], key: Ed25519PrivateKey, tmp_path: Path
) -> VerificationResult:
    out = tmp_path / "tampered.jsonl"
    out.write_bytes(b"".join(canonical_json(line) + b"\n" for line in lines))
    return verify_file(out, public_key_pem(key))


def test_the_export_has_one_typed_line_per_entry_and_head(
    log: AuditLog, engine: Engine, tmp_path: Path
) -> None:
    lines = exported_lines(engine, tmp_path)
    assert [line["type"] for line in lines] == ["entry"] * ENTRIES + ["tree_head"] * 3
    assert [line["index"] for line in lines[:ENTRIES]] == list(range(ENTRIES))
    assert {"leaf_hash", "recorded_at", "referral_pseudonym"} <= set(lines[0])


@pytest.mark.parametrize(
    ("tamper", "index", "reason"),
    [
        pytest.param(
            lambda lines: lines[9].update(purpose_of_use="curiosity"), 9, "changed", id="field"
        ),
        pytest.param(lambda lines: lines.pop(17), 17, "expected entry 17", id="deleted"),
        pytest.param(
            lambda lines: lines.insert(5, lines.pop(4)), 4, "expected entry 4", id="reordered"
        ),
        pytest.param(
            lambda lines: lines.insert(22, forged_line(lines[2], index=22)),
            22,
            "appears twice",
            id="inserted",
        ),
        pytest.param(
            lambda lines: lines.insert(22, {**lines[2], "index": 22}),
            22,
            "changed",
            id="inserted-stale-hash",
        ),
        pytest.param(
            lambda lines: lines.insert(22, {**lines[2], "index": 3}),
            22,
            "expected entry 22",
            id="inserted-copy",
        ),
        pytest.param(
            lambda lines: lines[-1].update(root_hash=lines[-2]["root_hash"]),
            20,
            "invalid signature",
            id="head-root",
        ),
        pytest.param(
            lambda lines: lines.append({**lines[-1], "tree_size": 40}),
            30,
            "invalid signature",
            id="head-size",
        ),
        pytest.param(lambda lines: lines.append({"type": "note"}), 0, "unknown type", id="junk"),
        pytest.param(
            lambda lines: lines[-1].pop("signed_at"), 20, "invalid signature", id="head-field"
        ),
    ],
)
def test_tampering_with_the_file_is_caught(
    log: AuditLog,
    engine: Engine,
    signing_key: Ed25519PrivateKey,
    tmp_path: Path,
    tamper: Callable[[list[dict[str, Any]]], object],
    index: int,
    reason: str,
) -> None:
    lines = exported_lines(engine, tmp_path)
    tamper(lines)
    result = verify_lines(lines, signing_key, tmp_path)
    assert not result.ok
    assert result.first_bad_index == index, result.reason
    assert result.reason is not None and reason in result.reason


# -- sound verification of an export: coverage, head order, keys, a trusted head ---------


def signed_export_lines(log: AuditLog, engine: Engine, tmp_path: Path) -> list[dict[str, Any]]:
    """The lines of an export made as `referral audit export` makes it (a head at 35)."""
    out = tmp_path / "signed.jsonl"
    export(engine, out, head=log.sign_tree_head())
    return [json.loads(line) for line in out.read_text().splitlines()]


def head_lines(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in lines if line["type"] == "tree_head"]


def sign_head(key: Ed25519PrivateKey, entries: list[dict[str, Any]], size: int) -> dict[str, Any]:
    """A head over the first `size` entry lines, signed with `key` (a forger's or a stolen one)."""
    root = merkle.root([bytes.fromhex(e["leaf_hash"]) for e in entries[:size]]).hex()
    key_id, signed_at = key_id_of(key), "2030-01-01T00:00:00.000000Z"
    message = tree_head_bytes(tree_size=size, root_hash=root, signed_at=signed_at, key_id=key_id)
    signature = base64.b64encode(key.sign(message)).decode()
    return {
        "type": "tree_head",
        "tree_size": size,
        "root_hash": root,
        "signed_at": signed_at,
        "key_id": key_id,
        "signature": signature,
    }


def verify_against(
    lines: list[dict[str, Any]],
    key: Ed25519PrivateKey,
    tmp_path: Path,
    trusted_head: dict[str, Any] | None = None,
) -> VerificationResult:
    out = tmp_path / "tampered.jsonl"
    out.write_bytes(b"".join(canonical_json(line) + b"\n" for line in lines))
    return verify_file(out, public_key_pem(key), trusted_head=trusted_head)


def assert_refused(result: VerificationResult, index: int | None, reason: str) -> None:
    assert not result.ok
    assert result.reason is not None and reason in result.reason, result.reason
    assert result.first_bad_index == index, result.reason


def test_a_signed_export_ends_with_a_head_over_every_entry(
    log: AuditLog, engine: Engine, signing_key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    lines = signed_export_lines(log, engine, tmp_path)
    assert lines[-1]["type"] == "tree_head" and lines[-1]["tree_size"] == ENTRIES
    assert [h["tree_size"] for h in head_lines(lines)] == [10, 20, 30, ENTRIES]
    assert verify_against(lines, signing_key, tmp_path).ok


def test_an_entry_appended_after_the_export_head_is_left_out(
    log: AuditLog, engine: Engine, signing_key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    head = log.sign_tree_head()
    log.append([audit_event(99)])  # another process appends while the export runs
    out = tmp_path / "export.jsonl"
    assert export(engine, out, head=head) == ENTRIES
    assert verify_file(out, public_key_pem(signing_key)).ok


@pytest.mark.parametrize(
    ("tamper", "index", "reason"),
    [
        pytest.param(
            lambda lines: [line for line in lines if line["type"] != "tree_head"],
            0,
            "entries 0..34 are not covered: no signed tree head",
            id="no-head-at-all",
        ),
        pytest.param(
            lambda lines: lines[:-1],
            30,
            "entries 30..34 are not covered",
            id="newest-head-removed",
        ),
        pytest.param(
            lambda lines: [
                *(
                    forged_line(line, actor_subject="nobody") if line.get("index") == 5 else line
                    for line in lines
                    if line["type"] == "entry"
                ),
            ],
            0,
            "not covered",
            id="rewritten-entry-and-no-head",
        ),
    ],
)
def test_entries_no_verified_head_covers_are_refused(
    log: AuditLog,
    engine: Engine,
    signing_key: Ed25519PrivateKey,
    tmp_path: Path,
    tamper: Callable[[list[dict[str, Any]]], list[dict[str, Any]]],
    index: int,
    reason: str,
) -> None:
    lines = tamper(signed_export_lines(log, engine, tmp_path))
    assert_refused(verify_against(lines, signing_key, tmp_path), index, reason)


def test_a_duplicated_head_is_refused(
    log: AuditLog, engine: Engine, signing_key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    lines = signed_export_lines(log, engine, tmp_path)
    lines.append(dict(lines[-1]))
    assert_refused(verify_against(lines, signing_key, tmp_path), ENTRIES, "repeats")


def test_a_head_replaced_by_a_copy_of_an_older_one_is_refused(
    log: AuditLog, engine: Engine, signing_key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    lines = signed_export_lines(log, engine, tmp_path)
    heads = head_lines(lines)
    position = lines.index(heads[2])  # the head at 30 becomes a copy of the head at 10
    lines[position] = dict(heads[0])
    assert_refused(
        verify_against(lines, signing_key, tmp_path), 20, "tree head at size 10 goes back"
    )


def test_a_head_signed_by_an_unknown_key_is_refused(
    log: AuditLog, engine: Engine, signing_key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    # The forger rewrites entry 33 and signs a head of their own over everything; they
    # even list their key in the export, unendorsed by any key the auditor trusts.
    lines = signed_export_lines(log, engine, tmp_path)
    entries = [line for line in lines if line["type"] == "entry"]
    entries[33] = forged_line(entries[33], index=33, decision="deny")
    forger = Ed25519PrivateKey.generate()
    public = forger.public_key().public_bytes_raw()
    listed = {
        "type": "audit_key",
        "key_id": key_id_of(forger),
        "public_key": base64.b64encode(public).decode(),
        "created_at": "2030-01-01T00:00:00.000000Z",
        "endorsed_by": key_id_of(signing_key),
        "endorsement": base64.b64encode(forger.sign(b"not the real key's word")).decode(),
    }
    tampered = [listed, *entries, *head_lines(lines)[:3], sign_head(forger, entries, ENTRIES)]
    assert_refused(
        verify_against(tampered, signing_key, tmp_path),
        30,
        f"tree head at size {ENTRIES} is signed by unknown key {key_id_of(forger)!r}",
    )


def test_truncation_is_caught_with_a_trusted_head(
    log: AuditLog, engine: Engine, signing_key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    # The auditor kept the head at 35. Later the newest entries are cut off together
    # with that head: the file alone is consistent, the trusted head is not covered.
    kept = head_lines(signed_export_lines(log, engine, tmp_path))[-1]
    log.append([audit_event(n) for n in range(ENTRIES, 40)])
    lines = signed_export_lines(log, engine, tmp_path)
    cut = [
        line
        for line in lines
        if (line["type"] == "entry" and line["index"] < 30)
        or (line["type"] == "tree_head" and line["tree_size"] <= 30)
    ]
    assert verify_against(cut, signing_key, tmp_path).ok  # alone it looks intact
    assert_refused(
        verify_against(cut, signing_key, tmp_path, trusted_head=kept),
        30,
        f"the export ends at size 30, before the trusted head at size {ENTRIES}",
    )
    # the uncut export extends the kept head
    assert verify_against(lines, signing_key, tmp_path, trusted_head=kept).ok


def test_a_rollback_with_a_stolen_key_is_caught_with_a_trusted_head(
    log: AuditLog, engine: Engine, signing_key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    # Whoever holds the database and the signing key rolls back to the head at 20 and
    # writes another history from there, signing new heads: only the kept head tells.
    lines = signed_export_lines(log, engine, tmp_path)
    kept = head_lines(lines)[-1]
    entries = [line for line in lines if line["type"] == "entry"]
    rewritten = entries[:20] + [forged_line(e, actor_subject="someone-else") for e in entries[20:]]
    forged = [*rewritten, *head_lines(lines)[:2], sign_head(signing_key, rewritten, ENTRIES + 0)]
    assert verify_against(forged, signing_key, tmp_path).ok  # alone it looks intact
    assert_refused(
        verify_against(forged, signing_key, tmp_path, trusted_head=kept),
        0,
        f"not consistent with the trusted head at size {ENTRIES}",
    )


def test_a_trusted_head_must_itself_be_signed_by_a_trusted_key(
    log: AuditLog, engine: Engine, signing_key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    lines = signed_export_lines(log, engine, tmp_path)
    entries = [line for line in lines if line["type"] == "entry"]
    kept = sign_head(Ed25519PrivateKey.generate(), entries, 20)
    assert_refused(
        verify_against(lines, signing_key, tmp_path, trusted_head=kept),
        None,
        "the trusted head: tree head at size 20 is signed by unknown key",
    )


def test_heads_of_an_earlier_key_still_verify_after_rotation(
    make_log: LogFactory, engine: Engine, tmp_path: Path
) -> None:
    keys = AuditKeyFile.create(tmp_path / "audit-key.json")
    first = keys.signing_key()
    old = make_log(signing_key=first, key_id=keys.key_id)
    old.append([audit_event(n) for n in range(10)])
    old.sign_tree_head()
    keys.rotate()
    assert [k.key_id for k in keys.chain()] == [key_id_of(first), keys.key_id]
    new = make_log(
        signing_key=keys.signing_key(), key_id=keys.key_id, verify_keys=keys.verify_keys()
    )
    new.append([audit_event(n) for n in range(10, 15)])
    out = tmp_path / "export.jsonl"
    export(engine, out, head=new.sign_tree_head(), keys=keys.chain())
    assert new.verify().ok
    # An auditor who kept the first key follows the endorsement to the new one...
    result = verify_file(out, public_key_pem(first))
    assert result.ok, result.reason
    assert [(h.tree_size, h.key_id) for h in result.heads] == [
        (10, key_id_of(first)),
        (15, keys.key_id),
    ]
    # ... but not when the endorsement in the export was tampered with.
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    lines[1]["created_at"] = "2031-01-01T00:00:00.000000Z"
    assert_refused(verify_against(lines, first, tmp_path), 10, "signed by unknown key")


def test_a_retired_key_cannot_extend_the_log(
    make_log: LogFactory, engine: Engine, tmp_path: Path
) -> None:
    # The first key leaked after the rotation: a head it signs after one of the new
    # key's is refused, though its signature is good and the key is in the chain.
    keys = AuditKeyFile.create(tmp_path / "audit-key.json")
    leaked = keys.signing_key()
    old = make_log(signing_key=leaked, key_id=keys.key_id)
    old.append([audit_event(n) for n in range(10)])
    old.sign_tree_head()
    keys.rotate()
    new = make_log(
        signing_key=keys.signing_key(), key_id=keys.key_id, verify_keys=keys.verify_keys()
    )
    new.append([audit_event(n) for n in range(10, 15)])
    out = tmp_path / "export.jsonl"
    export(engine, out, head=new.sign_tree_head(), keys=keys.chain())
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    entries = [line for line in lines if line["type"] == "entry"]
    entries.append(forged_line(entries[3], index=15))
    tampered = [
        *[line for line in lines if line["type"] == "audit_key"],
        *entries,
        *head_lines(lines),
        sign_head(leaked, entries, 16),
    ]
    assert_refused(
        verify_against(tampered, leaked, tmp_path),
        15,
        f"tree head at size 16 is signed by key {key_id_of(leaked)!r}, retired before key "
        f"{keys.key_id!r} signed the head at size 15",
    )


def test_an_empty_file_is_not_an_export(signing_key: Ed25519PrivateKey, tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert_refused(verify_file(empty, public_key_pem(signing_key)), 0, "no signed tree head")
