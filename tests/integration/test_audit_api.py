"""The auditor's API and the person's access report, checked route by route.

`test_auditor_api.py` walks the main journey; these tests pin down the edges: every audit
route refuses the case parties, every auditor query lands in the log it reads (a permit
naming the audit policy and a query record), filters and paging, bad proof requests are
problem+json, signed heads verify with the published key, and the access report carries
organisations but no personal values or case content, in all four languages.
"""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from sqlalchemy import Engine, func
from sqlmodel import Session, col, select

from services.audit import merkle
from services.audit.models import AuditEntry, format_timestamp, tree_head_bytes
from services.audit.purpose import PurposeOfUse
from services.audit.witness import Cosignature, TreeHead, Witness, store_cosignature
from services.policy import DataCategory
from services.principal import Role, Sector
from services.runtime import Runtime
from services.subject_report import LANGUAGES, catalog
from tests.integration.journey import (
    AUDITOR,
    CGG,
    CGG_WORKER,
    CLINICAL_NOTE,
    NOTE,
    OFFICE,
    OTHER_OFFICE,
    PERSON,
    PHONE,
    WELFARE_NOTE,
    Journey,
    new_referral,
)
from tests.tokens import TokenMinter

PROBLEM = "application/problem+json"
AUDIT_POLICY = "audit.permit-auditor-searches-and-verifies-trail"

# Every audit route, the policy action it must decide, and the query record it leaves.
AUDIT_ROUTES: list[tuple[str, str, dict[str, Any], str, str]] = [
    ("GET", "/api/v1/audit/entries", {}, "search_audit", "audit.search"),
    ("GET", "/api/v1/audit/tree-heads", {}, "search_audit", "audit.tree_heads"),
    ("POST", "/api/v1/audit/tree-heads", {}, "verify_audit", "audit.sign_tree_head"),
    (
        "GET",
        "/api/v1/audit/entries/0/inclusion-proof",
        {},
        "search_audit",
        "audit.inclusion_proof",
    ),
    (
        "GET",
        "/api/v1/audit/consistency-proof",
        {"first": 1, "second": 2},
        "search_audit",
        "audit.consistency_proof",
    ),
    ("POST", "/api/v1/audit/verify", {}, "verify_audit", "audit.verify"),
    ("GET", "/api/v1/audit/public-key", {}, "verify_audit", "audit.public_key"),
]

# Values of the referral that must never reach the audit trail or the access report.
SECRETS = [
    *PERSON.values(),
    PHONE,
    NOTE,
    CLINICAL_NOTE,
    WELFARE_NOTE,
    new_referral()["contact"]["address"],
    new_referral()["judicial_context"]["notice_number"],
]

