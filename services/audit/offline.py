"""Offline audit: export the log as JSON lines and verify such a file with only a public key."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from sqlalchemy import Engine, select

from services.audit import merkle
from services.audit.keys import AuditPublicKey, key_id_of, load_public_keys, trusted_keys
from services.audit.log import ENTRY_TABLE, HEAD_TABLE, VERIFY_CHUNK_ROWS, AuditLog
from services.audit.models import SignedTreeHead, canonical_json, entry_fields
from services.audit.verification import HeadCoverage, VerificationResult, check_records
from services.audit.witness import Cosignature, TreeHead, count_witnesses, stored_cosignatures

__all__ = [
    "VerificationResult",
    "export",
    "export_signed",
    "public_key_pem",
    "verify_file",
]

ENTRY_LINE = "entry"
HEAD_LINE = "tree_head"
KEY_LINE = "audit_key"
COSIGNATURE_LINE = "cosignature"


def public_key_pem(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """The SubjectPublicKeyInfo PEM of the (public half of the) key."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def export(
    engine: Engine,
    out: Path,
    *,
    head: SignedTreeHead | None = None,
    keys: Sequence[AuditPublicKey] = (),
) -> int:
    """Write the audit keys, entries, cosignatures and signed heads as JSON lines.

    With `head`, the export stops at that head's size and ends with it, so every entry
    it holds is covered by a head; returns the entry count.
    """
    count = 0
    limit = None if head is None else head.tree_size
    with engine.connect() as conn, out.open("wb") as sink:
        # Heads first: entries only grow, so every exported head is covered by the entries.
        statement = select(HEAD_TABLE).order_by(HEAD_TABLE.c.tree_size, HEAD_TABLE.c.signed_at)
        if limit is not None:
            statement = statement.where(HEAD_TABLE.c.tree_size <= limit)
        heads = [
            TreeHead.from_stored(SignedTreeHead(**row._mapping)) for row in conn.execute(statement)
        ]
        if head is not None:
            final = TreeHead.from_stored(head)
            heads = [h for h in heads if (h.tree_size, h.key_id) != (final.tree_size, final.key_id)]
            heads.append(final)
        cosignatures = stored_cosignatures(conn, up_to=limit)
        for key in keys:
            sink.write(canonical_json({"type": KEY_LINE, **key.record()}) + b"\n")
        entries = select(ENTRY_TABLE).order_by(ENTRY_TABLE.c.index)
        if limit is not None:
            entries = entries.where(ENTRY_TABLE.c.index < limit)
        for row in conn.execution_options(yield_per=VERIFY_CHUNK_ROWS).execute(entries):
            mapping = row._mapping
            line = {"type": ENTRY_LINE, **entry_fields(mapping), "leaf_hash": mapping["leaf_hash"]}
            sink.write(canonical_json(line) + b"\n")
            count += 1
        for cosignature in cosignatures:
            sink.write(canonical_json({"type": COSIGNATURE_LINE, **cosignature.record()}) + b"\n")
        for tree_head in heads:
            sink.write(canonical_json({"type": HEAD_LINE, **tree_head.record()}) + b"\n")
    return count


def export_signed(log: AuditLog, engine: Engine, out: Path, keys: Sequence[AuditPublicKey]) -> int:
    """Sign a head over every entry now and export up to it, listing the audit keys."""
    return export(engine, out, head=log.sign_tree_head(), keys=keys)


def newest_head(path: Path) -> dict[str, Any]:
    """The last tree head of an export (an auditor keeps it to pass as a trusted head)."""
    return _read_lines(path).heads[-1]


class _MalformedFile(ValueError):
    pass


class _Lines:
    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []
        self.heads: list[dict[str, Any]] = []
        self.keys: list[AuditPublicKey] = []
        self.cosignatures: list[Cosignature] = []


