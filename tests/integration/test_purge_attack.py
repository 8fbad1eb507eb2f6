"""Proof by attack: after a referral is purged, nothing left finds the person again.

The attacker holds everything that outlives the purge: every table of the database (and on
SQLite the database files, free pages and write-ahead log included), the
workflow's Temporal history (fetched from the real dev server and decoded with the codec
and the key ring, as the Temporal UI's codec endpoint would), the captured logs and spans,
and the key ring itself. They know the person's name and birth date and look for them:

- the name and the national number, in every form, in all of it;
- a brute force of every valid national number of that birth date (sequence 001-998,
  check digits mod 97) through every hash the engine computes: the pseudonyms (keyed with
  the ring's pseudonym key), the create request's keyed fingerprint, plain SHA-256;
- the person field of the audit entries (which outlive the purge): for every candidate, the
  field as the audit gatekeeper once computed it (a keyed hash of the subject pseudonym),
  under every key the key ring still holds; and the referral's person tag as the gatekeeper
  computes it now, under the referral's payload key if it still opens and under every key of
  the ring;
- the consent form's reference, hashed plainly and keyed;
- the health-related target group in the referral and the readable history.

The same attack, run while the referral is still open, does find the person (the national
number comes out of the brute force): so the attack works, and after the purge it finds
nothing.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import ahocorasick
import httpx
import pytest
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from sqlalchemy import Engine, inspect, text
from sqlmodel import Session, select
from temporalio.api.common.v1 import Payload
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.testing import WorkflowEnvironment

from services import telemetry
from services.audit.models import person_tag
from services.case_content import ReferralCreate
from services.consent import evidence_fingerprint
from services.crypto import DecryptionError, EncryptionCodec, Pseudonymizer, ReferralPayloadKeys
from services.demo import DEMO_FRAMEWORK_ID
from services.models import CooperationFramework, FrameworkParticipant, Referral
from services.referrals import request_hash
from services.runtime import Runtime
from services.settings import Settings
from tests.integration.journey import CGG, OFFICE, Journey, consent_body, new_referral
from tests.sqlite_files import database_files
from tests.tokens import TokenMinter
from workflows.client import ensure_retention

BIRTH_DATE = date(1987, 9, 23)
NAME = "Quirijn Aerts-Vanderlinden"
SEQUENCE = "317"
TARGET_GROUP = "gambling"
EVIDENCE_REFERENCE = "CF/2026/004711"
# A framework whose retention periods are zero: the purge follows the decision at once.
FRAMEWORK_ID = uuid.UUID("5f1c0a3e-0000-4000-8000-00000000a77a")


def valid_national_number(birth: date, sequence: str) -> str:
    """A Belgian national number: YYMMDD, a sequence, and 97 - (the nine digits mod 97);
    for births from 2000 on the check is computed with a 2 in front."""
    base = birth.strftime("%y%m%d") + sequence
    number = int(("2" if birth.year >= 2000 else "") + base)
    return f"{base}{97 - number % 97:02d}"


def formatted(digits: str) -> str:
    return f"{digits[:2]}.{digits[2:4]}.{digits[4:6]}-{digits[6:9]}.{digits[9:]}"


NATIONAL_NUMBER = valid_national_number(BIRTH_DATE, SEQUENCE)
CANDIDATES = [valid_national_number(BIRTH_DATE, f"{s:03d}") for s in range(1, 999)]


def the_body(national_number: str) -> dict[str, Any]:
    body = new_referral(
        framework_id=str(FRAMEWORK_ID),
        identity={
            "name": NAME,
            "birth_date": BIRTH_DATE.isoformat(),
            "national_number": formatted(national_number),
        },
    )
    body["referral_reason"]["target_group"] = TARGET_GROUP
    body["referral_reason"]["substance_or_behaviour"] = "sports betting"
    return body


@pytest.fixture(scope="module")
def framework(engine: Engine) -> uuid.UUID:
    with Session(engine) as session:
        if session.get(CooperationFramework, FRAMEWORK_ID) is None:
            demo = session.get(CooperationFramework, DEMO_FRAMEWORK_ID)
            assert demo is not None
            copy = CooperationFramework(
                **{
                    **demo.model_dump(),
                    "id": FRAMEWORK_ID,
                    "name": "Test: retention of zero days",
                    "retention_justice_days": 0,
                    "retention_care_days": 0,
                }
            )
            session.add(copy)
            session.flush()
            members = session.exec(
                select(FrameworkParticipant).where(
                    FrameworkParticipant.framework_id == DEMO_FRAMEWORK_ID
                )
            ).all()
            for member in members:
                session.add(
                    FrameworkParticipant(
                        framework_id=FRAMEWORK_ID, organisation_code=member.organisation_code
                    )
                )
            session.commit()
    return FRAMEWORK_ID


# ---- what is left --------------------------------------------------------------------


def _table_dump(engine: Engine) -> str:
    """Every row of every table, as text (bytes as hex too, so hashes stored raw count)."""
    lines = []
    with engine.connect() as conn:
        for table in inspect(conn).get_table_names():
            for row in conn.execute(text(f'SELECT * FROM "{table}"')):
                cells = [v.hex() if isinstance(v, bytes | memoryview) else v for v in row]
                lines.append(f"{table}: {cells!r}")
    return "\n".join(lines)


def _database_files(engine: Engine) -> str:
    """On SQLite, the database files themselves (free pages, the write-ahead log)."""
    if engine.dialect.name != "sqlite":
        return ""
    return database_files(Path(str(engine.url.database))).decode("latin-1")


def _payloads(message: Message) -> list[Payload]:
    """Every Payload anywhere in a protobuf message (history events nest them deeply)."""
    found: list[Payload] = []
    for descriptor, value in message.ListFields():
        if descriptor.type != FieldDescriptor.TYPE_MESSAGE:
            continue
        if isinstance(value, Message):
            items = [value]
        elif descriptor.message_type.GetOptions().map_entry:
            items = [v for v in value.values() if isinstance(v, Message)]
        else:
            items = list(value)  # a repeated field
        for item in items:
            if isinstance(item, Payload):
                found.append(item)
            else:
                found.extend(_payloads(item))
    return found


@dataclass
class TemporalLeftovers:
    raw: str
    readable: list[bytes] = field(default_factory=list)
    unreadable_referral_sealed: int = 0
    referral_sealed: int = 0


async def _temporal_history(
    dev_server: WorkflowEnvironment, runtime: Runtime, engine: Engine, referral_id: str
) -> TemporalLeftovers:
    handle = dev_server.client.get_workflow_handle(f"referral-{referral_id}")
    history = await handle.fetch_history()
    left = TemporalLeftovers(raw=history.to_json())
    # a fresh store: nothing cached from before the purge
    codec = EncryptionCodec(runtime.keyring, ReferralPayloadKeys(engine, runtime.keyring))
    for event in history.events:
        for payload in _payloads(event):
            key_id = payload.metadata.get("encryption-key-id", b"").decode()
            sealed_for_referral = key_id.startswith("rk-")
            left.referral_sealed += sealed_for_referral
            try:
                [plain] = await codec.decode([payload])
            except DecryptionError:
                left.unreadable_referral_sealed += sealed_for_referral
                continue
            left.readable.append(plain.SerializeToString())
    return left


def _logs_and_spans(caplog: pytest.LogCaptureFixture) -> str:
    parts = [r.getMessage() for r in caplog.records]
    parts += [repr(r.args) for r in caplog.records if r.args]
    exporter = telemetry.memory_exporter
    if exporter is not None:
        parts += [
            repr((s.name, dict(s.attributes or {}), s.events))
            for s in exporter.get_finished_spans()
        ]
    return "\n".join(parts)


# ---- the attack ----------------------------------------------------------------------


def _hashes_of(national_number: str, keys: list[bytes]) -> set[str]:
    """Everything a hash of this national number could look like in what is left, under
    every key the ring holds (a pseudonym key version made before a rotation included)."""
    forms = {national_number, formatted(national_number)}
    body = ReferralCreate.model_validate(the_body(national_number))
    found: set[str] = set()
    for key in keys:
        found.add(Pseudonymizer(key).national_number(national_number))
        found.add(request_hash(body, key))
    for form in forms:
        found.add(hashlib.sha256(form.encode()).hexdigest())
        found.add(hashlib.sha1(form.encode()).hexdigest())
    return found


def _ring_secrets(runtime: Runtime) -> list[bytes]:
    """Every secret key the key ring file still holds (any base64 value of 256 bits or more),
    whatever job it has: the attacker tries them all."""
    path = getattr(runtime.keyring, "path", None)
    assert isinstance(path, Path), "the attack reads the key ring file"
    found: list[bytes] = []

    def walk(value: object) -> None:
        if isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)
        elif isinstance(value, str):
            try:
                raw = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                return
            if len(raw) >= 32 and raw not in found:
                found.append(raw)

    walk(json.loads(path.read_text(encoding="utf-8")))
    return found


def _audit_persons(national_number: str, keys: list[bytes]) -> set[str]:
    """The audit entries' person field of this national number as the audit gatekeeper
    derived it from the subject pseudonym ("pp_" + HMAC(key, "audit-person:" + pseudonym)),
    with every pair of the ring's keys."""
    subjects = {Pseudonymizer(key).national_number(national_number) for key in keys}
    return {
        "pp_" + hmac.new(key, b"audit-person:" + subject.encode(), hashlib.sha256).hexdigest()[:32]
        for subject in subjects
        for key in keys
    }


