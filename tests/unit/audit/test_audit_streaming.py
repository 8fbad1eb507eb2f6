"""Verification streams the log: heads are checked as the entries reach their sizes, and
memory holds the leaves since the last signed size, never the whole log."""

from __future__ import annotations

import base64
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from audit_factories import audit_event
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.audit import merkle, verification
from services.audit.models import entry_fields, format_timestamp, new_entry, tree_head_bytes

KEY = Ed25519PrivateKey.generate()
NOW = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
TEMPLATE = entry_fields(new_entry(audit_event(0), index=0, recorded_at=NOW))


def records(count: int) -> Iterator[dict[str, Any]]:
    """Entries of a log, made as they are read (no leaf hash stored: it is recomputed)."""
    for index in range(count):
        yield {**TEMPLATE, "index": index}


def leaf(index: int) -> bytes:
    return merkle.leaf_hash(verification.canonical_json({**TEMPLATE, "index": index}))


def head(size: int, root: bytes | None = None) -> dict[str, Any]:
    root_hash = (root or merkle.root([leaf(i) for i in range(size)])).hex()
    signed_at = format_timestamp(NOW)
    message = tree_head_bytes(tree_size=size, root_hash=root_hash, signed_at=signed_at, key_id="k")
    signature = base64.b64encode(KEY.sign(message)).decode()
    return {"tree_size": size, "root_hash": root_hash, "signed_at": signed_at, "key_id": "k",
            "signature": signature}  # fmt: skip


def key_for(key_id: str) -> Any:
    return KEY.public_key() if key_id == "k" else None


@pytest.fixture
def small_flush(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(verification, "FLUSH_LEAVES", 1024)


def test_heads_across_flushes_are_each_checked(small_flush: None) -> None:
    heads = [head(1), head(1024), head(4097), head(5000)]
    result = verification.verify_records(records(6000), heads, key_for)
    assert result.ok, result.reason
    assert [(h.tree_size, h.new_entries) for h in result.heads] == [
        (1, 1), (1024, 1023), (4097, 3073), (5000, 903)
    ]  # fmt: skip
    assert (result.entries, result.covered) == (6000, 5000)
    wrong = [head(1024), head(4097, root=leaf(0)), head(5000)]
    result = verification.verify_records(records(6000), wrong, key_for)
    assert not result.ok and result.first_bad_index == 1024, result.reason
    assert "root at signed size 4097 does not match" in (result.reason or "")
    assert result.entries == 6000  # every entry is still counted
    missing = verification.verify_records(records(3000), [head(1024), head(3001)], key_for)
    assert missing.reason == "tree head at size 3001 but entries from 3000 are missing"


def test_verification_holds_no_more_than_the_leaves_since_the_last_head(small_flush: None) -> None:
    tracemalloc.start()
    try:
        result = verification.verify_records(records(30_000), [head(10)], key_for)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.ok and result.entries == 30_000
    # 30,000 leaf hashes alone would take over 2 MB; the flushed tree keeps O(log n)
    assert peak < 1_000_000, peak
    # an offline verifier that needs the leaves (a consistency proof) still gets them all
    _, leaves = verification.check_records(records(3000), [head(3000)], key_for)
    assert leaves == [leaf(i) for i in range(3000)]
