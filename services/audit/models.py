"""Audit trail tables, the audit event input model and the canonical bytes of an entry."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import BaseModel, ConfigDict
from pydantic import Field as PydanticField
from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Connection,
    Index,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    inspect,
    text,
)
from sqlmodel import Field, SQLModel

from services.audit import merkle
from services.sqltypes import UTCDateTime

APPEND_ONLY_MESSAGE = "audit log is append-only"
AUDIT_TABLES = ("audit_entry", "audit_tree_head", "audit_tree_node")
TREE_HEAD_FORMAT = "referral-audit-tree-head/v1"
PSEUDONYM_PATTERN = r"^rp_[0-9a-f]{32}$"
PERSON_PSEUDONYM_PATTERN = r"^pp_[0-9a-f]{32}$"
HASHED_FIELDS = (
    "index",
    "id",
    "recorded_at",
    "event_type",
    "actor_subject",
    "actor_organisation",
    "actor_role",
    "action",
    "referral_pseudonym",
    "categories",
    "decision",
    "policy_ids",
    "purpose_of_use",
    "request_id",
    "trace_id",
)
# Entries since one-entry-per-access (migration 0006) also hash the outcome of the access and
# the categories withheld; older entries keep the fields above, so they still verify.
ACCESS_FIELDS = ("outcome", "withheld")
HASHED_FIELDS_V2 = HASHED_FIELDS + ACCESS_FIELDS
# Entries since migration 0010 (IHE BALP / ATNA) also hash the person's pseudonym, the node
# that recorded them and the client's network address; an entry has them when it names its
# source node (every new entry does), so entries written before still verify.
SOURCE_FIELDS = ("person_pseudonym", "source_node", "client_address")
HASHED_FIELDS_V3 = HASHED_FIELDS_V2 + SOURCE_FIELDS


class AuditEventType(StrEnum):
    """IHE Basic Audit Log Patterns event kinds (plus login, logout and export)."""

    CREATE = "create"
    READ = "read"
    QUERY = "query"
    UPDATE = "update"
    DELETE = "delete"
    DISCLOSURE_SOURCE = "disclosure_source"
    DISCLOSURE_RECIPIENT = "disclosure_recipient"
    AUTHORIZATION_PERMIT = "authorization_permit"
    AUTHORIZATION_DENY = "authorization_deny"
    LOGIN = "login"
    LOGOUT = "logout"
    EXPORT = "export"


class AuditDecision(StrEnum):
    """The outcome of an authorisation decision."""

    PERMIT = "permit"
    DENY = "deny"


class AuditOutcome(StrEnum):
    """How an access ended (IHE BALP EventOutcomeIndicator, in words)."""

    SUCCESS = "success"
    # refused by a decision (4xx before or without a permit): nothing was disclosed or changed
    REFUSED = "refused"
    # permitted, then it did not take effect: a rule of the process refused it (a 409 after
    # a permit), or it broke off (5xx, unavailable service); nothing was disclosed
    FAILED = "failed"


class AuditEvent(BaseModel):
    """What a caller asks to record; the log assigns index, id and time."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_type: AuditEventType
    actor_subject: str = PydanticField(min_length=1, max_length=255)
    actor_organisation: str = PydanticField(min_length=1, max_length=255)
    actor_role: str = PydanticField(min_length=1, max_length=64)
    action: str = PydanticField(min_length=1, max_length=128)
    # A keyed pseudonym (see `pseudonymise_referral`), so the log never holds a real id.
    referral_pseudonym: str | None = PydanticField(default=None, pattern=PSEUDONYM_PATTERN)
    categories: tuple[str, ...] = ()
    decision: AuditDecision | None = None
    policy_ids: tuple[str, ...] = ()
    purpose_of_use: str = PydanticField(min_length=1, max_length=64)
    request_id: str | None = PydanticField(default=None, max_length=128)
    trace_id: str | None = PydanticField(default=None, max_length=128)
    outcome: AuditOutcome | None = None
    withheld: tuple[str, ...] = ()
    # The person the access concerns, as a tag of their referral (see `person_tag`) that the
    # DPO recomputes for a living person's referrals and nobody can after the purge. (Entries
    # written before it carry a keyed hash of the subject pseudonym, in the same form.)
    person_pseudonym: str | None = PydanticField(default=None, pattern=PERSON_PSEUDONYM_PATTERN)
    # ATNA AuditSourceIdentification and NetworkAccessPointID: the node that recorded the
    # entry and the address of the client it served (None for the engine's own steps).
    source_node: str | None = PydanticField(default=None, min_length=1, max_length=128)
    client_address: str | None = PydanticField(default=None, max_length=64)