@dataclass
class Findings:
    clear: list[str]
    national_numbers: set[str]
    # candidates found through the audit entries' person field
    audit_persons: set[str]
    # the referral's person tags recomputed and found (the key: "payload key" or "ring key")
    person_tags: list[str]
    other_hashes: list[str]
    target_group: list[str]


def attack(
    *,
    runtime: Runtime,
    engine: Engine,
    referral: Referral | None,
    evidence_hash: str,
    haystack: str,
) -> Findings:
    """Look for the person in `haystack` with everything the attacker knows or holds."""
    lowered = haystack.casefold()
    clear = [
        needle
        for needle in (
            NAME,
            *NAME.split(" "),
            *NAME.replace("-", " ").split(" "),
            NATIONAL_NUMBER,
            formatted(NATIONAL_NUMBER),
            EVIDENCE_REFERENCE,
        )
        if needle.casefold() in lowered
    ]
    keys = _ring_secrets(runtime)
    # ~7000 hashes (per key) against everything left (after the whole suite: the database dump, its
    # files and the histories, tens of megabytes): one pass of an Aho-Corasick automaton,
    # where a substring search per hash took hours
    automaton = ahocorasick.Automaton()
    for candidate in CANDIDATES:
        for h in _hashes_of(candidate, keys):
            automaton.add_word(h, candidate)
    automaton.make_automaton()
    national_numbers = {candidate for _, candidate in automaton.iter(haystack)}
    # the audit entries outlive the purge: their person field, derived for every candidate
    persons = ahocorasick.Automaton()
    for candidate in CANDIDATES:
        for h in _audit_persons(candidate, keys):
            persons.add_word(h, candidate)
    persons.make_automaton()
    audit_persons = {candidate for _, candidate in persons.iter(haystack)}
    # the referral's person tag, under its own payload key (a fresh store: nothing cached
    # from before the purge) if it still opens, and under every key of the ring
    person_tags = []
    if referral is not None:
        try:
            state = ReferralPayloadKeys(engine, runtime.keyring).state(referral.id)
        except DecryptionError:
            state = None
        if state is not None and state.key is not None:
            if person_tag(referral.id, state.key) in haystack:
                person_tags.append("payload key")
        if any(person_tag(referral.id, key) in haystack for key in keys):
            person_tags.append("ring key")
    other_hashes = [
        h
        for h in (
            evidence_hash.removeprefix("sha256:"),
            *(Pseudonymizer(key).name_and_birth_date(NAME, BIRTH_DATE) for key in keys),
            *(
                evidence_fingerprint(key, referral_id=referral.id, evidence_hash=evidence_hash)
                for key in (keys if referral is not None else [])
                if referral is not None
            ),
        )
        if h in haystack
    ]
    target_group = []
    if referral is not None and referral.target_group == TARGET_GROUP:
        target_group.append("referral.target_group")
    return Findings(clear, national_numbers, audit_persons, person_tags, other_hashes, target_group)


