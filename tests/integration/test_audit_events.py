"""Nothing unaudited (IHE BALP / ATNA): each event class is performed here and its entry
found, with the HL7 PurposeOfUse code, the source node, the client's address and the
person's pseudonym; and the DPO's access report of one person, read back from its PDF.

Every request goes through httpx's ASGI transport, whose client address is 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import io
import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pypdf import PdfReader
from sqlalchemy import Engine, func
from sqlmodel import Session, col, select

from services import person_report
from services.audit.models import AuditEntry, person_tag
from services.lifecycle import PurgeInput
from services.runtime import Runtime
from services.subject_report import LANGUAGES, translate
from tests.integration.journey import (
    AUDITOR,
    CGG,
    CGG_WORKER,
    OFFICE,
    Journey,
    consent_body,
)
from tests.integration.web_client import WebUser, main_of
from tests.tokens import TokenMinter
from workflows.activities import ReferralActivities

pytestmark = pytest.mark.integration

CLIENT = "127.0.0.1"
REPORT = "/api/v1/audit/person-access-report"


def national_number(serial: int) -> str:
    """A valid national number of someone born on 17 April 1991 (the journey's birth date)."""
    base = f"910417{serial:03d}"
    return f"{base[:2]}.{base[2:4]}.{base[4:6]}-{base[6:]}.{97 - int(base) % 97:02d}"


def person(serial: int) -> dict[str, str]:
    """A person of their own, so that one person's report holds only this test's referrals."""
    return {
        "name": f"Audit Testpersoon {serial}",
        "birth_date": "1991-04-17",
        "national_number": national_number(serial),
    }


def _last_index(engine: Engine) -> int:
    with Session(engine) as s:
        last = s.exec(select(func.max(AuditEntry.index))).one()
    return -1 if last is None else last


def _entries_after(engine: Engine, index: int) -> list[AuditEntry]:
    with Session(engine) as s:
        return list(
            s.exec(
                select(AuditEntry).where(AuditEntry.index > index).order_by(col(AuditEntry.index))
            ).all()
        )


def _entries_of(engine: Engine, runtime: Runtime, referral_id: str) -> list[AuditEntry]:
    pseudonym = runtime.gatekeeper.pseudonym(uuid.UUID(referral_id))
    with Session(engine) as s:
        return list(
            s.exec(
                select(AuditEntry)
                .where(AuditEntry.referral_pseudonym == pseudonym)
                .order_by(col(AuditEntry.index))
            ).all()
        )


async def _wait_for(
    engine: Engine, runtime: Runtime, referral_id: str, action: str, outcome: str = "success"
) -> AuditEntry:
    for _ in range(200):
        for entry in _entries_of(engine, runtime, referral_id):
            if entry.action == action and entry.outcome == outcome:
                return entry
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {action} entry ({outcome})")


def _sourced(entry: AuditEntry, runtime: Runtime, *, client: str | None = CLIENT) -> None:
    assert entry.source_node == runtime.gatekeeper.source_node and entry.source_node
    assert entry.client_address == client


async def test_failed_authentications_are_recorded(
    api: httpx.AsyncClient, engine: Engine, runtime: Runtime
) -> None:
    before = _last_index(engine)
    assert (await api.get("/api/v1/referrals")).status_code == 401
    bad = {"Authorization": "Bearer not-a-token"}
    assert (await api.get("/api/v1/referrals", headers=bad)).status_code == 401
    # a web login whose callback comes without a login in progress (or a forged state)
    assert (await api.get("/auth/callback?code=abc&state=forged")).status_code == 401
    entries = [e for e in _entries_after(engine, before) if e.actor_subject == "unauthenticated"]
    assert [(e.event_type, e.action, e.outcome) for e in entries] == [
        ("login", "authentication.api", "refused"),
        ("login", "authentication.api", "refused"),
        ("login", "authentication.web", "refused"),
    ]
    for entry in entries:
        assert entry.actor_subject == "unauthenticated" and entry.purpose_of_use == "HSYSADMIN"
        assert entry.categories == [] and entry.person_pseudonym is None
        _sourced(entry, runtime)


async def test_entries_name_the_person_by_a_tag_of_each_referral_with_purpose_and_source(
    api: httpx.AsyncClient, minter: TokenMinter, engine: Engine, runtime: Runtime
) -> None:
    first, second, other = Journey(api, minter), Journey(api, minter), Journey(api, minter)
    await first.create(identity=person(101))
    await second.create(identity=person(101))
    await other.create(identity=person(102))
    for journey in (first, second, other):
        await journey.view(OFFICE)
    assert first.id and second.id and other.id
    persons = {}
    for journey in (first, second, other):
        entries = _entries_of(engine, runtime, str(journey.id))
        assert {e.action for e in entries} >= {"referral.create", "referral.read"}
        assert len({e.person_pseudonym for e in entries}) == 1
        persons[journey.id] = entries[0].person_pseudonym
        read = next(e for e in entries if e.action == "referral.read")
        assert read.purpose_of_use == "JUSTFUP"  # local code: judicial follow-up
        _sourced(read, runtime)
        # the tag of the referral under its own payload key, which the purge destroys
        referral_id = uuid.UUID(str(journey.id))
        key = runtime.payload_keys.state(referral_id).key
        assert key is not None and persons[journey.id] == person_tag(referral_id, key)
    # one person, two referrals: two tags, which nothing at rest links (the DPO links them
    # from the national number while the referrals live)
    assert len(set(persons.values())) == 3
    assert all(str(p).startswith("pp_") for p in persons.values())
    # ... and never the national number, nor its referral-table pseudonym
    subject = runtime.pseudonymizer.national_number(national_number(101))
    assert subject not in persons.values() and national_number(101) not in str(persons)
    # the auditor finds the entries of a tag: that referral's
    found = await api.get(
        "/api/v1/audit/entries",
        params={"person_pseudonym": persons[first.id], "limit": 500},
        headers=minter.headers(*AUDITOR),
    )
    assert found.status_code == 200, found.text
    rows = found.json()["entries"]
    assert {r["referral_pseudonym"] for r in rows} == {
        runtime.gatekeeper.pseudonym(uuid.UUID(str(first.id)))
    }
    read = next(r for r in rows if r["action"] == "referral.read")
    assert read["purpose_of_use_system"] == "urn:referral:purpose-of-use"
    assert (read["source_node"], read["client_address"]) == (runtime.gatekeeper.source_node, CLIENT)
    bad = await api.get(
        "/api/v1/audit/entries",
        params={"person_pseudonym": national_number(101)},
        headers=minter.headers(*AUDITOR),
    )
    assert bad.status_code == 422 and national_number(101) not in bad.text

    def of_person_by_tags() -> set[str | None]:
        """The DPO's search by the tags alone: the person's referrals, from the national
        number, and each one's tag while its key is there."""
        with Session(runtime.engine) as session:
            ids = person_report.referral_ids_of(session=session, subject_pseudonyms=[subject])
            tags = [runtime.gatekeeper.person_tag(i, session) for i in ids]
            entries = person_report.entries_of_person(
                session=session, person_tags=[t for t in tags if t], referral_pseudonyms=[]
            )
        return {e.referral_pseudonym for e in entries}

    both = {runtime.gatekeeper.pseudonym(uuid.UUID(str(j.id))) for j in (first, second)}
    assert of_person_by_tags() == both
    # once one referral is purged (its payload key destroyed), only the other is found
    activities = ReferralActivities(
        engine=runtime.engine,
        shredder=runtime.vault,
        gatekeeper=runtime.gatekeeper,
        payload_keys=runtime.payload_keys,
    )
    second_id = uuid.UUID(str(second.id))
    await asyncio.to_thread(activities.purge, PurgeInput(referral_id=second_id))
    assert runtime.payload_keys.state(second_id).destroyed
    assert runtime.gatekeeper.person_tag(second_id) is None
    assert of_person_by_tags() == {runtime.gatekeeper.pseudonym(uuid.UUID(str(first.id)))}
    # the purge's own entry still carries the tag, taken before the key went
    (purge,) = [
        e for e in _entries_of(engine, runtime, str(second.id)) if e.action == "referral.purge"
    ]
    assert purge.person_pseudonym == persons[second.id]


async def test_justice_channel_is_recorded_at_source_and_at_recipient(
    api: httpx.AsyncClient,
    minter: TokenMinter,
    engine: Engine,
    runtime: Runtime,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    j = Journey(api, minter)
    await j.create(identity=person(103))
    await j.step(OFFICE, "consent", consent_body(reporting=True))
    await j.wait_stage("offered")
    await j.step(CGG, "accept")
    assert j.id is not None
    sent = await _wait_for(engine, runtime, j.id, "justice_channel.send")
    assert sent.event_type == "disclosure_source" and sent.purpose_of_use == "JUSTRPT"
    assert sent.person_pseudonym and sent.source_node == runtime.gatekeeper.source_node
    assert sent.client_address is None  # the engine's own step: no client

    # a first receipt is noted in the transaction of the entries, on its own
    audit, own_transactions = runtime.gatekeeper.audit, []
    append_with = audit.append_with
    monkeypatch.setattr(
        audit, "append_with", lambda *a: own_transactions.append(a) or append_with(*a)
    )
    before = _last_index(engine)
    await j.view(OFFICE)
    assert len(own_transactions) == 1
    entries = [e for e in _entries_after(engine, before) if e.actor_organisation == OFFICE[0]]
    assert [e.event_type for e in entries] == ["read", "disclosure_recipient"]
    read, received = entries
    assert received.action.startswith("justice_channel.receive.")
    assert received.categories == ["compliance"] and received.outcome == "success"
    assert received.purpose_of_use == "JUSTFUP"
    assert received.person_pseudonym == sent.person_pseudonym == read.person_pseudonym
    _sourced(received, runtime)
    # a message is received once: reading the case again records the read only
    before = _last_index(engine)
    await j.view(OFFICE)
    again = [
        e.event_type for e in _entries_after(engine, before) if e.actor_organisation == OFFICE[0]
    ]
    assert again == ["read"], again
    # with nothing left to note, that read's entry joined the log's group commit
    assert len(own_transactions) == 1
    # the care team reading compliance facts is no receipt of the channel
    before = _last_index(engine)
    await j.view(CGG)
    assert "disclosure_recipient" not in [e.event_type for e in _entries_after(engine, before)]


async def test_a_permitted_step_that_then_fails_is_recorded_as_failed(
    api: httpx.AsyncClient, minter: TokenMinter, engine: Engine, runtime: Runtime
) -> None:
    j = Journey(api, minter)
    await j.create(identity=person(104))
    before = _last_index(engine)
    # Cedar lets the referring office decide; the workflow refuses: no outcome to decide on
    await j.step(OFFICE, "decision", {"decision": "dismissed"}, expect=409)
    (entry,) = [e for e in _entries_after(engine, before) if e.action == "referral.decide"]
    assert (entry.decision, entry.outcome) == ("permit", "failed")
    assert entry.categories == [] and entry.policy_ids
    _sourced(entry, runtime)


async def test_a_purge_is_recorded_with_the_shredding(
    api: httpx.AsyncClient, minter: TokenMinter, engine: Engine, runtime: Runtime
) -> None:
    j = Journey(api, minter)
    await j.create(identity=person(105))
    assert j.id is not None
    referral_id = uuid.UUID(j.id)
    activities = ReferralActivities(
        engine=runtime.engine, shredder=runtime.vault, gatekeeper=runtime.gatekeeper
    )
    before = _last_index(engine)
    await asyncio.to_thread(activities.purge, PurgeInput(referral_id=referral_id))
    # each holding's shredding is its own entry (two retention clocks): the care data's,
    # then the office's with the data key destroyed
    mine = [
        e
        for e in _entries_after(engine, before)
        if e.referral_pseudonym == runtime.gatekeeper.pseudonym(referral_id)
    ]
    assert [(e.event_type, e.action, e.outcome) for e in mine] == [
        ("delete", "referral.shred_care_data", "success"),
        ("delete", "referral.purge", "success"),
    ]
    entry = mine[-1]
    assert entry.purpose_of_use == "RECORDMGT" and entry.actor_role == "system"
    assert {"identity", "contact", "judicial_context", "referral_reason"} <= set(entry.categories)
    created = next(e for e in _entries_of(engine, runtime, j.id) if e.action == "referral.create")
    assert entry.person_pseudonym == created.person_pseudonym is not None
    _sourced(entry, runtime, client=None)
    with Session(runtime.engine) as session:
        assert runtime.vault.is_shredded(session=session, referral_id=referral_id)
    # a retried purge finds nothing left to purge and records nothing more
    before = _last_index(engine)
    await asyncio.to_thread(activities.purge, PurgeInput(referral_id=referral_id))
    assert [e for e in _entries_after(engine, before) if e.action == "referral.purge"] == []


async def test_exports_are_recorded(
    api: httpx.AsyncClient, minter: TokenMinter, engine: Engine, runtime: Runtime
) -> None:
    j = Journey(api, minter)
    await j.to_in_progress()
    assert j.id is not None
    before = _last_index(engine)
    report = await api.get(
        f"/api/v1/referrals/{j.id}/access-report", headers=minter.headers(*CGG_WORKER)
    )
    assert report.status_code == 200, report.text
    (entry,) = [e for e in _entries_after(engine, before) if e.actor_organisation == CGG_WORKER[0]]
    assert (entry.event_type, entry.action, entry.outcome) == (
        "export",
        "referral.access_report",
        "success",
    )
    assert entry.categories == ["access_log"] and entry.purpose_of_use == "TREAT"
    assert entry.person_pseudonym is not None
    _sourced(entry, runtime)

    before = _last_index(engine)
    body = {"national_number": national_number(106), "lang": "en"}
    resp = await api.post(REPORT, json=body, headers=minter.headers(*AUDITOR))
    assert resp.status_code == 200, resp.text
    (entry,) = [e for e in _entries_after(engine, before) if e.actor_organisation == AUDITOR[0]]
    assert (entry.event_type, entry.action, entry.outcome) == (
        "export",
        "person.access_report",
        "success",
    )
    assert entry.purpose_of_use == "PATRQT" and entry.decision == "permit"
    assert entry.policy_ids == ["audit.permit-dpo-produces-person-access-report"]
    # it concerns no single referral: it names no person (a tag is a referral's)
    assert entry.person_pseudonym is None
    _sourced(entry, runtime)


@pytest.mark.parametrize("party", [OFFICE, CGG_WORKER, CGG])
async def test_only_the_dpo_produces_a_persons_report(
    api: httpx.AsyncClient, minter: TokenMinter, engine: Engine, party: tuple[str, str]
) -> None:
    before = _last_index(engine)
    body = {"national_number": national_number(107), "lang": "nl"}
    resp = await api.post(REPORT, json=body, headers=minter.headers(*party))
    assert resp.status_code == 403, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    (entry,) = [e for e in _entries_after(engine, before) if e.actor_organisation == party[0]]
    assert (entry.event_type, entry.decision, entry.outcome) == ("export", "deny", "refused")
    assert entry.person_pseudonym is None  # nobody was looked up


@pytest.mark.parametrize(
    "body",
    [
        {"national_number": "91.04.17-101.00", "lang": "nl"},  # the modulo-97 check fails
        {"national_number": "not a number", "lang": "nl"},
        {"national_number": national_number(108), "lang": "es"},
        {"national_number": national_number(108), "lang": "nl", "name": "x"},
        {"lang": "nl"},
    ],
)
async def test_a_bad_report_request_is_refused_and_changes_nothing(
    api: httpx.AsyncClient, minter: TokenMinter, engine: Engine, body: dict[str, Any]
) -> None:
    before = _last_index(engine)
    resp = await api.post(REPORT, json=body, headers=minter.headers(*AUDITOR))
    assert resp.status_code == 422, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    assert "91.04.17" not in resp.text  # the submitted number is not echoed
    assert [e for e in _entries_after(engine, before) if e.actor_organisation == AUDITOR[0]] == []


def _pdf_text(content: bytes) -> str:
    assert content.startswith(b"%PDF-")
    reader = PdfReader(io.BytesIO(content))
    # the text layer folds runs of spaces and may break lines anywhere between words
    return " ".join(" ".join(page.extract_text().split()) for page in reader.pages)


async def test_the_persons_access_report_is_a_letter_in_four_languages(
    api: httpx.AsyncClient, minter: TokenMinter, engine: Engine, runtime: Runtime
) -> None:
    me = person(109)
    in_care, other = Journey(api, minter), Journey(api, minter)
    await in_care.create(identity=me)
    await in_care.step(OFFICE, "consent", consent_body(reporting=True))
    await in_care.wait_stage("offered")
    await in_care.step(CGG, "accept")
    assert in_care.id is not None
    await _wait_for(engine, runtime, in_care.id, "justice_channel.send")
    await in_care.view(OFFICE)
    await other.create(identity=me)
    await Journey(api, minter).create(identity=person(110))  # someone else: not in the letter

    seen = set()
    for lang in LANGUAGES:
        resp = await api.post(
            REPORT,
            json={"national_number": me["national_number"], "lang": lang},
            headers=minter.headers(*AUDITOR),
        )
        assert resp.status_code == 200, resp.text
        assert resp.headers["content-type"] == "application/pdf"
        text = _pdf_text(resp.content)
        seen.add(text[:200])

        def said(msgid: str, text: str = text, lang: str = lang) -> bool:
            return " ".join(translate(lang, msgid).split()) in text

        for msgid in ("letter.title", "letter.salutation", "letter.justice", "letter.signature"):
            assert said(msgid), (lang, msgid, text)
        referral = translate(lang, "letter.referral")
        # two referrals of this person, none of the other person's
        assert f"{referral} 1" in text and f"{referral} 2" in text, text
        assert f"{referral} 3" not in text
        # what went to justice: the facts sent on the channel, to the referring office
        assert said("letter.justice_fact") or said("letter.justice_process"), text
        assert not said("letter.justice_none")
        assert "Parket Antwerpen" in text and "CGG" in text
        assert said("event.create") and said("event.read") and said("event.disclosure_recipient")
        assert said("purpose.JUSTFUP") and said("purpose.TREAT")
        # no personal data: no name, national number, referral id or pseudonym
        for secret in (me["name"], me["national_number"], in_care.id, other.id, "rp_", "pp_"):
            assert str(secret) not in text, (lang, secret)
    assert len(seen) == 4  # each letter in its own language

    # someone nobody referred: a letter saying so
    resp = await api.post(
        REPORT,
        json={"national_number": national_number(111), "lang": "fr"},
        headers=minter.headers(*AUDITOR),
    )
    text = _pdf_text(resp.content)
    assert " ".join(translate("fr", "letter.none").split()) in text
    assert " ".join(translate("fr", "letter.justice_none").split()) in text


async def test_the_auditor_page_produces_the_letter(
    app: FastAPI, api: httpx.AsyncClient, minter: TokenMinter, engine: Engine
) -> None:
    me = person(112)
    await Journey(api, minter).create(identity=me)
    async with WebUser(app, minter, AUDITOR) as dpo:
        home = await dpo.page("/ui/audit")
        assert 'action="/ui/audit/person-report"' in home and 'for="national_number"' in home
        before = _last_index(engine)
        resp = await dpo.post(
            "/ui/audit/person-report", {"national_number": me["national_number"], "lang": "de"}
        )
        assert resp.status_code == 200, main_of(resp.text)[:800]
        assert resp.headers["content-type"] == "application/pdf"
        text = _pdf_text(resp.content)
        assert " ".join(translate("de", "letter.title").split()) in text
        assert f"{translate('de', 'letter.referral')} 1" in text
        (entry,) = [e for e in _entries_after(engine, before) if e.actor_organisation == AUDITOR[0]]
        assert (entry.event_type, entry.action, entry.outcome) == (
            "export",
            "person.access_report",
            "success",
        )
        # a bad number is a 422 page, and nothing is looked up or recorded
        before = _last_index(engine)
        bad = await dpo.post("/ui/audit/person-report", {"national_number": "12", "lang": "de"})
        assert bad.status_code == 422
        assert [
            e for e in _entries_after(engine, before) if e.actor_organisation == AUDITOR[0]
        ] == []
    async with WebUser(app, minter, OFFICE) as office:
        refused = await office.post(
            "/ui/audit/person-report", {"national_number": me["national_number"], "lang": "nl"}
        )
        assert refused.status_code == 403