class AuditEntry(SQLModel, table=True):
    """One leaf of the audit Merkle tree; `index` is its gap-free position from 0."""

    __tablename__ = "audit_entry"
    __table_args__ = (
        UniqueConstraint("id", name="uq_audit_entry_id"),
        Index("ix_audit_entry_referral_pseudonym", "referral_pseudonym"),
        Index("ix_audit_entry_actor_subject", "actor_subject"),
        Index("ix_audit_entry_recorded_at", "recorded_at"),
        Index("ix_audit_entry_person_pseudonym", "person_pseudonym"),
    )

    index: int = Field(sa_column=Column("index", BigInteger, primary_key=True, autoincrement=False))
    id: uuid.UUID = Field(sa_column=Column("id", Uuid, nullable=False))
    recorded_at: datetime = Field(sa_column=Column("recorded_at", UTCDateTime, nullable=False))
    event_type: str = Field(sa_column=Column("event_type", String(32), nullable=False))
    actor_subject: str = Field(sa_column=Column("actor_subject", String(255), nullable=False))
    actor_organisation: str = Field(
        sa_column=Column("actor_organisation", String(255), nullable=False)
    )
    actor_role: str = Field(sa_column=Column("actor_role", String(64), nullable=False))
    action: str = Field(sa_column=Column("action", String(128), nullable=False))
    referral_pseudonym: str | None = Field(
        default=None, sa_column=Column("referral_pseudonym", String(64), nullable=True)
    )
    categories: list[str] = Field(sa_column=Column("categories", JSON, nullable=False))
    decision: str | None = Field(
        default=None, sa_column=Column("decision", String(8), nullable=True)
    )
    policy_ids: list[str] = Field(sa_column=Column("policy_ids", JSON, nullable=False))
    purpose_of_use: str = Field(sa_column=Column("purpose_of_use", String(64), nullable=False))
    request_id: str | None = Field(
        default=None, sa_column=Column("request_id", String(128), nullable=True)
    )
    trace_id: str | None = Field(
        default=None, sa_column=Column("trace_id", String(128), nullable=True)
    )
    # Null on entries written before one-entry-per-access (see ACCESS_FIELDS).
    outcome: str | None = Field(
        default=None, sa_column=Column("outcome", String(16), nullable=True)
    )
    withheld: list[str] | None = Field(
        default=None, sa_column=Column("withheld", JSON, nullable=True)
    )
    # Null on entries written before migration 0010 (see SOURCE_FIELDS).
    person_pseudonym: str | None = Field(
        default=None, sa_column=Column("person_pseudonym", String(64), nullable=True)
    )
    source_node: str | None = Field(
        default=None, sa_column=Column("source_node", String(128), nullable=True)
    )
    client_address: str | None = Field(
        default=None, sa_column=Column("client_address", String(64), nullable=True)
    )
    # Derivable from the fields above; stored so proofs need not re-serialise every entry.
    leaf_hash: str = Field(sa_column=Column("leaf_hash", String(64), nullable=False))


class SignedTreeHead(SQLModel, table=True):
    """An Ed25519 signature over the tree size and root at one moment."""

    __tablename__ = "audit_tree_head"

    tree_size: int = Field(
        sa_column=Column("tree_size", BigInteger, primary_key=True, autoincrement=False)
    )
    key_id: str = Field(sa_column=Column("key_id", String(128), primary_key=True))
    root_hash: str = Field(sa_column=Column("root_hash", String(64), nullable=False))
    signed_at: datetime = Field(sa_column=Column("signed_at", UTCDateTime, nullable=False))
    signature: str = Field(sa_column=Column("signature", Text, nullable=False))


class AuditTreeNode(SQLModel, table=True):
    """The hash of one complete subtree of the log, stored so proofs read O(log n) rows.

    `node` is the subtree's in-order key (`merkle.node_key`): leaves are even, and the
    largest key is the last leaf, so the tree's size is read from the primary key index.
    """

    __tablename__ = "audit_tree_node"

    node: int = Field(sa_column=Column("node", BigInteger, primary_key=True, autoincrement=False))
    hash: bytes = Field(sa_column=Column("hash", LargeBinary(32), nullable=False))