# What an audit entry may say about an access: metadata, nothing of the case.
ENTRY_KEYS = {
    "index",
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
    "purpose_of_use_system",
    "request_id",
    "trace_id",
    "outcome",
    "withheld",
    # IHE BALP / ATNA: the person (a keyed pseudonym), the recording node, the client
    "person_pseudonym",
    "source_node",
    "client_address",
    "leaf_hash",
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


def _assert_problem(resp: httpx.Response, *statuses: int) -> None:
    assert resp.status_code in statuses, (resp.status_code, resp.text)
    assert resp.headers["content-type"].startswith(PROBLEM), resp.headers
    assert resp.json()["status"] == resp.status_code


async def _walked(api: httpx.AsyncClient, minter: TokenMinter) -> Journey:
    """A referral taken into care, progress reported with a clinical note, read by both."""
    j = Journey(api, minter)
    await j.to_in_progress()
    await j.step(CGG, "progress", {"attendance": "attending", "clinical_note": CLINICAL_NOTE})
    await j.view(CGG_WORKER)
    await j.view(OFFICE)
    return j


@pytest.mark.parametrize("party", [OFFICE, CGG_WORKER, CGG, OTHER_OFFICE])
async def test_every_audit_route_refuses_case_parties_and_logs_the_refusal(
    api: httpx.AsyncClient, minter: TokenMinter, engine: Engine, party: tuple[str, str]
) -> None:
    for method, path, params, _, recorded in AUDIT_ROUTES:
        before = _last_index(engine)
        resp = await api.request(method, path, params=params, headers=minter.headers(*party))
        _assert_problem(resp, 403)
        new = _entries_after(engine, before)
        # one entry for the refused access: a deny, refused, nothing disclosed
        mine = [e for e in new if e.actor_organisation == party[0]]
        assert [(e.action, e.decision, e.outcome) for e in mine] == [
            (recorded, "deny", "refused")
        ], (path, [(e.event_type, e.action, e.outcome) for e in new])
        assert mine[0].categories == [], path


async def test_every_auditor_query_is_itself_audited(
    api: httpx.AsyncClient, minter: TokenMinter, engine: Engine
) -> None:
    j = Journey(api, minter)
    await j.create()  # at least two entries, so the consistency proof 1..2 exists
    # the search below pages from here: the suite's earlier auditor queries could fill a page
    started = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    for method, path, params, action, recorded in AUDIT_ROUTES:
        before = _last_index(engine)
        resp = await api.request(method, path, params=params, headers=minter.headers(*AUDITOR))
        assert resp.status_code == 200, (path, resp.text)
        new = [e for e in _entries_after(engine, before) if e.actor_organisation == AUDITOR[0]]
        # one access, one entry: the permit, its policy, the query and its outcome together
        assert [(e.event_type, e.action) for e in new] == [("query", recorded)], (path, action)
        entry = new[0]
        assert (entry.decision, entry.outcome) == ("permit", "success")
        assert AUDIT_POLICY in entry.policy_ids
        assert entry.purpose_of_use == "HOPERAT"  # HL7 PurposeOfUse: healthcare operations
        assert entry.actor_role == "auditor"

    # ... and the auditor can find those records through the API itself
    mine = await api.get(
        "/api/v1/audit/entries",
        params={"organisation": AUDITOR[0], "limit": 500, "since": started},
        headers=minter.headers(*AUDITOR),
    )
    assert mine.status_code == 200, mine.text
    actions = {e["action"] for e in mine.json()["entries"]}
    assert {recorded for *_, recorded in AUDIT_ROUTES} <= actions, actions


async def test_search_returns_metadata_only_and_filters_and_pages(
    api: httpx.AsyncClient, minter: TokenMinter, runtime: Runtime
) -> None:
    j = await _walked(api, minter)
    assert j.id is not None
    pseudonym = runtime.gatekeeper.pseudonym(uuid.UUID(j.id))
    auditor = minter.headers(*AUDITOR)

    async def search(**params: Any) -> list[dict[str, Any]]:
        resp = await api.get("/api/v1/audit/entries", params=params, headers=auditor)
        assert resp.status_code == 200, resp.text
        for secret in [*SECRETS, j.id]:
            assert secret not in resp.text, secret
        entries: list[dict[str, Any]] = resp.json()["entries"]
        return entries

    # an outsider's refused look is on the record too (a deny, refused)
    await api.get(f"/api/v1/referrals/{j.id}", headers=minter.headers(*OTHER_OFFICE))
    everything = await search(referral_pseudonym=pseudonym, limit=500)
    assert len(everything) >= 6
    assert all(set(e) == ENTRY_KEYS for e in everything), everything[0].keys()
    assert [e["index"] for e in everything] == sorted(e["index"] for e in everything)
    assert {e["event_type"] for e in everything} >= {"create", "read", "update"}
    assert {e["outcome"] for e in everything} >= {"success"}

    # every filter narrows, and only to what it names
    permits = await search(referral_pseudonym=pseudonym, decision="permit", limit=500)
    assert permits and all(e["decision"] == "permit" for e in permits)
    assert len(permits) < len(everything)
    care = await search(referral_pseudonym=pseudonym, organisation="cgg-antwerpen", limit=500)
    assert care and all(e["actor_organisation"] == "cgg-antwerpen" for e in care)
    subject = care[0]["actor_subject"]
    by_actor = await search(referral_pseudonym=pseudonym, actor=subject, limit=500)
    assert by_actor and all(e["actor_subject"] == subject for e in by_actor)
    reads = await search(referral_pseudonym=pseudonym, action="referral.read", limit=500)
    assert reads and all(e["action"] == "referral.read" for e in reads)

    # time window: `since` inclusive, `until` exclusive
    first_at = everything[0]["recorded_at"]
    assert await search(referral_pseudonym=pseudonym, until=first_at) == []
    assert (await search(referral_pseudonym=pseudonym, since=first_at, limit=1))[0][
        "index"
    ] == everything[0]["index"]
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    assert await search(referral_pseudonym=pseudonym, since=future) == []

    # paging: consecutive pages put together are the whole result
    pages: list[dict[str, Any]] = []
    for offset in range(0, len(everything), 2):
        pages += await search(referral_pseudonym=pseudonym, offset=offset, limit=2)
    assert [e["index"] for e in pages] == [e["index"] for e in everything]


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 501},
        {"offset": -1},
        {"limit": "many"},
        {"decision": "maybe"},
        {"since": "yesterday"},
        {"until": "2026-13-45T00:00:00Z"},
        {"referral_pseudonym": "not-a-pseudonym"},
        {"actor": "x" * 300},
    ],
    ids=lambda p: ",".join(p),
)
async def test_invalid_search_filters_are_problems(
    api: httpx.AsyncClient, minter: TokenMinter, params: dict[str, Any]
) -> None:
    resp = await api.get("/api/v1/audit/entries", params=params, headers=minter.headers(*AUDITOR))
    _assert_problem(resp, 422)


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/api/v1/audit/entries/-1/inclusion-proof", {}),
        ("/api/v1/audit/entries/99999999/inclusion-proof", {}),
        ("/api/v1/audit/entries/abc/inclusion-proof", {}),
        ("/api/v1/audit/entries/0/inclusion-proof", {"tree_size": 0}),
        ("/api/v1/audit/entries/0/inclusion-proof", {"tree_size": 10**12}),
        ("/api/v1/audit/entries/5/inclusion-proof", {"tree_size": 3}),
        ("/api/v1/audit/entries/0/inclusion-proof", {"tree_size": "big"}),
        ("/api/v1/audit/consistency-proof", {}),
        ("/api/v1/audit/consistency-proof", {"first": 0, "second": 2}),
        ("/api/v1/audit/consistency-proof", {"first": 3, "second": 2}),
        ("/api/v1/audit/consistency-proof", {"first": 1, "second": 10**12}),
        ("/api/v1/audit/consistency-proof", {"first": "a", "second": 2}),
    ],
)
async def test_bad_proof_requests_are_problems_not_errors(
    api: httpx.AsyncClient, minter: TokenMinter, path: str, params: dict[str, Any]
) -> None:
    await Journey(api, minter).create()  # the log has a few entries
    resp = await api.get(path, params=params, headers=minter.headers(*AUDITOR))
    _assert_problem(resp, 400, 404, 422)


