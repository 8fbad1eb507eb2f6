"""The tamper-evident audit log at scale: appends, proofs on a large stored tree, verification.

Three measurements:
1. appends/s with 8 concurrent writers, one event per call, batched by group commit, into a
   temporary SQLite file, or into a throwaway schema of the PostgreSQL database named by
   REFERRAL_BENCH_DATABASE_URL;
2. inclusion and consistency proof latency on a stored tree of 1,000,000 entries (and
   10,000,000 with `make bench-audit-10m`: REFERRAL_BENCH_AUDIT_PROOF_SIZES), built in bulk
   straight into the node table, with the memory the proofs allocate: it must not grow
   with the log (a proof reads O(log n) stored subtrees, no process holds the leaves);
3. offline verification of 1,000,000 entries (every leaf hash and the root, streamed in
   O(log n) memory as the verifier does) against bare SHA-256 over the same entry bytes.
Run with `python -m bench bench.audit_bench`; `main()` returns the numbers.
"""

from __future__ import annotations

import hashlib
import os
import random
import statistics
import sys
import tempfile
import threading
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine, event, func, select, text
from sqlmodel import SQLModel

# Run as a script, the project root is not on the path yet.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from services.audit import merkle  # noqa: E402
from services.audit.log import AuditLog  # noqa: E402
from services.audit.models import (  # noqa: E402
    AUDIT_ENTRY_TABLE,
    AUDIT_TREE_HEAD_TABLE,
    AUDIT_TREE_NODE_TABLE,
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
PROOF_SIZES = (1_000_000,)
PROOFS = 300
VERIFY_ENTRIES = 1_000_000
VERIFY_ROUNDS = 3
BUILD_ROWS = 50_000
TABLES = [AUDIT_ENTRY_TABLE, AUDIT_TREE_HEAD_TABLE, AUDIT_TREE_NODE_TABLE]


def event_for(number: int) -> AuditEvent:
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


def _sample_entries(count: int) -> list[AuditEntry]:
    # Entries like the appended ones, built without a database.
    now = datetime.now(UTC)
    return [new_entry(event_for(n), index=n, recorded_at=now) for n in range(count)]


def _audit_engine(directory: str, database_url: str | None) -> tuple[Engine, str | None]:
    """An engine on empty audit tables: a SQLite file, or a fresh schema on PostgreSQL."""
    if not database_url:
        return make_engine(f"sqlite:///{directory}/audit.db"), None
    schema = f"audit_bench_{uuid.uuid4().hex[:12]}"
    engine = make_engine(database_url, pool_size=THREADS + 2)

    @event.listens_for(engine, "connect")
    def _search_path(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        cursor.execute(f"SET search_path TO {schema}")
        cursor.close()
        dbapi_connection.commit()

    return engine, schema


def bench_append(
    threads: int = THREADS, per_thread: int = APPENDS_PER_THREAD, database_url: str | None = None
) -> dict[str, Any]:
    """Appends of one event per call from `threads` writers, batched by group commit."""
    with tempfile.TemporaryDirectory() as directory:
        engine, schema = _audit_engine(directory, database_url)
        try:
            with engine.begin() as conn:
                SQLModel.metadata.create_all(conn, tables=TABLES)
                install_append_only_triggers(conn)
            log = AuditLog(engine, Ed25519PrivateKey.generate(), "bench", sth_every_entries=1000)
            barrier = threading.Barrier(threads + 1)
            errors: list[BaseException] = []

            def writer(thread: int) -> None:
                barrier.wait()
                try:
                    for number in range(per_thread):
                        log.append([event_for(thread * per_thread + number)])
                except BaseException as error:  # noqa: BLE001 - reported below
                    errors.append(error)

            workers = [threading.Thread(target=writer, args=(t,)) for t in range(threads)]
            for worker in workers:
                worker.start()
            barrier.wait()
            start = time.perf_counter()
            for worker in workers:
                worker.join()
            elapsed = time.perf_counter() - start
            if errors:
                raise errors[0]
            with engine.connect() as conn:
                # One group commit, one transaction, one recorded_at for all its entries.
                commits = conn.execute(
                    select(func.count(func.distinct(AUDIT_ENTRY_TABLE.c.recorded_at)))
                ).scalar_one()
            heads = len(log.tree_heads())
            ok = log.verify().ok
        finally:
            if schema is not None:
                with engine.begin() as conn:
                    conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
            engine.dispose()
    total = threads * per_thread
    return {
        "append_database": "postgresql" if database_url else "sqlite",
        "append_writers": threads,
        "append_entries": total,
        "append_entries_per_second": total / elapsed,
        "append_seconds": elapsed,
        "append_commits": commits,
        "append_entries_per_commit": total / max(commits, 1),
        "append_tree_heads": heads,
        "append_verified": ok,
    }


def _synthetic_leaves(count: int) -> Iterator[bytes]:
    sha256 = hashlib.sha256
    for index in range(count):
        yield sha256(b"\x00" + index.to_bytes(8, "big")).digest()


def build_stored_tree(engine: Engine, size: int) -> float:
    """Write the stored tree of `size` leaves straight into the node table; returns seconds.

    What `size` appends would have stored, streamed: the build holds O(log n) hashes.
    """
    start = time.perf_counter()
    nodes = merkle.stored_nodes(_synthetic_leaves(size))
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        if engine.dialect.name == "sqlite":
            cursor.execute("PRAGMA synchronous=OFF")
        insert = "INSERT INTO audit_tree_node (node, hash) VALUES (%s, %s)"
        if engine.dialect.name == "sqlite":
            insert = insert.replace("%s", "?")
        while rows := list(islice(nodes, BUILD_ROWS)):
            cursor.executemany(insert, rows)
            raw.commit()
        cursor.close()
    finally:
        raw.close()
    return time.perf_counter() - start


def _rss_kib() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def bench_proofs(size: int, proofs: int = PROOFS) -> dict[str, Any]:
    """Proof latency and the memory proofs allocate, on a stored tree of `size` entries."""
    with tempfile.TemporaryDirectory() as directory:
        engine = make_engine(f"sqlite:///{directory}/audit.db")
        try:
            with engine.begin() as conn:
                SQLModel.metadata.create_all(conn, tables=TABLES)
            build = build_stored_tree(engine, size)
            database_bytes = sum(p.stat().st_size for p in Path(directory).iterdir())
            log = AuditLog(engine, Ed25519PrivateKey.generate(), "bench")
            rng = random.Random(size)
            inclusion, consistency = [], []
            for _ in range(proofs):
                index = rng.randrange(size)
                began = time.perf_counter()
                proof = log.inclusion_proof(index)
                inclusion.append(time.perf_counter() - began)
                first = rng.randrange(1, size)
                began = time.perf_counter()
                log.consistency_proof(first, size)
                consistency.append(time.perf_counter() - began)
            # The last proof checks against the root: the bulk tree is the log's tree.
            assert merkle.verify_inclusion(
                bytes.fromhex(proof.leaf_hash),
                proof.leaf_index,
                size,
                [bytes.fromhex(p) for p in proof.path],
                bytes.fromhex(proof.root_hash),
            )
            tracemalloc.start()
            for _ in range(20):
                log.inclusion_proof(rng.randrange(size))
                log.consistency_proof(rng.randrange(1, size), size)
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        finally:
            engine.dispose()
    label = f"{size // 1_000_000}M" if size >= 1_000_000 else str(size)
    return {
        f"proof_{label}_build_seconds": build,
        f"proof_{label}_database_mib": database_bytes / 2**20,
        f"proof_{label}_inclusion_ms_median": 1000 * statistics.median(inclusion),
        f"proof_{label}_inclusion_ms_p99": 1000 * _percentile(inclusion, 0.99),
        f"proof_{label}_consistency_ms_median": 1000 * statistics.median(consistency),
        f"proof_{label}_consistency_ms_p99": 1000 * _percentile(consistency, 0.99),
        f"proof_{label}_peak_kib_allocated": peak / 1024,
        f"proof_{label}_process_rss_mib": _rss_kib() / 1024,
    }


def _verify_entries(count: int) -> Iterator[bytes]:
    # Distinct entries of realistic length without a million model objects.
    template = canonical_bytes(_sample_entries(1)[0])
    marker = b'"index":0,'
    assert marker in template
    head, tail = template.split(marker, 1)
    for n in range(count):
        yield head + b'"index":%d,' % n + tail


def bench_verify(count: int = VERIFY_ENTRIES, rounds: int = VERIFY_ROUNDS) -> dict[str, Any]:
    """Every leaf hash and the root of `count` entries, streamed, against bare SHA-256.

    Chunks of the export are hashed as they are read, as the offline verifier does;
    baseline and verification alternate and the best of `rounds` counts, as the machine
    may be shared.
    """
    chunk_size = 64 * merkle.EXTEND_CHUNK
    entries = list(_verify_entries(count))  # the "file", read once; not part of either time
    leaf_hash = merkle.leaf_hash
    best_baseline = best_verify = float("inf")
    root = b""
    for _ in range(rounds):
        best_baseline = min(best_baseline, sha256_seconds(entries))
        start = time.perf_counter()
        tree = merkle.TreeAccumulator()
        for offset in range(0, count, chunk_size):
            tree.extend([leaf_hash(e) for e in entries[offset : offset + chunk_size]])
        root = tree.root()
        best_verify = min(best_verify, time.perf_counter() - start)
    if count <= 100_000:  # small runs (the harness test) check the root against the list
        assert root == merkle.root([leaf_hash(e) for e in entries])
    return {
        "verify_entries": count,
        "verify_entry_bytes": len(entries[0]) if entries else 0,
        "verify_seconds": best_verify,
        "verify_sha256_seconds": best_baseline,
        "verify_vs_sha256": best_verify / best_baseline,
        "verify_entries_per_second": count / best_verify,
    }


def proof_sizes() -> list[int]:
    """The stored tree sizes to measure proofs on (REFERRAL_BENCH_AUDIT_PROOF_SIZES)."""
    raw = os.environ.get("REFERRAL_BENCH_AUDIT_PROOF_SIZES", "")
    return [int(s) for s in raw.split(",") if s.strip()] or list(PROOF_SIZES)


def main() -> dict[str, Any]:
    """Run every measurement, print it and return it."""
    results: dict[str, Any] = {}
    results.update(bench_append(database_url=os.environ.get("REFERRAL_BENCH_DATABASE_URL")))
    for size in proof_sizes():
        results.update(bench_proofs(size))
    results.update(bench_verify())
    width = max(len(name) for name in results)
    for name, value in results.items():
        shown = f"{value:,.3f}" if isinstance(value, float) else str(value)
        print(f"{name:<{width}}  {shown}")
    return results


if __name__ == "__main__":
    main()
