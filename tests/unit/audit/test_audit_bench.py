"""`make bench`'s audit measurements at a tiny size, so that they cannot rot between runs.

No figure is checked against a time: only that each measurement did its work correctly.
"""

from __future__ import annotations

import os

import pytest

from bench import audit_bench

POSTGRES_URL = os.environ.get("REFERRAL_TEST_DATABASE_URL", "")


@pytest.mark.parametrize(
    "database",
    [
        pytest.param("sqlite", id="sqlite"),
        pytest.param(
            "postgresql",
            id="postgresql",
            marks=[
                pytest.mark.postgres,
                pytest.mark.skipif(
                    not POSTGRES_URL.startswith("postgresql"),
                    reason="REFERRAL_TEST_DATABASE_URL does not name a PostgreSQL database",
                ),
            ],
        ),
    ],
)
def test_the_append_bench_group_commits_concurrent_writers(database: str) -> None:
    url = POSTGRES_URL if database == "postgresql" else None
    result = audit_bench.bench_append(threads=4, per_thread=10, database_url=url)
    assert result["append_database"] == database
    assert result["append_entries"] == 40
    assert result["append_verified"] is True
    assert 1 <= result["append_commits"] <= 40


def test_the_proof_bench_builds_the_stored_tree_and_proves_on_it() -> None:
    # 3 * 4096 + 5 leaves: whole chunks and a ragged end, proofs checked against the root.
    result = audit_bench.bench_proofs(3 * 4096 + 5, proofs=5)
    assert result["proof_12293_inclusion_ms_median"] > 0
    assert result["proof_12293_peak_kib_allocated"] > 0


def test_the_verify_bench_computes_the_root() -> None:
    result = audit_bench.bench_verify(count=5000, rounds=1)
    assert result["verify_entries"] == 5000
    assert result["verify_vs_sha256"] > 0
