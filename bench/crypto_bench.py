"""Cost of the personal-data vault against bare AES-GCM on a typical referral record.

Run with `python bench/crypto_bench.py`; `main()` returns the numbers for `bench/__main__.py`.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Engine
from sqlalchemy.pool import StaticPool
from sqlmodel import Session, SQLModel, create_engine

# Run as a script, the project root is not on the path yet.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from services.crypto import FileKeyRing, PersonalDataVault, ReferralDataKey  # noqa: E402

RECORD = {
    "family_name": "Dubois-Lefèvre",
    "given_names": "Amélie Jeanne",
    "birth_date": "1991-04-17",
    "national_number": "91.04.17-123.45",
    "address": "Rue de la Loi 16, 1000 Bruxelles",
    "phone": "+32 470 12 34 56",
    "email": "amelie@example.org",
    "facts_summary": "Possession of a small quantity of cannabis, first offence.",
}
ROUNDS = 2000
WARMUP = 200


def _median_us(samples: list[float]) -> float:
    return statistics.median(samples) * 1e6


def _bench_vault(
    vault: PersonalDataVault, engine: Engine, referral_id: uuid.UUID, *, fresh_sessions: bool
) -> float:
    samples: list[float] = []
    shared = Session(engine)
    for index in range(WARMUP + ROUNDS):
        start = time.perf_counter()
        # A fresh session per record pays the one key-row lookup a request pays; a shared one
        # shows the steady cost once that row is in the session.
        session = Session(engine) if fresh_sessions else shared
        sealed = vault.seal_record(session=session, referral_id=referral_id, fields=RECORD)
        opened = vault.open_record(session=session, referral_id=referral_id, fields=sealed)
        if fresh_sessions:
            session.close()
        elapsed = time.perf_counter() - start
        if opened != RECORD:
            raise RuntimeError("the vault did not round-trip the record")
        if index >= WARMUP:
            samples.append(elapsed)
    shared.close()
    return _median_us(samples)


def _bench_bare(referral_id: uuid.UUID) -> float:
    cipher = AESGCM(AESGCM.generate_key(bit_length=256))
    encoded = {name: value.encode("utf-8") for name, value in RECORD.items()}
    aads = {name: referral_id.bytes + name.encode("utf-8") for name in RECORD}
    samples: list[float] = []
    for index in range(WARMUP + ROUNDS):
        start = time.perf_counter()
        sealed = {}
        for name, plain in encoded.items():
            nonce = os.urandom(12)
            sealed[name] = (nonce, cipher.encrypt(nonce, plain, aads[name]))
        opened = {name: cipher.decrypt(n, c, aads[name]) for name, (n, c) in sealed.items()}
        elapsed = time.perf_counter() - start
        if opened != encoded:
            raise RuntimeError("bare AES-GCM did not round-trip the record")
        if index >= WARMUP:
            samples.append(elapsed)
    return _median_us(samples)


def main() -> dict[str, Any]:
    """Time seal+open of an 8-field record through the vault and through bare AES-GCM."""
    with tempfile.TemporaryDirectory() as directory:
        keyring = FileKeyRing.create(Path(directory) / "keyring.json")
        engine = create_engine(
            "sqlite://", connect_args={"check_same_thread": False}, poolclass=StaticPool
        )
        SQLModel.metadata.create_all(engine, tables=[ReferralDataKey.__table__])  # type: ignore[attr-defined]
        try:
            vault = PersonalDataVault(keyring)
            referral_id = uuid.uuid4()
            with Session(engine) as session:
                vault.ensure_data_key(session=session, referral_id=referral_id)
                session.commit()
            warm_us = _bench_vault(vault, engine, referral_id, fresh_sessions=False)
            cold_us = _bench_vault(vault, engine, referral_id, fresh_sessions=True)
            bare_us = _bench_bare(referral_id)
        finally:
            engine.dispose()
    result = {
        "name": "crypto",
        "fields": len(RECORD),
        "rounds": ROUNDS,
        "vault_median_us": round(warm_us, 2),
        "vault_fresh_session_median_us": round(cold_us, 2),
        "bare_aesgcm_median_us": round(bare_us, 2),
        "ratio": round(warm_us / bare_us, 2),
        "ratio_fresh_session": round(cold_us / bare_us, 2),
    }
    print(
        f"seal+open of a {len(RECORD)}-field record, median of {ROUNDS} rounds:\n"
        f"  bare AES-GCM                        {bare_us:8.1f} µs\n"
        f"  vault, key row already in session   {warm_us:8.1f} µs  ({warm_us / bare_us:.2f}x)\n"
        f"  vault, one fresh session per record {cold_us:8.1f} µs  ({cold_us / bare_us:.2f}x)"
    )
    return result


if __name__ == "__main__":
    main()
