"""Cost of the tamper-evident audit log against bare SHA-256 over the same bytes.

Two measurements, each compared with `hashlib.sha256` over the same canonical entry bytes
in the same run: (1) group-committed appends from 8 threads into a temporary SQLite file,
(2) full verification of 1,000,000 entries held in memory (leaf hashes plus the root).
Run with `python bench/audit_bench.py`; `main()` returns the numbers.
"""

from __future__ import annotations

import hashlib
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlmodel import SQLModel

# Run as a script, the project root is not on the path yet.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from services.audit import merkle  # noqa: E402
from services.audit.log import AuditLog  # noqa: E402
from services.audit.models import (  # noqa: E402
    AUDIT_ENTRY_TABLE,
    AUDIT_TREE_HEAD_TABLE,
    AuditDecision,
    AuditEntry,
    AuditEvent,
    AuditEventType,
    canonical_bytes,
    install_append_only_triggers,
    new_entry,
)
from services.db import make_engine  # noqa: E402

THREADS = 8
APPENDS_PER_THREAD = 250
VERIFY_ENTRIES = 1_000_000


def event(number: int) -> AuditEvent:
    """A typical authorisation decision on one referral."""
    return AuditEvent(
        event_type=AuditEventType.AUTHORIZATION_PERMIT,
        actor_subject=f"care-coordinator-{number % 97}",
        actor_organisation="jellinek-amsterdam",
        actor_role="care_coordinator",
        action="referral.accept",
        referral_pseudonym=f"rp_{number:032x}",
        categories=("identity", "contact", "offence_summary"),
        decision=AuditDecision.PERMIT,
        policy_ids=("care-accepts-offer", "consent-given"),
        purpose_of_use="treatment",
        request_id=f"req-{number:08d}",
        trace_id=f"{number:032x}",
    )


def sha256_seconds(items: list[bytes]) -> float:
    """Time of one bare SHA-256 per item."""
    sha256 = hashlib.sha256
    start = time.perf_counter()
    for item in items:
        sha256(item).digest()
    return time.perf_counter() - start


def bench_append() -> dict[str, float]:
    """Appends of one event per call from 8 threads, batched by group commit."""
    with tempfile.TemporaryDirectory() as directory:
        engine = make_engine(f"sqlite:///{directory}/audit.db")
        with engine.begin() as conn:
            SQLModel.metadata.create_all(conn, tables=[AUDIT_ENTRY_TABLE, AUDIT_TREE_HEAD_TABLE])
            install_append_only_triggers(conn)
        log = AuditLog(engine, Ed25519PrivateKey.generate(), "bench", sth_every_entries=1000)
        barrier = threading.Barrier(THREADS + 1)

        def writer(thread: int) -> None:
            barrier.wait()
            for number in range(APPENDS_PER_THREAD):
                log.append([event(thread * APPENDS_PER_THREAD + number)])

        threads = [threading.Thread(target=writer, args=(t,)) for t in range(THREADS)]
        for thread in threads:
            thread.start()
        barrier.wait()
        start = time.perf_counter()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - start
        heads = len(log.tree_heads())
        ok = log.verify().ok
        engine.dispose()
    total = THREADS * APPENDS_PER_THREAD
    sample = [canonical_bytes(e) for e in _sample_entries(total)]
    baseline = sha256_seconds(sample)
    return {
        "append_entries": total,
        "append_entries_per_second": total / elapsed,
        "append_seconds": elapsed,
        "append_sha256_seconds": baseline,
        "append_vs_sha256": elapsed / baseline,
        "append_tree_heads": heads,
        "append_verified": float(ok),
    }


def _sample_entries(count: int) -> list[AuditEntry]:
    # Entries like the appended ones, built without a database.
    now = datetime.now(UTC)
    return [new_entry(event(n), index=n, recorded_at=now) for n in range(count)]


def bench_verify() -> dict[str, float]:
    """Leaf hashes and root of 1,000,000 canonical entries against bare SHA-256."""
    template = canonical_bytes(_sample_entries(1)[0])
    marker = b'"index":0,'
    assert marker in template
    head, tail = template.split(marker, 1)
    # Distinct entries of realistic length without a million model objects.
    entries = [head + b'"index":%d,' % n + tail for n in range(VERIFY_ENTRIES)]
    baseline = sha256_seconds(entries)
    start = time.perf_counter()
    leaves = [merkle.leaf_hash(entry) for entry in entries]
    root = merkle.root(leaves)
    elapsed = time.perf_counter() - start
    assert len(root) == merkle.HASH_SIZE
    return {
        "verify_entries": VERIFY_ENTRIES,
        "verify_entry_bytes": len(template),
        "verify_seconds": elapsed,
        "verify_sha256_seconds": baseline,
        "verify_vs_sha256": elapsed / baseline,
        "verify_entries_per_second": VERIFY_ENTRIES / elapsed,
    }


def main() -> dict[str, float]:
    """Run both measurements, print them and return them."""
    results = {**bench_append(), **bench_verify()}
    width = max(len(name) for name in results)
    for name, value in results.items():
        print(f"{name:<{width}}  {value:,.3f}")
    return results


if __name__ == "__main__":
    main()