async def test_signed_heads_and_proofs_verify_with_the_published_key(
    api: httpx.AsyncClient, minter: TokenMinter, runtime: Runtime, tmp_path: Path
) -> None:
    j = await _walked(api, minter)
    assert j.id is not None
    auditor = minter.headers(*AUDITOR)
    pem = await api.get("/api/v1/audit/public-key", headers=auditor)
    assert pem.status_code == 200
    key = load_pem_public_key(pem.text.encode())
    assert isinstance(key, Ed25519PublicKey)

    first = (await api.post("/api/v1/audit/tree-heads", headers=auditor)).json()
    await j.view(CGG_WORKER)  # the log grows
    second = (await api.post("/api/v1/audit/tree-heads", headers=auditor)).json()
    assert second["tree_size"] > first["tree_size"]

    heads = (await api.get("/api/v1/audit/tree-heads", headers=auditor)).json()
    assert [h["tree_size"] for h in heads] == sorted(h["tree_size"] for h in heads)
    for head in (first, second, *heads[-3:]):
        signed = tree_head_bytes(
            tree_size=head["tree_size"],
            root_hash=head["root_hash"],
            signed_at=format_timestamp(datetime.fromisoformat(head["signed_at"])),
            key_id=head["key_id"],
        )
        key.verify(base64.b64decode(head["signature"]), signed)  # raises if forged

    # every entry of the referral is provably in the later signed tree
    pseudonym = runtime.gatekeeper.pseudonym(uuid.UUID(j.id))
    found = await api.get(
        "/api/v1/audit/entries",
        params={"referral_pseudonym": pseudonym, "limit": 500},
        headers=auditor,
    )
    root = bytes.fromhex(second["root_hash"])
    for entry in found.json()["entries"]:
        proof = await api.get(
            f"/api/v1/audit/entries/{entry['index']}/inclusion-proof",
            params={"tree_size": second["tree_size"]},
            headers=auditor,
        )
        assert proof.status_code == 200, proof.text
        body = proof.json()
        assert body["root_hash"] == second["root_hash"]
        assert body["leaf_hash"] == entry["leaf_hash"]
        path = [bytes.fromhex(p) for p in body["path"]]
        leaf = bytes.fromhex(entry["leaf_hash"])
        assert merkle.verify_inclusion(leaf, entry["index"], second["tree_size"], path, root)
        assert not merkle.verify_inclusion(
            bytes(32), entry["index"], second["tree_size"], path, root
        )

    # the earlier signed tree is a prefix of the later one
    consistency = await api.get(
        "/api/v1/audit/consistency-proof",
        params={"first": first["tree_size"], "second": second["tree_size"]},
        headers=auditor,
    )
    assert consistency.status_code == 200, consistency.text
    body = consistency.json()
    assert body["first_root"] == first["root_hash"]
    assert body["second_root"] == second["root_hash"]
    path = [bytes.fromhex(p) for p in body["path"]]
    old, new = bytes.fromhex(first["root_hash"]), bytes.fromhex(second["root_hash"])
    assert merkle.verify_consistency(first["tree_size"], second["tree_size"], old, new, path)
    assert not merkle.verify_consistency(first["tree_size"], second["tree_size"], new, old, path)

    # a witness (its own key, its own state) cosigns the later head after checking it
    # extends the earlier one; the auditor API serves the cosignature with the head
    def canonical(head: dict[str, Any]) -> TreeHead:
        signed_at = format_timestamp(datetime.fromisoformat(head["signed_at"]))
        return TreeHead.from_record({**head, "signed_at": signed_at})

    witness_key = Ed25519PrivateKey.generate()
    witness = Witness(witness_key, tmp_path / "witness-state.json", {second["key_id"]: key})
    witness.cosign(canonical(first), [])
    cosignature = witness.cosign(canonical(second), body["path"])
    assert store_cosignature(runtime.engine, cosignature)
    heads = (await api.get("/api/v1/audit/tree-heads", headers=auditor)).json()
    [served] = [
        h for h in heads if (h["tree_size"], h["key_id"]) == (second["tree_size"], second["key_id"])
    ]
    assert [Cosignature.from_record(c) for c in served["cosignatures"]] == [cosignature]
    assert cosignature.valid_under(witness_key.public_key())

    verified = await api.post("/api/v1/audit/verify", headers=auditor)
    assert verified.status_code == 200
    result = verified.json()
    assert result["ok"] is True and result["first_bad_index"] is None, result
    assert result["entries"] >= second["tree_size"] and result["tree_heads"] >= 2


