"""Bad input changes nothing: every malformed, invalid or unauthenticated request gets a 4xx
problem+json answer (type, title, status, detail), never echoes the personal values it
carried, and leaves the database (referral, consent and status_history rows, the
referral's version and stage) and the referral's workflow exactly as they were.

Table-driven: each case names the route, the caller, the body and the status it expects.
The referrals the cases aim at are brought, once per module and concurrently, to the stage
in which a valid request on that route would change them (awaiting consent, offered,
accepted, in progress, outcome reported), so "nothing changed" means something.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from fastapi import FastAPI
from sqlalchemy import Engine
from temporalio.client import Client
from temporalio.worker import Worker

from tests.integration.audit_probe import (
    assert_no_echo,
    assert_problem,
    settled,
    snapshot,
    walk_routes,
)
from tests.integration.journey import (
    CGG,
    CLINICAL_NOTE,
    NOTE,
    OFFICE,
    OTHER_OFFICE,
    PERSON,
    PHONE,
    WELFARE_NOTE,
    Journey,
    consent_body,
    new_referral,
)
from tests.tokens import TokenMinter

pytestmark = pytest.mark.integration

ADDRESS = "Teststraat 1, 2000 Antwerpen"
PERSONAL = [PERSON["name"], PERSON["national_number"], PHONE, NOTE, ADDRESS]
BAD_NATIONAL_NUMBER = "91.04.17-123.4X"
BAD_PHONE = "call Zoë on 0470 12 34 56 after 5pm"
LIMIT = 16 * 1024  # settings.max_body_bytes in the integration settings
DROP = object()  # a marker: remove the key


# ---- the referrals the cases aim at ------------------------------------------------------


@dataclass(frozen=True)
class Targets:
    """Referral ids by the stage they wait in."""

    ids: dict[str, str]

    def __getitem__(self, key: str) -> str:
        return self.ids[key]


async def _to_stage(j: Journey, stage: str) -> None:
    await j.create()
    if stage == "awaiting_consent":
        return
    await j.step(OFFICE, "consent", consent_body())
    await j.wait_stage("offered")
    if stage == "offered":
        return
    await j.step(CGG, "accept")
    if stage == "accepted":
        return
    await j.step(CGG, "intake", {"intake_date": datetime.now(UTC).isoformat()})
    if stage == "in_progress":
        return
    await j.step(CGG, "close", {"outcome": "completed"})
    await j.wait_stage("outcome_reported")


@pytest.fixture(scope="module")
async def client(app: FastAPI, worker: Worker) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


@pytest.fixture(scope="module")
def temporal(app: FastAPI) -> Client:
    client: Client = app.state.temporal
    return client


@pytest.fixture(scope="module")
async def targets(
    client: httpx.AsyncClient, minter: TokenMinter, engine: Engine, temporal: Client
) -> Targets:
    stages = ["awaiting_consent", "offered", "accepted", "in_progress", "outcome_reported"]
    journeys = [Journey(client, minter) for _ in stages]
    await asyncio.gather(*(_to_stage(j, s) for j, s in zip(journeys, stages, strict=True)))
    ids = {}
    for j, stage in zip(journeys, stages, strict=True):
        assert j.id is not None
        state = await settled(engine, temporal, j.id)
        assert state.stage == stage, state
        ids[stage] = j.id
    return Targets(ids)


# ---- the cases --------------------------------------------------------------------------


@dataclass
class Case:
    id: str
    method: str
    path: str  # "{id}" is replaced by the target referral's id
    target: str = "awaiting_consent"
    party: tuple[str, str] = OFFICE
    json: Any = DROP
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    status: int | tuple[int, ...] = 422
    secrets: list[str] = field(default_factory=list)
    # The dotted path of the field the 422 must name in its `errors` (issue 15: "names the
    # field"), where one field is at fault.
    names: str | None = None


def referral_with(*changes: tuple[str, Any]) -> dict[str, Any]:
    """A valid referral body with dotted-path changes (value DROP removes the key)."""
    body = new_referral()
    for dotted, value in changes:
        *parents, leaf = dotted.split(".")
        node = body
        for key in parents:
            node = node[key]
        if value is DROP:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return body


def consent_with(**changes: Any) -> dict[str, Any]:
    body = consent_body()
    for key, value in changes.items():
        if value is DROP:
            body.pop(key, None)
        else:
            body[key] = value
    return body


def create(case_id: str, body: Any = DROP, *, status: Any = 422, **kw: Any) -> Case:
    secrets = kw.pop("secrets", []) + PERSONAL
    headers = kw.pop("headers", {"Idempotency-Key": f"bad-{uuid.uuid4()}"})
    return Case(
        f"create-{case_id}",
        "POST",
        "/api/v1/referrals",
        json=body,
        status=status,
        secrets=secrets,
        headers=headers,
        **kw,
    )


def step(
    route: str, case_id: str, body: Any = DROP, *, target: str, party: tuple[str, str], **kw: Any
) -> Case:
    return Case(
        f"{route}-{case_id}",
        "POST",
        f"/api/v1/referrals/{{id}}/{route}",
        target=target,
        party=party,
        json=body,
        **kw,
    )


def consent(case_id: str, body: Any = DROP, **kw: Any) -> Case:
    return step("consent", case_id, body, target="awaiting_consent", party=OFFICE, **kw)


def decline(case_id: str, body: Any = DROP, **kw: Any) -> Case:
    return step("decline", case_id, body, target="offered", party=CGG, **kw)


def intake(case_id: str, body: Any = DROP, **kw: Any) -> Case:
    return step("intake", case_id, body, target="accepted", party=CGG, **kw)


def progress(case_id: str, body: Any = DROP, **kw: Any) -> Case:
    kw.setdefault("secrets", [CLINICAL_NOTE, WELFARE_NOTE])
    return step("progress", case_id, body, target="in_progress", party=CGG, **kw)


def close(case_id: str, body: Any = DROP, **kw: Any) -> Case:
    kw.setdefault("secrets", [CLINICAL_NOTE])
    return step("close", case_id, body, target="in_progress", party=CGG, **kw)


def decision(case_id: str, body: Any = DROP, **kw: Any) -> Case:
    return step("decision", case_id, body, target="outcome_reported", party=OFFICE, **kw)


def assign(case_id: str, body: Any = DROP, **kw: Any) -> Case:
    return step("care-team", case_id, body, target="in_progress", party=CGG, **kw)


JSON = {"Content-Type": "application/json"}
LONG_NAME = "Zoë " + "x" * 200  # 204 characters: over the 200 of a name
LONG_NOTE = "Referrer note " + "n" * 2000  # over the 2000 of a long text
LONG_CLINICAL = "Clinical: " + "c" * 2000
PAST = (datetime.now(UTC) - timedelta(days=1)).isoformat()
FUTURE_DAY = (datetime.now(UTC) + timedelta(days=2)).date().isoformat()
UNKNOWN = "00000000-0000-4000-8000-000000000000"

CREATE_CASES = [
    # not JSON, or JSON of the wrong shape
    create("malformed-json", content=b'{"framework_id": ', headers=JSON),
    create(
        "truncated-json-with-personal-data",
        content=json.dumps(new_referral()).encode()[:-20],
        headers=JSON,
    ),
    create("json-array", []),
    create("json-string", "a referral"),
    create("json-number", 42),
    create("json-null", None),
    create("empty-body", content=b"", headers=JSON),
    create(
        "not-json-content-type",
        content=json.dumps(new_referral()).encode(),
        headers={"Content-Type": "text/plain"},
    ),
    create(
        "deeply-nested-json", content=b"[" * 5000 + b"]" * 5000, headers=JSON, status=(400, 422)
    ),
    create("nan", referral_with(("framework_id", float("nan")))),
    # wrong types
    create("framework-id-number", referral_with(("framework_id", 123))),
    create("identity-string", referral_with(("identity", PERSON["name"]))),
    create("identity-list", referral_with(("identity", [PERSON["name"]]))),
    create("birth-date-list", referral_with(("identity.birth_date", ["1991", "04", "17"]))),
    create("name-number", referral_with(("identity.name", 42))),
    create("language-number", referral_with(("language", 1))),
    create("contact-list", referral_with(("contact", [PHONE]))),
    create("note-object", referral_with(("referral_reason.note", {"text": NOTE}))),
    # unknown fields
    create("unknown-top-level", referral_with(("nickname", PERSON["name"]))),
    create("unknown-in-identity", referral_with(("identity.alias", PERSON["name"]))),
    create(
        "unknown-in-contact",
        referral_with(("contact.email", "zoe@example.org")),
        secrets=["zoe@example.org"],
    ),
    create("unknown-in-judicial-context", referral_with(("judicial_context.judge", "X"))),
    create(
        "unknown-in-reason",
        referral_with(("referral_reason.diagnosis", CLINICAL_NOTE)),
        secrets=[CLINICAL_NOTE],
    ),
    # missing required fields
    create("missing-framework", referral_with(("framework_id", DROP))),
    create("missing-identity", referral_with(("identity", DROP))),
    create("missing-name", referral_with(("identity.name", DROP))),
    create("missing-national-number", referral_with(("identity.national_number", DROP))),
    create("missing-birth-date", referral_with(("identity.birth_date", DROP))),
    create("missing-judicial-context", referral_with(("judicial_context", DROP))),
    create("missing-notice-number", referral_with(("judicial_context.notice_number", DROP))),
    create("missing-reason", referral_with(("referral_reason", DROP))),
    create("missing-district", referral_with(("district", DROP))),
    create("missing-language", referral_with(("language", DROP))),
    # invalid values
    create("offence-unknown", referral_with(("judicial_context.offence_category", "murder"))),
    create("target-group-unknown", referral_with(("referral_reason.target_group", "alcohol"))),
    create("framework-not-uuid", referral_with(("framework_id", "not-a-uuid"))),
    create("framework-unknown", referral_with(("framework_id", UNKNOWN)), status=(403, 422)),
    create(
        "national-number-shape",
        referral_with(("identity.national_number", BAD_NATIONAL_NUMBER)),
        secrets=[BAD_NATIONAL_NUMBER],
    ),
    create("national-number-short", referral_with(("identity.national_number", "910417"))),
    create(
        "national-number-long", referral_with(("identity.national_number", "91.04.17-123.45.678"))
    ),
    create("birth-date-1850", referral_with(("identity.birth_date", "1850-01-01"))),
    create("birth-date-future", referral_with(("identity.birth_date", "2999-01-01"))),
    create("birth-date-impossible", referral_with(("identity.birth_date", "1991-02-30"))),
    create("birth-date-format", referral_with(("identity.birth_date", "17/04/1991"))),
    create("phone-words", referral_with(("contact.phone", BAD_PHONE)), secrets=[BAD_PHONE]),
    create("phone-too-long", referral_with(("contact.phone", "+32 " + "4" * 40))),
    create("district-uppercase", referral_with(("district", "Antwerpen"))),
    create("district-digits", referral_with(("district", "antwerpen1"))),
    create("district-too-long", referral_with(("district", "a" * 70))),
    create("language-unknown", referral_with(("language", "es"))),
    create("language-uppercase", referral_with(("language", "NL"))),
    create("notice-number-chars", referral_with(("judicial_context.notice_number", "AN 12 <b>"))),
    create("deadline-not-a-date", referral_with(("judicial_context.deadline", "soon"))),
    # plausible shape, impossible content (outside test, issue 15 item 3)
    create(
        "national-number-check-digits",
        referral_with(("identity.national_number", "91.04.17-123.46")),
        secrets=["91.04.17-123.46"],
        names="identity.national_number",
    ),
    create(
        "national-number-other-birth-date",
        # check digits right (97 - 900203123 mod 97 = 42), but born 1991-04-17
        referral_with(("identity.national_number", "90.02.03-123.42")),
        secrets=["90.02.03-123.42"],
        names="identity.national_number",
    ),
    create(
        "name-nul-byte",
        referral_with(("identity.name", "Zoë\x00Test")),
        secrets=["Zoë\x00Test"],
        names="identity.name",
    ),
    create(
        "name-right-to-left-override",
        referral_with(("identity.name", "Zoë \u202eTest")),
        secrets=["Zoë \u202eTest"],
        names="identity.name",
    ),
    create(
        "name-zero-width-space",
        referral_with(("identity.name", "Zo\u200bë Test")),
        secrets=["Zo\u200bë Test"],
        names="identity.name",
    ),
    create(
        "note-bidi-isolate",
        referral_with(("referral_reason.note", "note \u2066hidden\u2069")),
        names="referral_reason.note",
    ),
    create("district-unknown", referral_with(("district", "atlantis")), names="district"),
    create(
        "deadline-in-2000",
        referral_with(("judicial_context.deadline", "2000-01-01")),
        names="judicial_context.deadline",
    ),
    create(
        "deadline-far-ahead",
        referral_with(("judicial_context.deadline", "2099-01-01")),
        names="judicial_context.deadline",
    ),
    # lengths
    create("name-too-long", referral_with(("identity.name", LONG_NAME)), secrets=[LONG_NAME]),
    create("name-empty", referral_with(("identity.name", ""))),
    create("name-blank", referral_with(("identity.name", "   "))),
    create("address-too-long", referral_with(("contact.address", "Teststraat " + "1" * 200))),
    create(
        "substance-too-long", referral_with(("referral_reason.substance_or_behaviour", "c" * 201))
    ),
    create(
        "note-too-long", referral_with(("referral_reason.note", LONG_NOTE)), secrets=[LONG_NOTE]
    ),
    create("notice-number-too-long", referral_with(("judicial_context.notice_number", "A" * 41))),
    # the Idempotency-Key header
    create("idempotency-key-short", new_referral(), headers={"Idempotency-Key": "abc"}),
    create(
        "idempotency-key-chars", new_referral(), headers={"Idempotency-Key": "bad key with spaces!"}
    ),
    create("idempotency-key-long", new_referral(), headers={"Idempotency-Key": "k" * 201}),
    create("idempotency-key-empty", new_referral(), headers={"Idempotency-Key": ""}),
    # over the body limit, announced with Content-Length
    create(
        "oversized-content-length",
        content=json.dumps(referral_with(("referral_reason.note", "n" * (LIMIT + 1)))).encode(),
        headers=JSON,
        status=413,
    ),
    create(
        "oversized-content-length-not-json", content=b"x" * (LIMIT + 1), headers=JSON, status=413
    ),
]

CONSENT_CASES = [
    # a consent lacking a part of its valid form (services.consent.check_form)
    consent("no-referral-to-care-purpose", consent_with(purposes=["care_team_sharing"])),
    consent("no-purposes", consent_with(purposes=[])),
    consent("no-categories", consent_with(categories=[])),
    consent("no-recipients", consent_with(recipients=[])),
    consent("no-disclosers", consent_with(disclosers=[])),
    consent("right-to-revoke-not-explained", consent_with(right_to_revoke_explained=False)),
    consent("right-to-revoke-missing", consent_with(right_to_revoke_explained=DROP)),
    consent("no-valid-until", consent_with(valid_until=DROP)),
    consent("valid-until-null", consent_with(valid_until=None)),
    consent("valid-until-past", consent_with(valid_until=PAST)),
    consent("valid-until-naive", consent_with(valid_until="2030-01-01T00:00:00")),
    consent("valid-until-not-a-date", consent_with(valid_until="next year")),
    consent("evidence-hash-md5", consent_with(evidence_hash="md5:" + "ab" * 16)),
    consent("evidence-hash-uppercase", consent_with(evidence_hash="sha256:" + "AB" * 32)),
    consent("evidence-hash-short", consent_with(evidence_hash="sha256:abc")),
    consent("evidence-hash-missing", consent_with(evidence_hash=DROP)),
    # wrong types, unknown fields, invalid items
    consent("purposes-string", consent_with(purposes="referral_to_care")),
    consent("purpose-unknown", consent_with(purposes=["referral_to_care", "marketing"])),
    consent("purposes-too-many", consent_with(purposes=["referral_to_care"] * 4)),
    consent("category-unknown", consent_with(categories=["identity", "genome"])),
    consent("category-number", consent_with(categories=[1])),
    consent("recipient-shape", consent_with(recipients=["Not A Party!"])),
    consent("recipients-too-many", consent_with(recipients=[f"org-{i}" for i in range(21)])),
    consent("given-word", consent_with(given="maybe")),
    consent("right-to-revoke-list", consent_with(right_to_revoke_explained=[True])),
    consent("unknown-field", consent_with(signature=PERSON["name"]), secrets=[PERSON["name"]]),
    # who signed, in which capacity, when and how: codes, never a name
    consent("no-signer", consent_with(signed_by=DROP)),
    consent("no-signer-capacity", consent_with(signer_capacity=DROP)),
    consent("person-signs-as-guardian", consent_with(signer_capacity="guardian")),
    consent("signed-on-missing", consent_with(signed_on=DROP)),
    consent("signed-on-future", consent_with(signed_on=FUTURE_DAY)),
    consent("signed-on-not-a-date", consent_with(signed_on="yesterday")),
    consent("signing-method-unknown", consent_with(signing_method="fax")),
    consent("signing-method-missing", consent_with(signing_method=DROP)),
    consent("signed-by-a-name", consent_with(signed_by=PERSON["name"]), secrets=[PERSON["name"]]),
    consent("json-array", []),
    consent("malformed-json", content=b'{"purposes": [', headers=JSON),
    consent(
        "oversized",
        content=json.dumps(consent_with(evidence_hash="x" * LIMIT)).encode(),
        headers=JSON,
        status=413,
    ),
]

STEP_CASES = [
    decline("missing-reason", {}),
    decline("reason-unknown", {"reason": "too_busy"}),
    decline("reason-number", {"reason": 3}),
    decline("reason-list", {"reason": ["no_capacity"]}),
    decline("unknown-field", {"reason": "no_capacity", "comment": "full"}),
    decline("no-body"),
    decline("json-array", []),
    decline("malformed-json", content=b"{reason: no_capacity}", headers=JSON),
    intake("missing-date", {}),
    intake("date-words", {"intake_date": "tomorrow"}),
    intake("date-naive", {"intake_date": "2026-11-28T10:00:00"}),
    intake("attended-word", {"intake_date": datetime.now(UTC).isoformat(), "attended": "perhaps"}),
    intake("unknown-field", {"intake_date": datetime.now(UTC).isoformat(), "room": "3"}),
    intake("no-body"),
    progress("missing-attendance", {"clinical_note": CLINICAL_NOTE}),
    progress("attendance-unknown", {"attendance": "sometimes", "clinical_note": CLINICAL_NOTE}),
    progress(
        "clinical-note-too-long",
        {"attendance": "attending", "clinical_note": LONG_CLINICAL},
        secrets=[LONG_CLINICAL, CLINICAL_NOTE],
    ),
    progress("clinical-note-empty", {"attendance": "attending", "clinical_note": ""}),
    progress("welfare-note-number", {"attendance": "attending", "welfare_note": 7}),
    progress("unknown-field", {"attendance": "attending", "diagnosis": CLINICAL_NOTE}),
    progress(
        "unknown-field-with-notes",
        {
            "attendance": "attending",
            "clinical_note": CLINICAL_NOTE,
            "welfare_note": WELFARE_NOTE,
            "extra": 1,
        },
    ),
    progress("no-body"),
    close("missing-outcome", {"clinical_note": CLINICAL_NOTE}),
    close("outcome-unknown", {"outcome": "cured", "clinical_note": CLINICAL_NOTE}),
    close("outcome-number", {"outcome": 1}),
    close(
        "clinical-note-too-long",
        {"outcome": "completed", "clinical_note": LONG_CLINICAL},
        secrets=[LONG_CLINICAL],
    ),
    close(
        "unknown-field",
        {"outcome": "completed", "welfare_note": WELFARE_NOTE},
        secrets=[WELFARE_NOTE],
    ),
    close("no-body"),
    decision("missing-decision", {}),
    decision("decision-unknown", {"decision": "jail"}),
    decision("decision-list", {"decision": ["dismissed"]}),
    decision("unknown-field", {"decision": "dismissed", "reason": "x"}),
    decision("no-body"),
    # a care worker is named by their identity-provider subject id, never by name or e-mail
    assign("missing-subject", {}),
    assign("subject-a-name", {"subject": PERSON["name"]}, secrets=[PERSON["name"]]),
    assign("subject-an-email", {"subject": "zoe.test@example.org"}, secrets=["zoe.test"]),
    assign("subject-empty", {"subject": ""}),
    assign("subject-too-long", {"subject": "w" * 201}),
    assign("subject-number", {"subject": 7}),
    assign("subject-list", {"subject": ["w-1"]}),
    assign("unknown-field", {"subject": "w-1", "name": PERSON["name"]}, secrets=[PERSON["name"]]),
    assign("no-body"),
    assign("json-array", []),
    assign("malformed-json", content=b"{subject: w-1}", headers=JSON),
    Case(
        "release-subject-a-name",
        "POST",
        "/api/v1/referrals/{id}/care-team/Zo%C3%AB%20Test/release",
        target="in_progress",
        party=CGG,
    ),
    Case(
        "release-not-assigned",
        "POST",
        "/api/v1/referrals/{id}/care-team/nobody-assigned/release",
        target="in_progress",
        party=CGG,
        status=404,
    ),
]

PATH_AND_QUERY_CASES = [
    Case("get-id-not-uuid", "GET", "/api/v1/referrals/not-a-uuid"),
    Case("get-id-number", "GET", "/api/v1/referrals/123"),
    Case("get-id-uuid-with-junk", "GET", f"/api/v1/referrals/{UNKNOWN}x"),
    Case("consents-id-not-uuid", "GET", "/api/v1/referrals/not-a-uuid/consents"),
    Case(
        "consent-id-not-uuid", "POST", "/api/v1/referrals/not-a-uuid/consent", json=consent_body()
    ),
    Case("cancel-id-not-uuid", "POST", "/api/v1/referrals/not-a-uuid/cancel"),
    Case("get-id-unknown", "GET", f"/api/v1/referrals/{UNKNOWN}", status=404),
    Case("consents-id-unknown", "GET", f"/api/v1/referrals/{UNKNOWN}/consents", status=404),
    Case(
        "consent-id-unknown",
        "POST",
        f"/api/v1/referrals/{UNKNOWN}/consent",
        json=consent_body(),
        status=404,
    ),
    Case("cancel-id-unknown", "POST", f"/api/v1/referrals/{UNKNOWN}/cancel", status=404),
    Case(
        "decision-id-unknown",
        "POST",
        f"/api/v1/referrals/{UNKNOWN}/decision",
        json={"decision": "dismissed"},
        status=404,
    ),
    Case("list-limit-0", "GET", "/api/v1/referrals?limit=0"),
    Case("list-limit-1000", "GET", "/api/v1/referrals?limit=1000"),
    Case("list-offset-negative", "GET", "/api/v1/referrals?offset=-1"),
    Case("list-limit-word", "GET", "/api/v1/referrals?limit=abc"),
    Case("list-offset-word", "GET", "/api/v1/referrals?offset=abc"),
    Case("list-limit-fraction", "GET", "/api/v1/referrals?limit=1.5"),
    Case("list-offset-huge", "GET", "/api/v1/referrals?offset=99999999999999999999"),
    Case(
        "explain-role-unknown",
        "GET",
        "/api/v1/policy/explain?role=king&sector=justice&relation=referrer&category=identity",
        party=("dpo-office", "auditor"),
    ),
    Case(
        "explain-both-category-and-action",
        "GET",
        "/api/v1/policy/explain?role=prosecutor&sector=justice&relation=referrer"
        "&category=identity&action=view_referral",
        party=("dpo-office", "auditor"),
    ),
]


def person_report(case_id: str, body: Any = DROP, **kw: Any) -> Case:
    """The DPO's request for a person's access report: the number is never echoed."""
    return Case(
        f"person-report-{case_id}",
        "POST",
        "/api/v1/audit/person-access-report",
        party=("dpo-office", "auditor"),
        json=body,
        secrets=kw.pop("secrets", []) + PERSONAL,
        **kw,
    )


PERSON_REPORT_CASES = [
    person_report("missing-number", {"lang": "nl"}, names="national_number"),
    person_report(
        "bad-check-digits",
        {"national_number": BAD_NATIONAL_NUMBER, "lang": "nl"},
        secrets=[BAD_NATIONAL_NUMBER],
        names="national_number",
    ),
    person_report(
        "number-a-name",
        {"national_number": PERSON["name"], "lang": "nl"},
        names="national_number",
    ),
    person_report("number-as-int", {"national_number": 91041712345, "lang": "nl"}),
    person_report(
        "unknown-language",
        {"national_number": PERSON["national_number"], "lang": "es"},
        names="lang",
    ),
    person_report(
        "unknown-field",
        {"national_number": PERSON["national_number"], "name": PERSON["name"]},
    ),
    person_report("no-body"),
    person_report("json-array", []),
    person_report("malformed-json", content=b"{national_number: 1}", headers=JSON),
]

ALL_CASES = CREATE_CASES + CONSENT_CASES + STEP_CASES + PATH_AND_QUERY_CASES + PERSON_REPORT_CASES


def _ids_are_unique() -> None:
    ids = [c.id for c in ALL_CASES]
    assert len(ids) == len(set(ids)), [i for i in ids if ids.count(i) > 1]


_ids_are_unique()


async def _send(
    api: httpx.AsyncClient, minter: TokenMinter, case: Case, referral_id: str
) -> httpx.Response:
    headers = {**minter.headers(*case.party), **case.headers}
    kwargs: dict[str, Any] = {"headers": headers}
    if case.content is not None:
        kwargs["content"] = case.content
    elif case.json is not DROP:
        kwargs["content"] = json.dumps(case.json).encode()  # NaN included, as a client may
        headers.setdefault("Content-Type", "application/json")
    return await api.request(case.method, case.path.replace("{id}", referral_id), **kwargs)


@pytest.mark.parametrize("case", ALL_CASES, ids=[c.id for c in ALL_CASES])
async def test_bad_request_is_refused_and_changes_nothing(
    case: Case,
    client: httpx.AsyncClient,
    minter: TokenMinter,
    engine: Engine,
    temporal: Client,
    targets: Targets,
) -> None:
    referral_id = targets[case.target]
    before = await snapshot(engine, temporal, referral_id)
    resp = await _send(client, minter, case, referral_id)
    assert_problem(resp, case.status)
    assert_no_echo(resp, case.secrets)
    if case.names is not None:
        named = [".".join(e["loc"][1:]) for e in resp.json()["errors"]]
        assert case.names in named, f"{case.id}: the problem names {named}, not {case.names}"
    after = await snapshot(engine, temporal, referral_id)
    assert after == before, f"{case.id} changed state: {before} -> {after}"


# ---- bodies over the limit without a Content-Length (chunked) -------------------------


async def _chunks(total: int, chunk: int = 4096) -> AsyncIterator[bytes]:
    body = json.dumps(referral_with(("referral_reason.note", "n" * total))).encode()
    for start in range(0, len(body), chunk):
        yield body[start : start + chunk]


async def test_streamed_oversized_body_is_refused_and_creates_nothing(
    client: httpx.AsyncClient,
    minter: TokenMinter,
    engine: Engine,
    temporal: Client,
    targets: Targets,
) -> None:
    referral_id = targets["awaiting_consent"]
    before = await snapshot(engine, temporal, referral_id)
    headers = {
        **minter.headers(*OFFICE),
        "Content-Type": "application/json",
        "Idempotency-Key": f"bad-{uuid.uuid4()}",
    }
    resp = await client.post("/api/v1/referrals", content=_chunks(2 * LIMIT), headers=headers)
    assert "content-length" not in {k.lower() for k in resp.request.headers}
    assert_problem(resp, 413)
    assert_no_echo(resp, PERSONAL)
    assert await snapshot(engine, temporal, referral_id) == before


async def test_streamed_oversized_body_to_a_step_without_body_changes_nothing(
    client: httpx.AsyncClient, minter: TokenMinter, engine: Engine, temporal: Client
) -> None:
    """The 16 KiB limit holds for every route, also those that never read their body."""
    j = Journey(client, minter)
    await j.create()
    assert j.id is not None
    before = await settled(engine, temporal, j.id)
    headers = {**minter.headers(*OFFICE), "Content-Type": "application/json"}
    resp = await client.post(
        f"/api/v1/referrals/{j.id}/cancel", content=_chunks(2 * LIMIT), headers=headers
    )
    assert_problem(resp, 413)
    assert await snapshot(engine, temporal, j.id) == before
    # control: the probe does see a change when a step happens
    done = await client.post(f"/api/v1/referrals/{j.id}/cancel", headers=minter.headers(*OFFICE))
    assert done.status_code == 200, done.text
    assert await settled(engine, temporal, j.id) != before


# ---- authentication ---------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _parts(token: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    head, payload, signature = token.split(".")
    return json.loads(_unb64(head)), json.loads(_unb64(payload)), signature


def _unsigned(header: dict[str, Any], claims: dict[str, Any]) -> str:
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"


def _valid_claims(minter: TokenMinter) -> dict[str, Any]:
    return _parts(minter.mint(*OFFICE))[1]


def _alg_none(minter: TokenMinter) -> str:
    return _unsigned({"alg": "none", "typ": "JWT", "kid": minter.kid}, _valid_claims(minter)) + "."


def _hs256_with_public_pem(minter: TokenMinter) -> str:
    pem = minter.key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    signing_input = _unsigned(
        {"alg": "HS256", "typ": "JWT", "kid": minter.kid}, _valid_claims(minter)
    )
    signature = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


_OTHER_KEY: list[rsa.RSAPrivateKey] = []


def _other_key_same_kid(minter: TokenMinter) -> str:
    if not _OTHER_KEY:
        _OTHER_KEY.append(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    return jwt.encode(
        _valid_claims(minter), _OTHER_KEY[0], algorithm="RS256", headers={"kid": minter.kid}
    )


def _tampered(minter: TokenMinter) -> str:
    # a valid token of another office, its organisation changed without re-signing
    header, claims, signature = _parts(minter.mint(*OTHER_OFFICE))
    claims["organization"] = {"parket-antwerpen": {"sector": ["justice"]}}
    return f"{_unsigned(header, claims)}.{signature}"


def _signature_stripped(minter: TokenMinter) -> str:
    header, claims, _ = _parts(minter.mint(*OFFICE))
    return _unsigned(header, claims) + "."


def _no_exp(minter: TokenMinter) -> str:
    claims = _valid_claims(minter)
    claims.pop("exp")
    return jwt.encode(claims, minter.key, algorithm="RS256", headers={"kid": minter.kid})


def _unknown_kid(minter: TokenMinter) -> str:
    return jwt.encode(
        _valid_claims(minter), minter.key, algorithm="RS256", headers={"kid": "no-such-key"}
    )


def _now() -> int:
    return int(time.time())


AuthMaker = Callable[[TokenMinter], dict[str, str]]


def _bearer(make: Callable[[TokenMinter], str]) -> AuthMaker:
    return lambda minter: {"Authorization": f"Bearer {make(minter)}"}


AUTH_CASES: list[tuple[str, AuthMaker]] = [
    ("no-authorization-header", lambda m: {}),
    ("basic-scheme", lambda m: {"Authorization": "Basic dXNlcjpwYXNzd29yZA=="}),
    ("token-without-scheme", lambda m: {"Authorization": m.mint(*OFFICE)}),
    ("empty-bearer", lambda m: {"Authorization": "Bearer "}),
    ("garbage-token", _bearer(lambda m: "not.a.jwt")),
    ("random-bytes", _bearer(lambda m: _b64(uuid.uuid4().bytes * 4))),
    ("overlong-token", _bearer(lambda m: "a" * 9000)),
    ("expired", _bearer(lambda m: m.mint(*OFFICE, exp=_now() - 3600, iat=_now() - 7200))),
    ("not-yet-valid", _bearer(lambda m: m.mint(*OFFICE, nbf=_now() + 3600))),
    ("wrong-audience", _bearer(lambda m: m.mint(*OFFICE, aud="another-api"))),
    ("wrong-issuer", _bearer(lambda m: m.mint(*OFFICE, iss="http://127.0.0.1/realms/evil"))),
    ("no-exp", _bearer(_no_exp)),
    ("alg-none", _bearer(_alg_none)),
    ("hs256-with-public-key-pem", _bearer(_hs256_with_public_pem)),
    ("other-rsa-key-same-kid", _bearer(_other_key_same_kid)),
    ("unknown-kid", _bearer(_unknown_kid)),
    ("tampered-payload", _bearer(_tampered)),
    ("signature-stripped", _bearer(_signature_stripped)),
    ("no-organisation", _bearer(lambda m: m.mint(*OFFICE, organization=None))),
    ("empty-organisation", _bearer(lambda m: m.mint(*OFFICE, organization={}))),
    (
        "two-organisations",
        _bearer(
            lambda m: m.mint(
                *OFFICE,
                organization={
                    "parket-antwerpen": {"sector": ["justice"]},
                    "parquet-bruxelles": {"sector": ["justice"]},
                },
            )
        ),
    ),
    ("unknown-sector", _bearer(lambda m: m.mint(*OFFICE, sector="finance"))),
    ("empty-subject", _bearer(lambda m: m.mint(*OFFICE, sub=""))),
]

AUTH_ROUTES = {
    "create": ("POST", "/api/v1/referrals"),
    "consent": ("POST", "/api/v1/referrals/{id}/consent"),
    "cancel": ("POST", "/api/v1/referrals/{id}/cancel"),
    "read": ("GET", "/api/v1/referrals/{id}"),
}


@pytest.mark.parametrize("route", list(AUTH_ROUTES))
@pytest.mark.parametrize("make", [m for _, m in AUTH_CASES], ids=[n for n, _ in AUTH_CASES])
async def test_bad_credentials_are_refused_and_change_nothing(
    make: AuthMaker,
    route: str,
    client: httpx.AsyncClient,
    minter: TokenMinter,
    engine: Engine,
    temporal: Client,
    targets: Targets,
) -> None:
    referral_id = targets["awaiting_consent"]
    method, path = AUTH_ROUTES[route]
    body = {
        "create": new_referral(),
        "consent": consent_body(),
    }.get(route)
    auth = make(minter)
    headers = {**auth, "Idempotency-Key": f"auth-{uuid.uuid4()}"}
    before = await snapshot(engine, temporal, referral_id)
    resp = await client.request(
        method, path.replace("{id}", referral_id), json=body, headers=headers
    )
    assert_problem(resp, 401)
    assert "www-authenticate" in resp.headers
    assert_no_echo(resp, [*PERSONAL, *[v.split(" ")[-1] for v in auth.values() if len(v) > 12]])
    assert await snapshot(engine, temporal, referral_id) == before


# ---- what answers without a token, and what does not -----------------------------------


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/openapi.json", "/docs"])
async def test_public_endpoints_answer_without_a_token(
    path: str, client: httpx.AsyncClient
) -> None:
    resp = await client.get(path)
    assert resp.status_code == 200, (path, resp.status_code, resp.text[:200])


def _api_routes(app: FastAPI) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in walk_routes(app) if r.path.startswith("/api/v1/")]


async def test_every_api_route_refuses_without_a_token(
    app: FastAPI,
    client: httpx.AsyncClient,
    engine: Engine,
    temporal: Client,
    targets: Targets,
) -> None:
    referral_id = targets["awaiting_consent"]
    routes = _api_routes(app)
    assert len(routes) >= 13, routes
    before = await snapshot(engine, temporal, referral_id)
    refused = {}
    for method, path in routes:
        url = path.replace("{referral_id}", referral_id).replace("{index}", "0")
        resp = await client.request(method, url)
        refused[(method, path)] = resp.status_code
        if resp.status_code == 401:
            assert_problem(resp, 401)
    assert {k: v for k, v in refused.items() if v != 401} == {}
    assert await snapshot(engine, temporal, referral_id) == before


def test_the_case_tables_cover_every_body_route(app: FastAPI) -> None:
    """Each /api/v1 route that takes a JSON body has bad-body cases here."""
    covered = {c.path.replace("{id}", "{referral_id}") for c in ALL_CASES if c.method == "POST"}
    with_body = {r.path for r in walk_routes(app) if r.path.startswith("/api/v1/") and r.has_body}
    assert with_body, "no /api/v1 route takes a body: the route walk is broken"
    assert with_body - covered == set()