async def test_after_the_purge_nothing_finds_the_person(
    api: httpx.AsyncClient,
    minter: TokenMinter,
    engine: Engine,
    runtime: Runtime,
    dev_server: WorkflowEnvironment,
    framework: uuid.UUID,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    assert NATIONAL_NUMBER in CANDIDATES
    evidence_hash = "sha256:" + hashlib.sha256(EVIDENCE_REFERENCE.encode()).hexdigest()
    j = Journey(api, minter)
    created = await j.call(
        OFFICE,
        "POST",
        "/api/v1/referrals",
        the_body(NATIONAL_NUMBER),
        expect=201,
        headers={"Idempotency-Key": f"attack-{uuid.uuid4()}"},
    )
    j.id = created["id"]
    referral_id = uuid.UUID(created["id"])
    await j.step(OFFICE, "consent", consent_body(evidence_hash=evidence_hash))
    await j.wait_stage("offered")
    await j.step(CGG, "accept")
    await j.step(CGG, "intake", {"intake_date": datetime.now(UTC).isoformat()})
    await j.step(
        CGG,
        "progress",
        {"attendance": "attending", "clinical_note": f"{NAME} attends", "welfare_note": "ok"},
    )
    await j.step(CGG, "close", {"outcome": "completed"})
    await j.wait_stage("outcome_reported")

    def referral_row() -> Referral | None:
        with Session(engine) as session:
            return session.get(Referral, referral_id)

    async def everything_left() -> tuple[str, TemporalLeftovers]:
        temporal = await _temporal_history(dev_server, runtime, engine, str(referral_id))
        readable = "\n".join(p.decode("utf-8", errors="replace") for p in temporal.readable)
        haystack = "\n".join(
            [
                _table_dump(engine),
                _database_files(engine),
                temporal.raw,
                readable,
                _logs_and_spans(caplog),
            ]
        )
        return haystack, temporal

    # The control: while the referral is open the attack works. The brute force recovers
    # the national number from the pseudonym, and the history reads with the codec.
    before, temporal = await everything_left()
    found = attack(
        runtime=runtime,
        engine=engine,
        referral=referral_row(),
        evidence_hash=evidence_hash,
        haystack=before,
    )
    assert found.national_numbers == {NATIONAL_NUMBER}
    # the audit entries name the person by the referral's tag, which its key recomputes
    assert found.person_tags == ["payload key"]
    name_pseudonym = Pseudonymizer(runtime.keyring.pseudonym_key()).name_and_birth_date(
        NAME, BIRTH_DATE
    )
    assert name_pseudonym in found.other_hashes
    assert found.target_group
    assert temporal.referral_sealed > 0 and temporal.unreadable_referral_sealed == 0
    assert any(TARGET_GROUP.encode() in p for p in temporal.readable)

    await j.step(OFFICE, "decision", {"decision": "dismissed"})
    for _ in range(300):
        row = referral_row()
        if row is not None and row.purged_at is not None and row.stage == "purged":
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the referral was never purged")

    after, temporal = await everything_left()
    found = attack(
        runtime=runtime, engine=engine, referral=row, evidence_hash=evidence_hash, haystack=after
    )
    assert found == Findings(
        clear=[],
        national_numbers=set(),
        audit_persons=set(),
        person_tags=[],
        other_hashes=[],
        target_group=[],
    )
    # every payload sealed with the referral's key is unreadable; what still reads (the
    # purge's own result, the end) names no target group
    assert temporal.referral_sealed > 0
    assert temporal.unreadable_referral_sealed == temporal.referral_sealed
    assert not any(TARGET_GROUP.encode() in p for p in temporal.readable)
    # and the Temporal UI's codec endpoint cannot read it either
    admin = minter.headers("parket-antwerpen", "admin")
    history = await dev_server.client.get_workflow_handle(f"referral-{referral_id}").fetch_history()
    sealed = [
        p
        for e in history.events
        for p in _payloads(e)
        if p.metadata.get("encryption-key-id", b"").startswith(b"rk-")
    ]
    body = {"payloads": [json_format.MessageToDict(sealed[0])]}
    assert (await api.post("/codec/decode", json=body, headers=admin)).status_code == 422


async def test_the_namespace_keeps_closed_histories_as_long_as_set(
    dev_server: WorkflowEnvironment, settings: Settings
) -> None:
    """The worker sets the namespace retention (`temporal_retention_days`): after a purge
    ends a workflow, its (unreadable) history stays that long on the Temporal server."""
    client = dev_server.client
    service = client.workflow_service

    async def retention() -> timedelta:
        described = await service.describe_namespace(
            DescribeNamespaceRequest(namespace=settings.temporal_namespace)
        )
        return described.config.workflow_execution_retention_ttl.ToTimedelta()

    for days in (3, settings.temporal_retention_days):
        wanted = timedelta(days=days)
        await ensure_retention(
            client=client, namespace=settings.temporal_namespace, retention=wanted
        )
        assert await retention() == wanted