async def test_access_report_names_organisations_and_hides_personal_values(
    api: httpx.AsyncClient, minter: TokenMinter
) -> None:
    j = await _walked(api, minter)
    assert j.id is not None
    url = f"/api/v1/referrals/{j.id}/access-report"
    worker = minter.headers(*CGG_WORKER)
    seen_titles, seen_columns = set(), set()
    for lang in LANGUAGES:
        resp = await api.get(url, params={"lang": lang}, headers=worker)
        assert resp.status_code == 200, resp.text
        report = resp.json()
        assert report["language"] == lang
        seen_titles.add(report["title"])
        seen_columns.add(report["columns"]["organisation"] + report["columns"]["purpose"])
        groups = {g["organisation"]: g["accesses"] for g in report["organisations"]}
        assert "Parket Antwerpen (demo)" in groups, groups.keys()
        assert "CGG Antwerpen, drug care (demo)" in groups, groups.keys()
        for accesses in groups.values():
            assert accesses
            for row in accesses:
                assert row["at"] and row["action"] and row["purpose"] and row["role"]
                # labels are translated: no catalog ids leak into the report
                for label in (row["role"], row["action"], row["purpose"], *row["categories"]):
                    assert not label.startswith(("role.", "event.", "purpose.", "category.")), (
                        lang,
                        label,
                    )
        text = await api.get(url, params={"lang": lang, "format": "text"}, headers=worker)
        assert text.status_code == 200
        assert text.headers["content-type"] == "text/plain; charset=utf-8"
        assert report["title"] in text.text
        assert "Parket Antwerpen (demo)" in text.text
        assert "CGG Antwerpen, drug care (demo)" in text.text
        for body in (resp.text, text.text):
            for secret in SECRETS:
                assert secret not in body, (lang, secret)
            # no case ids and no staff user ids either
            assert j.id not in body
            assert "user-" not in body
    assert len(seen_titles) == len(LANGUAGES)
    assert len(seen_columns) == len(LANGUAGES)


