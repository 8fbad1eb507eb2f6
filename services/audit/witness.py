"""Witnesses and monitors: parties outside the log who refuse to see history rewritten.

The log's own signature only says what its key holder claims. A witness holds its own
Ed25519 key (in a deployment: the DPO's office or another institution) and cosigns a tree
head only after a consistency proof shows it extends the last head the witness cosigned,
as Certificate Transparency witnesses do (C2SP tlog-witness): whoever would roll back or
fork the log must then also hold the witnesses' keys. A monitor does the same checks
without signing, and raises the alarm on the first inconsistency.

Both keep their last head in a small state file of their own, never in the log's database.
A cosignature signs the log's key id, the tree size and root and the time of cosigning
(the shape of a C2SP cosignature, in this project's canonical JSON rather than a note).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Engine,
    String,
    Text,
    insert,
    select,
    text,
)
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, SQLModel

from services.audit import merkle
from services.audit.keys import key_id_of
from services.audit.models import (
    APPEND_ONLY_MESSAGE,
    SignedTreeHead,
    canonical_json,
    format_timestamp,
    tree_head_bytes,
)
from services.sqltypes import UTCDateTime

COSIGNATURE_FORMAT = "referral-audit-cosignature/v1"
WITNESS_FILE_FORMAT = 1
COSIGNATURE_TABLE_NAME = "audit_cosignature"


class InconsistentLog(RuntimeError):
    """The log showed a head that does not extend the one seen before: the alarm."""


class WitnessKeyError(RuntimeError):
    """The witness key file is missing or malformed."""


# -- records ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TreeHead:
    """A signed tree head as a verifier handles it (the JSON of an export's head line)."""

    tree_size: int
    root_hash: str
    signed_at: str
    key_id: str
    signature: str

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> TreeHead:
        """Read the JSON form; raises ValueError when it is malformed."""
        try:
            head = cls(
                tree_size=int(record["tree_size"]),
                root_hash=str(record["root_hash"]),
                signed_at=str(record["signed_at"]),
                key_id=str(record["key_id"]),
                signature=str(record["signature"]),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError("malformed tree head") from error
        if head.tree_size < 0:
            raise ValueError("malformed tree head")
        return head

    @classmethod
    def from_stored(cls, head: SignedTreeHead) -> TreeHead:
        """The verifier's form of a head read from the log."""
        return cls(
            head.tree_size,
            head.root_hash,
            format_timestamp(head.signed_at),
            head.key_id,
            head.signature,
        )

    def record(self) -> dict[str, Any]:
        """The JSON form."""
        return asdict(self)

    def signed_by(self, keys: Mapping[str, Ed25519PublicKey]) -> str | None:
        """Why the log's signature does not hold, or None when it does."""
        key = keys.get(self.key_id)
        if key is None:
            return f"tree head at size {self.tree_size} is signed by unknown key {self.key_id!r}"
        try:
            key.verify(
                base64.b64decode(self.signature, validate=True),
                tree_head_bytes(
                    tree_size=self.tree_size,
                    root_hash=self.root_hash,
                    signed_at=self.signed_at,
                    key_id=self.key_id,
                ),
            )
        except (InvalidSignature, ValueError, binascii.Error):
            return f"tree head at size {self.tree_size} has an invalid signature"
        return None


def cosignature_bytes(
    *, witness_key_id: str, cosigned_at: str, log_key_id: str, tree_size: int, root_hash: str
) -> bytes:
    """What a witness signs: the head it vouches for and when (domain-tagged)."""
    return canonical_json(
        {
            "format": COSIGNATURE_FORMAT,
            "witness_key_id": witness_key_id,
            "cosigned_at": cosigned_at,
            "log_key_id": log_key_id,
            "tree_size": tree_size,
            "root_hash": root_hash,
        }
    )


@dataclass(frozen=True)
class Cosignature:
    """A witness's signature over a tree head it checked."""

    tree_size: int
    root_hash: str
    log_key_id: str
    witness_key_id: str
    cosigned_at: str
    signature: str

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Cosignature:
        """Read the JSON form; raises ValueError when it is malformed."""
        try:
            return cls(
                tree_size=int(record["tree_size"]),
                root_hash=str(record["root_hash"]),
                log_key_id=str(record["log_key_id"]),
                witness_key_id=str(record["witness_key_id"]),
                cosigned_at=str(record["cosigned_at"]),
                signature=str(record["signature"]),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError("malformed cosignature") from error

    def record(self) -> dict[str, Any]:
        """The JSON form."""
        return asdict(self)

    def covers(self, head: TreeHead) -> bool:
        """Whether this cosignature names exactly this head."""
        return (self.tree_size, self.root_hash, self.log_key_id) == (
            head.tree_size,
            head.root_hash,
            head.key_id,
        )

    def valid_under(self, key: Ed25519PublicKey) -> bool:
        """Whether the witness key really signed this."""
        if key_id_of(key) != self.witness_key_id:
            return False
        try:
            key.verify(
                base64.b64decode(self.signature, validate=True),
                cosignature_bytes(
                    witness_key_id=self.witness_key_id,
                    cosigned_at=self.cosigned_at,
                    log_key_id=self.log_key_id,
                    tree_size=self.tree_size,
                    root_hash=self.root_hash,
                ),
            )
        except (InvalidSignature, ValueError, binascii.Error):
            return False
        return True


def check_extension(last: TreeHead | None, new: TreeHead, proof: Sequence[str]) -> None:
    """Raise `InconsistentLog` unless `new` extends `last` (the RFC 6962 consistency proof)."""
    if last is None:
        return
    if new.tree_size < last.tree_size:
        raise InconsistentLog(
            f"rollback: the newest tree head has size {new.tree_size}, smaller than the "
            f"head at size {last.tree_size} seen before"
        )
    try:
        path = [bytes.fromhex(h) for h in proof]
        roots = bytes.fromhex(last.root_hash), bytes.fromhex(new.root_hash)
    except ValueError:
        path, roots = [], (b"", b"")
    if not merkle.verify_consistency(last.tree_size, new.tree_size, *roots, path):
        raise InconsistentLog(
            f"the tree head at size {new.tree_size} is not consistent with the head at size "
            f"{last.tree_size} seen before: history was rewritten or forked"
        )


# -- state files -------------------------------------------------------------------------


def _write_private(path: Path, document: Mapping[str, Any]) -> None:
    """Replace `path` atomically with a 0600 JSON file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(document, out, indent=2)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def load_last_head(state: Path) -> TreeHead | None:
    """The head a witness or monitor saw last, or None before its first run."""
    if not state.exists():
        return None
    try:
        return TreeHead.from_record(json.loads(state.read_text(encoding="utf-8"))["last_head"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise InconsistentLog(f"the state file {state} is unreadable") from error


def save_last_head(state: Path, head: TreeHead) -> None:
    """Remember `head` as the last one seen."""
    _write_private(state, {"last_head": head.record()})


# -- the witness -------------------------------------------------------------------------


def create_witness_key(path: Path) -> Ed25519PublicKey:
    """A new development witness key file (mode 0600); refuses to overwrite one."""
    key = Ed25519PrivateKey.generate()
    if path.exists():
        raise WitnessKeyError(f"witness key file {path} already exists")
    _write_private(
        path,
        {
            "development_only": True,
            "warning": "Development witness key. In a deployment the witness's own "
            "institution holds its key, never the operator of the log.",
            "key_id": key_id_of(key),
            "private_key": base64.b64encode(key.private_bytes_raw()).decode("ascii"),
        },
    )
    return key.public_key()


def load_witness_key(path: Path) -> Ed25519PrivateKey:
    """The witness's private key from its development key file."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        if document.get("development_only") is not True:
            raise WitnessKeyError("a file witness key must be marked development_only")
        return Ed25519PrivateKey.from_private_bytes(
            base64.b64decode(document["private_key"], validate=True)
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError, binascii.Error) as error:
        raise WitnessKeyError(f"witness key file {path} is unreadable or malformed") from error


class Witness:
    """Cosigns a head only when it is validly signed and extends the last one cosigned."""

    def __init__(
        self, key: Ed25519PrivateKey, state: Path, log_keys: Mapping[str, Ed25519PublicKey]
    ) -> None:
        self._key = key
        self._state = state
        self._log_keys = dict(log_keys)

    @property
    def key_id(self) -> str:
        """The witness's key id."""
        return key_id_of(self._key)

    @property
    def last_head(self) -> TreeHead | None:
        """The last head this witness cosigned."""
        return load_last_head(self._state)

    def cosign(self, head: TreeHead, proof: Sequence[str]) -> Cosignature:
        """Check `head` and the consistency proof from the last cosigned head, then cosign."""
        why = head.signed_by(self._log_keys)
        if why is not None:
            raise InconsistentLog(why)
        check_extension(self.last_head, head, proof)
        cosigned_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        message = cosignature_bytes(
            witness_key_id=self.key_id,
            cosigned_at=cosigned_at,
            log_key_id=head.key_id,
            tree_size=head.tree_size,
            root_hash=head.root_hash,
        )
        signature = base64.b64encode(self._key.sign(message)).decode("ascii")
        # The state moves forward before the cosignature leaves: a crash then costs a
        # cosignature, never lets this witness sign something older.
        save_last_head(self._state, head)
        return Cosignature(
            head.tree_size, head.root_hash, head.key_id, self.key_id, cosigned_at, signature
        )


def count_witnesses(
    head: TreeHead,
    cosignatures: Iterable[Cosignature],
    witness_keys: Mapping[str, Ed25519PublicKey],
) -> list[str]:
    """The witnesses (among `witness_keys`) whose valid cosignature names exactly `head`."""
    valid: list[str] = []
    for cosignature in cosignatures:
        key = witness_keys.get(cosignature.witness_key_id)
        if key is None or not cosignature.covers(head) or not cosignature.valid_under(key):
            continue
        if cosignature.witness_key_id not in valid:
            valid.append(cosignature.witness_key_id)
    return valid


# -- storage -----------------------------------------------------------------------------


class WitnessCosignature(SQLModel, table=True):
    """A witness cosignature of one tree head, stored so the auditor API can serve it."""

    __tablename__ = COSIGNATURE_TABLE_NAME

    tree_size: int = Field(
        sa_column=Column("tree_size", BigInteger, primary_key=True, autoincrement=False)
    )
    log_key_id: str = Field(sa_column=Column("log_key_id", String(128), primary_key=True))
    witness_key_id: str = Field(sa_column=Column("witness_key_id", String(128), primary_key=True))
    root_hash: str = Field(sa_column=Column("root_hash", String(64), nullable=False))
    cosigned_at: datetime = Field(sa_column=Column("cosigned_at", UTCDateTime, nullable=False))
    signature: str = Field(sa_column=Column("signature", Text, nullable=False))


COSIGNATURE_TABLE = SQLModel.metadata.tables[COSIGNATURE_TABLE_NAME]


def _parse_time(value: str) -> datetime:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def store_cosignature(engine: Engine, cosignature: Cosignature) -> bool:
    """Keep a cosignature (once per head and witness); returns False if already stored."""
    row = {
        "tree_size": cosignature.tree_size,
        "log_key_id": cosignature.log_key_id,
        "witness_key_id": cosignature.witness_key_id,
        "root_hash": cosignature.root_hash,
        "cosigned_at": _parse_time(cosignature.cosigned_at),
        "signature": cosignature.signature,
    }
    try:
        with engine.begin() as conn:
            conn.execute(insert(COSIGNATURE_TABLE), [row])
    except IntegrityError:
        return False
    return True


def stored_cosignatures(conn: Connection, *, up_to: int | None = None) -> list[Cosignature]:
    """Every stored cosignature (of heads up to `up_to`), smallest tree first."""
    statement = select(COSIGNATURE_TABLE).order_by(
        COSIGNATURE_TABLE.c.tree_size, COSIGNATURE_TABLE.c.witness_key_id
    )
    if up_to is not None:
        statement = statement.where(COSIGNATURE_TABLE.c.tree_size <= up_to)
    return [
        Cosignature(
            tree_size=row.tree_size,
            root_hash=row.root_hash,
            log_key_id=row.log_key_id,
            witness_key_id=row.witness_key_id,
            cosigned_at=format_timestamp(row.cosigned_at),
            signature=row.signature,
        )
        for row in conn.execute(statement)
    ]


_SQLITE_TRIGGER = (
    "CREATE TRIGGER IF NOT EXISTS {table}_no_{op} BEFORE {verb} ON {table} "
    f"BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY_MESSAGE}'); END"
)


_POSTGRES_FUNCTION = f"""
CREATE OR REPLACE FUNCTION audit_cosignature_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '{APPEND_ONLY_MESSAGE} (% on %)', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END;
$$
"""


def install_cosignature_triggers(connection: Connection) -> None:
    """Make the database refuse UPDATE and DELETE on cosignatures, like on the log itself.

    The PostgreSQL trigger function is the table's own, so the log's triggers can be
    dropped and installed again (as migrations and tests do) without touching these.
    """
    table = COSIGNATURE_TABLE_NAME
    if connection.dialect.name == "sqlite":
        for op, verb in (("update", "UPDATE"), ("delete", "DELETE")):
            connection.execute(text(_SQLITE_TRIGGER.format(table=table, op=op, verb=verb)))
    elif connection.dialect.name == "postgresql":
        connection.execute(text(_POSTGRES_FUNCTION))
        for trigger, when in (
            ("append_only", "BEFORE UPDATE OR DELETE ON {table} FOR EACH ROW"),
            ("no_truncate", "BEFORE TRUNCATE ON {table} FOR EACH STATEMENT"),
        ):
            connection.execute(text(f"DROP TRIGGER IF EXISTS {table}_{trigger} ON {table}"))
            connection.execute(
                text(
                    f"CREATE TRIGGER {table}_{trigger} {when.format(table=table)} "
                    "EXECUTE FUNCTION audit_cosignature_refuse_change()"
                )
            )
    else:
        raise NotImplementedError(f"no append-only triggers for {connection.dialect.name!r}")


def remove_cosignature_triggers(connection: Connection) -> None:
    """Drop the cosignature table's triggers (downgrade and tests only)."""
    table = COSIGNATURE_TABLE_NAME
    if connection.dialect.name == "sqlite":
        for op in ("update", "delete"):
            connection.execute(text(f"DROP TRIGGER IF EXISTS {table}_no_{op}"))
    elif connection.dialect.name == "postgresql":
        connection.execute(text(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}"))
        connection.execute(text(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}"))
        connection.execute(text("DROP FUNCTION IF EXISTS audit_cosignature_refuse_change()"))
