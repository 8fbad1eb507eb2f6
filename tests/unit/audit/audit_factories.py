"""Test data and tampering tools for the audit log tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, delete, insert, select, text

from services.audit.merkle import stored_nodes
from services.audit.models import (
    AUDIT_ENTRY_TABLE,
    AUDIT_TREE_NODE_TABLE,
    AuditDecision,
    AuditEvent,
    AuditEventType,
    install_append_only_triggers,
    remove_append_only_triggers,
)


def audit_event(number: int = 0, **overrides: Any) -> AuditEvent:
    """A prosecutor reading a referral, or whatever the overrides say."""
    values: dict[str, Any] = {
        "event_type": AuditEventType.READ,
        "actor_subject": f"prosecutor-{number % 5}",
        "actor_organisation": "om-amsterdam",
        "actor_role": "prosecutor",
        "action": "referral.read",
        "referral_pseudonym": f"rp_{number:032x}",
        "categories": ("identity", "offence"),
        "decision": AuditDecision.PERMIT,
        "policy_ids": ("policy-prosecutor-read",),
        "purpose_of_use": "diversion",
        "request_id": f"req-{number}",
        "trace_id": f"{number:032x}",
    }
    values.update(overrides)
    return AuditEvent(**values)


@contextmanager
def triggers_disabled(engine: Engine) -> Iterator[None]:
    """What an attacker with DDL rights does before tampering."""
    with engine.begin() as conn:
        remove_append_only_triggers(conn)
    try:
        yield
    finally:
        with engine.begin() as conn:
            install_append_only_triggers(conn)


def quoted_index(engine: Engine) -> str:
    """The `index` column name, quoted for raw SQL (it is a reserved word)."""
    return engine.dialect.identifier_preparer.quote("index")


def execute_raw(engine: Engine, sql: str, **params: Any) -> None:
    """Run one raw SQL statement in its own transaction."""
    with engine.begin() as conn:
        conn.execute(text(sql), params)


def rebuild_stored_tree(conn: Connection) -> None:
    """Recompute the stored tree from the entries as they are now (triggers off), as a forger
    who rewrote entries must before the log signs heads over the rewritten history."""
    leaves = conn.execute(
        select(AUDIT_ENTRY_TABLE.c.leaf_hash).order_by(AUDIT_ENTRY_TABLE.c.index)
    ).scalars()
    nodes = [{"node": k, "hash": h} for k, h in stored_nodes(bytes.fromhex(x) for x in leaves)]
    conn.execute(delete(AUDIT_TREE_NODE_TABLE))
    if nodes:
        conn.execute(insert(AUDIT_TREE_NODE_TABLE), nodes)
