"""Witnesses cosign only heads that extend what they cosigned; forged cosignatures are caught."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from audit_factories import audit_event, execute_raw
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from services.audit import merkle
from services.audit.keys import key_id_of
from services.audit.log import AuditLog
from services.audit.models import canonical_json, tree_head_bytes
from services.audit.offline import export, public_key_pem, verify_file
from services.audit.verification import VerificationResult
from services.audit.witness import (
    Cosignature,
    InconsistentLog,
    TreeHead,
    Witness,
    create_witness_key,
    load_witness_key,
    store_cosignature,
)

LogFactory = Callable[..., AuditLog]


@pytest.fixture
def log(make_log: LogFactory) -> AuditLog:
    log = make_log()
    log.append([audit_event(n) for n in range(12)])
    return log


def witness_for(log: AuditLog, signing_key: Ed25519PrivateKey, tmp_path: Path) -> Witness:
    key_file = tmp_path / "witness-key.json"
    if not key_file.exists():
        create_witness_key(key_file)
    return Witness(
        load_witness_key(key_file),
        tmp_path / "witness-state.json",
        {log.key_id: signing_key.public_key()},
    )


def newest(log: AuditLog) -> TreeHead:
    return TreeHead.from_stored(log.tree_heads()[-1])


def cosign_newest(log: AuditLog, witness: Witness) -> Cosignature:
    """What `referral audit witness` does: the newest head and a proof from the last one."""
    head = newest(log)
    last = witness.last_head
    proof = [] if last is None else log.consistency_proof(last.tree_size, head.tree_size).path
    return witness.cosign(head, proof)


def forged_head(key: Ed25519PrivateKey, leaves: list[bytes], size: int) -> TreeHead:
    root = merkle.root(leaves[:size]).hex()
    signed_at = "2030-01-01T00:00:00.000000Z"
    message = tree_head_bytes(
        tree_size=size, root_hash=root, signed_at=signed_at, key_id=key_id_of(key)
    )
    return TreeHead(
        size, root, signed_at, key_id_of(key), base64.b64encode(key.sign(message)).decode()
    )


def test_a_witness_cosigns_heads_that_extend_the_last_one(
    log: AuditLog, signing_key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    witness = witness_for(log, signing_key, tmp_path)
    log.sign_tree_head()
    first = cosign_newest(log, witness)
    assert first.tree_size == 12 and first.witness_key_id == witness.key_id
    log.append([audit_event(n) for n in range(12, 20)])
    log.sign_tree_head()
    second = cosign_newest(log, witness)
    assert second.tree_size == 20
    assert witness.last_head is not None and witness.last_head.tree_size == 20
    public = load_witness_key(tmp_path / "witness-key.json").public_key()
    assert first.valid_under(public) and second.valid_under(public)


def test_a_witness_refuses_a_rollback(
    log: AuditLog, signing_key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    witness = witness_for(log, signing_key, tmp_path)
    older = log.sign_tree_head()
    log.append([audit_event(n) for n in range(12, 20)])
    log.sign_tree_head()
    cosign_newest(log, witness)
    with pytest.raises(InconsistentLog, match="rollback: the newest tree head has size 12"):
        witness.cosign(TreeHead.from_stored(older), [])
    assert witness.last_head is not None and witness.last_head.tree_size == 20


def test_a_witness_refuses_a_forked_history(
    log: AuditLog, signing_key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    # Whoever holds the database and the log's key rewrites entry 3 and signs a larger
    # head over the other history; the witness's consistency check refuses it.
    witness = witness_for(log, signing_key, tmp_path)
    log.sign_tree_head()
    cosign_newest(log, witness)
    leaves = [bytes.fromhex(log.inclusion_proof(i).leaf_hash) for i in range(12)]
    leaves[3] = merkle.leaf_hash(b"another history")
    leaves += [merkle.leaf_hash(b"more") for _ in range(4)]
    fork = forged_head(signing_key, leaves, 16)
    proof = [h.hex() for h in merkle.consistency_proof(12, leaves)]
    with pytest.raises(InconsistentLog, match="not consistent with the head at size 12"):
        witness.cosign(fork, proof)


def test_a_witness_refuses_a_head_of_an_unknown_key(
    log: AuditLog, signing_key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    witness = witness_for(log, signing_key, tmp_path)
    leaves = [bytes.fromhex(log.inclusion_proof(i).leaf_hash) for i in range(12)]
    with pytest.raises(InconsistentLog, match="signed by unknown key"):
        witness.cosign(forged_head(Ed25519PrivateKey.generate(), leaves, 12), [])
    assert witness.last_head is None


# -- cosignatures in an export -------------------------------------------------------------


@pytest.fixture
def witnessed_export(
    log: AuditLog, engine: Engine, signing_key: Ed25519PrivateKey, tmp_path: Path
) -> tuple[Path, Ed25519PrivateKey]:
    """An export whose newest head one witness cosigned (stored, then exported)."""
    witness = witness_for(log, signing_key, tmp_path)
    head = log.sign_tree_head()
    assert store_cosignature(engine, cosign_newest(log, witness))
    out = tmp_path / "export.jsonl"
    export(engine, out, head=head)
    return out, load_witness_key(tmp_path / "witness-key.json")


def verify_with_witnesses(
    path: Path, signing_key: Ed25519PrivateKey, witnesses: list[Ed25519PrivateKey], minimum: int
) -> VerificationResult:
    return verify_file(
        path,
        public_key_pem(signing_key),
        witness_keys=[w.public_key() for w in witnesses],
        min_witnesses=minimum,
    )


def rewrite(path: Path, change: Callable[[list[dict[str, Any]]], None]) -> Path:
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    change(lines)
    out = path.with_name("tampered.jsonl")
    out.write_bytes(b"".join(canonical_json(line) + b"\n" for line in lines))
    return out


def cosignature_line(lines: list[dict[str, Any]]) -> dict[str, Any]:
    [line] = [line for line in lines if line["type"] == "cosignature"]
    return line


def test_a_cosigned_export_meets_the_witness_requirement(
    witnessed_export: tuple[Path, Ed25519PrivateKey], signing_key: Ed25519PrivateKey
) -> None:
    path, witness = witnessed_export
    result = verify_with_witnesses(path, signing_key, [witness], 1)
    assert result.ok, result.reason
    assert result.heads[-1].cosigned_by == (key_id_of(witness),)


def test_too_few_witnesses_are_refused(
    witnessed_export: tuple[Path, Ed25519PrivateKey], signing_key: Ed25519PrivateKey
) -> None:
    path, witness = witnessed_export
    result = verify_with_witnesses(path, signing_key, [witness, Ed25519PrivateKey.generate()], 2)
    assert not result.ok
    assert result.reason == "no tree head carries 2 valid witness cosignature(s)"


def test_a_forged_witness_cosignature_is_caught(
    witnessed_export: tuple[Path, Ed25519PrivateKey], signing_key: Ed25519PrivateKey
) -> None:
    # The forger cannot sign as the witness; a signature by another key under the
    # witness's key id is caught, even when fewer witnesses would have sufficed.
    path, witness = witnessed_export

    def forge(lines: list[dict[str, Any]]) -> None:
        line = cosignature_line(lines)
        line["signature"] = base64.b64encode(Ed25519PrivateKey.generate().sign(b"x")).decode()

    for minimum in (0, 1):
        result = verify_with_witnesses(rewrite(path, forge), signing_key, [witness], minimum)
        assert not result.ok
        assert result.reason is not None
        assert result.reason.startswith(
            f"forged cosignature: witness {key_id_of(witness)!r} on the tree head at size 12"
        ), result.reason


def test_a_cosignature_moved_to_another_head_is_caught(
    witnessed_export: tuple[Path, Ed25519PrivateKey], signing_key: Ed25519PrivateKey
) -> None:
    path, witness = witnessed_export

    def move(lines: list[dict[str, Any]]) -> None:
        cosignature_line(lines)["tree_size"] = 5

    result = verify_with_witnesses(rewrite(path, move), signing_key, [witness], 1)
    assert not result.ok and result.reason is not None
    assert "forged cosignature" in result.reason


def test_a_cosignature_of_another_root_reveals_a_fork(
    witnessed_export: tuple[Path, Ed25519PrivateKey], signing_key: Ed25519PrivateKey
) -> None:
    # The witness really cosigned another root at the same size: the log showed two
    # histories, and the export carries the evidence.
    path, witness = witnessed_export

    def fork(lines: list[dict[str, Any]]) -> None:
        line = cosignature_line(lines)
        line["root_hash"] = "ab" * 32
        message = canonical_json(
            {
                "format": "referral-audit-cosignature/v1",
                "witness_key_id": line["witness_key_id"],
                "cosigned_at": line["cosigned_at"],
                "log_key_id": line["log_key_id"],
                "tree_size": line["tree_size"],
                "root_hash": line["root_hash"],
            }
        )
        line["signature"] = base64.b64encode(witness.sign(message)).decode()

    result = verify_with_witnesses(rewrite(path, fork), signing_key, [witness], 1)
    assert not result.ok and result.reason is not None
    assert "cosigned another root at size 12" in result.reason


def test_cosignatures_are_append_only(
    witnessed_export: tuple[Path, Ed25519PrivateKey], engine: Engine
) -> None:
    with pytest.raises(DBAPIError, match="append-only"):
        execute_raw(engine, "DELETE FROM audit_cosignature")
    with pytest.raises(DBAPIError, match="append-only"):
        execute_raw(engine, "UPDATE audit_cosignature SET root_hash = 'x'")
