"""Offline audit: export the log as JSON lines and verify such a file with only a public key."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from sqlalchemy import Engine, select

from services.audit.log import ENTRY_TABLE, HEAD_TABLE, VERIFY_CHUNK_ROWS
from services.audit.models import canonical_json, entry_fields, format_timestamp
from services.audit.verification import VerificationResult, verify_records

__all__ = ["VerificationResult", "export", "public_key_pem", "verify_file"]

ENTRY_LINE = "entry"
HEAD_LINE = "tree_head"


def public_key_pem(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """The SubjectPublicKeyInfo PEM of the (public half of the) key."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def export(engine: Engine, out: Path) -> int:
    """Write every entry then every signed head as JSON lines; returns the entry count."""
    count = 0
    with engine.connect() as conn, out.open("wb") as sink:
        # Heads first: entries only grow, so every exported head is covered by the entries.
        heads = list(
            conn.execute(select(HEAD_TABLE).order_by(HEAD_TABLE.c.tree_size, HEAD_TABLE.c.key_id))
        )
        rows = conn.execution_options(yield_per=VERIFY_CHUNK_ROWS).execute(
            select(ENTRY_TABLE).order_by(ENTRY_TABLE.c.index)
        )
        for row in rows:
            mapping = row._mapping
            line = {"type": ENTRY_LINE, **entry_fields(mapping), "leaf_hash": mapping["leaf_hash"]}
            sink.write(canonical_json(line) + b"\n")
            count += 1
        for head in heads:
            mapping = head._mapping
            line = {
                "type": HEAD_LINE,
                "tree_size": mapping["tree_size"],
                "root_hash": mapping["root_hash"],
                "signed_at": format_timestamp(mapping["signed_at"]),
                "key_id": mapping["key_id"],
                "signature": mapping["signature"],
            }
            sink.write(canonical_json(line) + b"\n")
    return count


class _MalformedFile(ValueError):
    pass


def _read_lines(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    entries: list[dict[str, Any]] = []
    heads: list[dict[str, Any]] = []
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
            if kind == ENTRY_LINE:
                if heads:
                    raise _MalformedFile(f"line {number}: entry after the tree heads")
                entries.append(record)
            elif kind == HEAD_LINE:
                heads.append(record)
            else:
                raise _MalformedFile(f"line {number} has unknown type {kind!r}")
    return entries, heads


def verify_file(path: Path, public_key_pem: str) -> VerificationResult:
    """Verify an exported log from the file alone: leaves, roots and head signatures."""
    loaded = serialization.load_pem_public_key(public_key_pem.encode("ascii"))
    if not isinstance(loaded, Ed25519PublicKey):
        raise ValueError("the audit log public key must be an Ed25519 key")
    key: Ed25519PublicKey = loaded
    try:
        entries, heads = _read_lines(path)
    except _MalformedFile as error:
        return VerificationResult(False, 0, 0, 0, str(error))

    def in_order() -> Iterator[dict[str, Any]]:
        yield from entries

    # The file names key ids, but the auditor trusts exactly the key they were given.
    return verify_records(in_order(), heads, lambda _key_id: key)