# Typed handles on the tables for Core statements (SQLModel does not type `__table__`).
AUDIT_ENTRY_TABLE = SQLModel.metadata.tables["audit_entry"]
AUDIT_TREE_HEAD_TABLE = SQLModel.metadata.tables["audit_tree_head"]
AUDIT_TREE_NODE_TABLE = SQLModel.metadata.tables["audit_tree_node"]


def format_timestamp(value: datetime) -> str:
    """The canonical text of a timestamp: UTC, microseconds, a `Z` suffix."""
    if value.tzinfo is None:
        raise ValueError("audit timestamps must be timezone-aware")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_json(value: Mapping[str, Any]) -> bytes:
    """Canonical JSON: sorted keys, no whitespace, UTF-8."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def entry_fields(entry: AuditEntry | Mapping[Any, Any]) -> dict[str, Any]:
    """Every hashed field of an entry (or a row mapping) as JSON values, without `leaf_hash`."""
    # Verification reads raw rows: building a model object per row would dominate its cost.
    values: Mapping[Any, Any] = (
        entry
        if isinstance(entry, Mapping)
        else {name: getattr(entry, name) for name in HASHED_FIELDS_V3}
    )
    decision = values["decision"]
    fields = {
        "index": values["index"],
        "id": str(values["id"]),
        "recorded_at": format_timestamp(values["recorded_at"]),
        "event_type": str(values["event_type"]),
        "actor_subject": values["actor_subject"],
        "actor_organisation": values["actor_organisation"],
        "actor_role": values["actor_role"],
        "action": values["action"],
        "referral_pseudonym": values["referral_pseudonym"],
        "categories": list(values["categories"]),
        "decision": None if decision is None else str(decision),
        "policy_ids": list(values["policy_ids"]),
        "purpose_of_use": values["purpose_of_use"],
        "request_id": values["request_id"],
        "trace_id": values["trace_id"],
    }
    outcome = values.get("outcome")
    if outcome is not None:
        fields["outcome"] = str(outcome)
        fields["withheld"] = list(values.get("withheld") or ())
    if values.get("source_node") is not None:
        for name in SOURCE_FIELDS:
            fields[name] = values.get(name)
    return fields


def canonical_bytes(entry: AuditEntry | Mapping[Any, Any]) -> bytes:
    """The bytes an entry's (or a row mapping's) leaf hash covers."""
    return canonical_json(entry_fields(entry))


def compute_leaf_hash(entry: AuditEntry | Mapping[Any, Any]) -> bytes:
    """The RFC 6962 leaf hash of an entry's (or a row mapping's) canonical bytes."""
    return merkle.leaf_hash(canonical_bytes(entry))


def entry_row(event: AuditEvent, *, index: int, recorded_at: datetime) -> dict[str, Any]:
    """The stored row (with its leaf hash) of `event` at position `index`: what an append
    inserts, built without a model object (one costs more than hashing the entry)."""
    row: dict[str, Any] = {
        "index": index,
        "id": uuid.uuid4(),
        "recorded_at": recorded_at,
        "event_type": event.event_type.value,
        "actor_subject": event.actor_subject,
        "actor_organisation": event.actor_organisation,
        "actor_role": event.actor_role,
        "action": event.action,
        "referral_pseudonym": event.referral_pseudonym,
        "categories": list(event.categories),
        "decision": None if event.decision is None else event.decision.value,
        "policy_ids": list(event.policy_ids),
        "purpose_of_use": event.purpose_of_use,
        "request_id": event.request_id,
        "trace_id": event.trace_id,
        "outcome": None if event.outcome is None else event.outcome.value,
        "withheld": None if event.outcome is None else list(event.withheld),
        "person_pseudonym": event.person_pseudonym,
        "source_node": event.source_node,
        "client_address": event.client_address,
    }
    row["leaf_hash"] = compute_leaf_hash(row).hex()
    return row


def new_entry(event: AuditEvent, *, index: int, recorded_at: datetime) -> AuditEntry:
    """A complete entry (with its leaf hash) for `event` at position `index`."""
    return AuditEntry(**entry_row(event, index=index, recorded_at=recorded_at))


def tree_head_bytes(*, tree_size: int, root_hash: str, signed_at: str, key_id: str) -> bytes:
    """The bytes a tree head signature covers (size, root, time and key, domain-tagged)."""
    return canonical_json(
        {
            "format": TREE_HEAD_FORMAT,
            "tree_size": tree_size,
            "root_hash": root_hash,
            "signed_at": signed_at,
            "key_id": key_id,
        }
    )


def pseudonymise_referral(referral_id: uuid.UUID, key: bytes) -> str:
    """The audit pseudonym of a referral: a keyed HMAC, so the log holds no real id."""
    if len(key) < 32:
        raise ValueError("the pseudonym key must have at least 256 bits")
    digest = hmac.new(key, b"audit-referral:" + referral_id.bytes, hashlib.sha256).hexdigest()
    return "rp_" + digest[:32]


# HKDF's info: the person tag's key is derived from the referral's own secret, apart from
# every other use of it.
_PERSON_TAG_INFO = b"referral-engine/audit-person-tag/v1"


def person_tag(referral_id: uuid.UUID, referral_key: bytes) -> str:
    """The person field of an entry about a referral: an HMAC of the referral's id under a key
    derived (HKDF) from that referral's own secret, its payload key, which the purge destroys.

    While the referral lives, whoever finds the person's referrals (the DPO, by national
    number) recomputes it and finds the entries; after the purge nobody can, so the entries,
    which outlive it, no longer lead to the person. It depends on neither the pseudonym key nor
    the subject pseudonym, so both may rotate. Two referrals of one person carry different
    tags: the entries are linked through the referrals, never at rest across them."""
    if len(referral_key) < 32:
        raise ValueError("a referral key must have at least 256 bits")
    tag_key = HKDF(algorithm=SHA256(), length=32, salt=None, info=_PERSON_TAG_INFO).derive(
        referral_key
    )
    digest = hmac.new(tag_key, b"audit-person:" + referral_id.bytes, hashlib.sha256)
    return "pp_" + digest.hexdigest()[:32]


_SQLITE_TRIGGER = (
    "CREATE TRIGGER IF NOT EXISTS {table}_no_{op} BEFORE {verb} ON {table} "
    f"BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY_MESSAGE}'); END"
)

_POSTGRES_FUNCTION = f"""
CREATE OR REPLACE FUNCTION audit_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '{APPEND_ONLY_MESSAGE} (% on %)', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END;
$$
"""


def _existing(connection: Connection) -> list[str]:
    inspector = inspect(connection)
    return [table for table in AUDIT_TABLES if inspector.has_table(table)]


def install_append_only_triggers(connection: Connection) -> None:
    """Make the database itself refuse UPDATE and DELETE (and TRUNCATE) on audit tables."""
    dialect = connection.dialect.name
    # Each migration installs them on the audit tables that exist by then.
    tables = _existing(connection)
    if dialect == "sqlite":
        for table in tables:
            for op, verb in (("update", "UPDATE"), ("delete", "DELETE")):
                connection.execute(text(_SQLITE_TRIGGER.format(table=table, op=op, verb=verb)))
    elif dialect == "postgresql":
        connection.execute(text(_POSTGRES_FUNCTION))
        for table in tables:
            connection.execute(text(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}"))
            connection.execute(
                text(
                    f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                    "FOR EACH ROW EXECUTE FUNCTION audit_refuse_change()"
                )
            )
            connection.execute(text(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}"))
            connection.execute(
                text(
                    f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                    "FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change()"
                )
            )
    else:
        raise NotImplementedError(f"no append-only triggers for dialect {dialect!r}")


def remove_append_only_triggers(connection: Connection) -> None:
    """Drop the append-only triggers (migration downgrade only)."""
    dialect = connection.dialect.name
    tables = _existing(connection)
    if dialect == "sqlite":
        for table in tables:
            for op in ("update", "delete"):
                connection.execute(text(f"DROP TRIGGER IF EXISTS {table}_no_{op}"))
    elif dialect == "postgresql":
        for table in tables:
            connection.execute(text(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}"))
            connection.execute(text(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}"))
        connection.execute(text("DROP FUNCTION IF EXISTS audit_refuse_change()"))