async def test_access_report_is_for_the_care_team_only(
    api: httpx.AsyncClient, minter: TokenMinter
) -> None:
    j = await _walked(api, minter)
    url = f"/api/v1/referrals/{j.id}/access-report"
    # justice and the auditor are refused; outsiders learn nothing of the referral
    for party, statuses in (
        (OFFICE, (403, 404)),
        (OTHER_OFFICE, (404,)),
        (("free-clinic-antwerpen", "care_worker"), (404,)),
        (("caw-brussel", "care_worker"), (403, 404)),
        (AUDITOR, (403, 404)),
    ):
        resp = await api.get(url, headers=minter.headers(*party))
        _assert_problem(resp, *statuses)
    unknown = await api.get(
        f"/api/v1/referrals/{uuid.uuid4()}/access-report", headers=minter.headers(*CGG_WORKER)
    )
    _assert_problem(unknown, 404)
    for params in ({"lang": "es"}, {"format": "pdf"}):
        resp = await api.get(url, params=params, headers=minter.headers(*CGG_WORKER))
        _assert_problem(resp, 422)


def test_every_role_category_event_and_purpose_has_a_label() -> None:
    """The report labels every value it can meet, in every language, non-empty."""
    # the words entries carried before HL7 PurposeOfUse codes, and every code since
    purposes = {"judicial_follow_up", "treatment", "social_support", "audit", "operations"}
    assert len(purposes) == len(Sector)
    purposes |= {code.value for code in PurposeOfUse}
    needed = (
        {f"role.{r.value}" for r in Role}
        | {"role.system"}
        | {f"category.{c.value}" for c in DataCategory}
        | {f"purpose.{p}" for p in purposes}
        | {
            f"event.{e}"
            for e in (
                "create",
                "read",
                "update",
                "delete",
                "export",
                "disclosure_source",
                "disclosure_recipient",
            )
        }
        | {f"report.{k}" for k in ("title", "intro", "footer")}
        | {f"column.{k}" for k in ("organisation", "role", "action", "categories", "purpose")}
    )
    for lang in LANGUAGES:
        messages = {m.id: m.string for m in catalog(lang) if m.id}
        missing = sorted(k for k in needed if not messages.get(k))
        assert not missing, (lang, missing)


async def test_a_datetime_without_offset_is_not_a_server_error(
    api: httpx.AsyncClient, minter: TokenMinter
) -> None:
    resp = await api.get(
        "/api/v1/audit/entries",
        params={"since": "2026-01-01T00:00:00", "until": "2099-01-01T00:00:00"},
        headers=minter.headers(*AUDITOR),
    )
    # a time without offset is ambiguous: refused with a problem, not guessed nor a 500
    assert resp.status_code == 422, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
