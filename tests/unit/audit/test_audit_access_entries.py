"""One entry per access: entries carry their outcome and the categories withheld, verify
beside the entries written before that format, and can be stored with the state they concern."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from audit_factories import audit_event, execute_raw, quoted_index, triggers_disabled
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Column, Engine, Integer, MetaData, Table, func, insert, select
from sqlmodel import Session

from services.audit.log import AuditLog
from services.audit.models import AUDIT_ENTRY_TABLE, AuditOutcome
from services.audit.offline import export, public_key_pem, verify_file

LogFactory = Callable[..., AuditLog]
PROBE = Table("audit_probe_state", MetaData(), Column("n", Integer, primary_key=True))


@pytest.fixture
def mixed_log(make_log: LogFactory) -> AuditLog:
    """Entries of the earlier format (0, 1), then of one-entry-per-access (2, 3), signed."""
    log = make_log()
    log.append([audit_event(0), audit_event(1)])
    log.append(
        [
            audit_event(2, outcome=AuditOutcome.SUCCESS, withheld=("clinical", "welfare")),
            audit_event(3, outcome=AuditOutcome.REFUSED, categories=()),
        ]
    )
    log.sign_tree_head()
    return log


@pytest.fixture
def probe_table(engine: Engine) -> Iterator[None]:
    PROBE.create(engine)
    yield
    PROBE.drop(engine)


def verdicts(log: AuditLog, engine: Engine, key: Ed25519PrivateKey, tmp_path: Path) -> list[str]:
    out = tmp_path / "export.jsonl"
    export(engine, out)
    return [
        "ok" if r.ok else f"{r.first_bad_index}: {r.reason}"
        for r in (log.verify(), verify_file(out, public_key_pem(key)))
    ]


def test_entries_of_both_formats_verify_online_and_offline(
    mixed_log: AuditLog, engine: Engine, signing_key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    assert verdicts(mixed_log, engine, signing_key, tmp_path) == ["ok", "ok"]
    with engine.connect() as conn:
        rows = conn.execute(
            select(AUDIT_ENTRY_TABLE.c.outcome, AUDIT_ENTRY_TABLE.c.withheld).order_by(
                AUDIT_ENTRY_TABLE.c.index
            )
        ).all()
    assert [tuple(r) for r in rows] == [
        (None, None),
        (None, None),
        ("success", ["clinical", "welfare"]),
        ("refused", []),
    ]


@pytest.mark.parametrize(
    "change",
    ["outcome = 'success'", "outcome = NULL", "withheld = '[]'"],
    ids=["outcome-changed", "outcome-dropped", "withheld-emptied"],
)
def test_a_changed_outcome_or_withheld_is_caught_at_its_entry(
    mixed_log: AuditLog,
    engine: Engine,
    signing_key: Ed25519PrivateKey,
    tmp_path: Path,
    change: str,
) -> None:
    index = 3 if "success" in change else 2
    with triggers_disabled(engine):
        execute_raw(
            engine, f"UPDATE audit_entry SET {change} WHERE {quoted_index(engine)} = {index}"
        )
    for verdict in verdicts(mixed_log, engine, signing_key, tmp_path):
        assert verdict.startswith(f"{index}: "), verdict


def test_append_with_stores_the_state_and_its_entry_together_or_neither(
    make_log: LogFactory, engine: Engine, probe_table: None
) -> None:
    log = make_log()

    def store(session: Session) -> int:
        session.execute(insert(PROBE).values(n=1))
        return 1

    assert log.append_with(store, lambda n: [audit_event(n, outcome=AuditOutcome.SUCCESS)]) == 1

    def store_then_fail(session: Session) -> int:
        session.execute(insert(PROBE).values(n=2))
        raise RuntimeError("the state could not be stored")

    with pytest.raises(RuntimeError):
        log.append_with(store_then_fail, lambda n: [audit_event(n)])

    def store_then_bad_entry(session: Session) -> int:
        session.execute(insert(PROBE).values(n=3))
        return 3

    with pytest.raises(ValueError):
        log.append_with(store_then_bad_entry, lambda n: [audit_event(n, actor_subject="")])

    with engine.connect() as conn:
        assert conn.execute(select(PROBE.c.n)).scalars().all() == [1]
        assert conn.execute(select(func.count()).select_from(AUDIT_ENTRY_TABLE)).scalar_one() == 1
    assert log.verify().ok