def _read_lines(path: Path) -> _Lines:
    lines = _Lines()
    with path.open("rb") as source:
        for number, raw in enumerate(source, start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except ValueError as error:
                raise _MalformedFile(f"line {number} is not JSON") from error
            if not isinstance(record, dict):
                raise _MalformedFile(f"line {number} is not a JSON object")
            kind = record.get("type")
            try:
                if kind == ENTRY_LINE:
                    if lines.heads:
                        raise _MalformedFile(f"line {number}: entry after the tree heads")
                    lines.entries.append(record)
                elif kind == HEAD_LINE:
                    lines.heads.append(record)
                elif kind == KEY_LINE:
                    lines.keys.append(AuditPublicKey.from_record(record))
                elif kind == COSIGNATURE_LINE:
                    lines.cosignatures.append(Cosignature.from_record(record))
                else:
                    raise _MalformedFile(f"line {number} has unknown type {kind!r}")
            except _MalformedFile:
                raise
            except ValueError as error:
                raise _MalformedFile(f"line {number}: {error}") from error
    return lines


def verify_file(
    path: Path,
    public_key_pem: str,
    *,
    witness_keys: Sequence[Ed25519PublicKey] = (),
    min_witnesses: int = 0,
    trusted_head: Mapping[str, Any] | None = None,
) -> VerificationResult:
    """Verify an exported log from the file alone: leaves, roots, heads, keys, witnesses.

    `public_key_pem` holds the audit key(s) the auditor trusts; keys the export lists
    count only when endorsed from one of them. Every entry must lie under a verified
    head. With `trusted_head` (a head the auditor kept earlier) the export must extend
    it; with `min_witnesses` some head must carry that many valid witness cosignatures.
    """
    anchors = load_public_keys(public_key_pem)
    try:
        lines = _read_lines(path)
    except _MalformedFile as error:
        return VerificationResult(False, 0, 0, 0, str(error))
    keys = trusted_keys(lines.keys, anchors)

    def in_order() -> Iterator[dict[str, Any]]:
        yield from lines.entries

    # The export lists the keys oldest first; a head of a retired key may not come later.
    order = [key.key_id for key in lines.keys if key.key_id in keys]
    result, leaves = check_records(
        in_order(), lines.heads, keys.get, require_coverage=True, key_order=order
    )
    if not result.ok:
        return result

    def fail(reason: str, index: int | None = None) -> VerificationResult:
        return replace(result, ok=False, first_bad_index=index, reason=reason)

    if not lines.heads:
        return fail("the export has no signed tree head (an export ends with one)", 0)
    newest = TreeHead.from_record(lines.heads[-1])
    if trusted_head is not None:
        try:
            trusted = TreeHead.from_record(trusted_head)
        except ValueError:
            return fail("the trusted head is malformed")
        why = trusted.signed_by(keys)
        if why is not None:
            return fail(f"the trusted head: {why}")
        if trusted.tree_size > newest.tree_size:
            return fail(
                f"the export ends at size {newest.tree_size}, before the trusted head at size "
                f"{trusted.tree_size}: entries were cut off or the log was rolled back",
                newest.tree_size,
            )
        proof = merkle.consistency_proof(trusted.tree_size, leaves[: newest.tree_size])
        if not merkle.verify_consistency(
            trusted.tree_size,
            newest.tree_size,
            bytes.fromhex(trusted.root_hash),
            bytes.fromhex(newest.root_hash),
            proof,
        ):
            return fail(
                f"the export is not consistent with the trusted head at size "
                f"{trusted.tree_size}: history was rewritten or rolled back",
                0,
            )

    # Every cosignature of a witness the auditor names must hold, counted or not.
    witnesses = {key_id_of(key): key for key in witness_keys}
    roots = {(h.tree_size, h.key_id): h.root_hash for h in map(TreeHead.from_record, lines.heads)}
    for cosignature in lines.cosignatures:
        key = witnesses.get(cosignature.witness_key_id)
        if key is None:
            continue
        if not cosignature.valid_under(key):
            return fail(
                f"forged cosignature: witness {cosignature.witness_key_id!r} on the tree head "
                f"at size {cosignature.tree_size} does not verify"
            )
        root = roots.get((cosignature.tree_size, cosignature.log_key_id))
        if root is None:
            return fail(
                f"witness {cosignature.witness_key_id!r} cosigned a tree head at size "
                f"{cosignature.tree_size} that is not in the export"
            )
        if root != cosignature.root_hash:
            return fail(
                f"witness {cosignature.witness_key_id!r} cosigned another root at size "
                f"{cosignature.tree_size}: the log showed different histories (a fork)"
            )
    coverage: list[HeadCoverage] = []
    witnessed = 0
    for record, head_coverage in zip(lines.heads, result.heads, strict=True):
        valid = count_witnesses(TreeHead.from_record(record), lines.cosignatures, witnesses)
        coverage.append(replace(head_coverage, cosigned_by=tuple(valid)))
        if min_witnesses and len(valid) >= min_witnesses:
            witnessed = head_coverage.tree_size
    result = replace(result, heads=tuple(coverage))
    if min_witnesses and not witnessed:
        return fail(f"no tree head carries {min_witnesses} valid witness cosignature(s)")
    return result
