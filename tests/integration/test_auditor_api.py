"""The auditor's API, the offline verifier CLI, and the person's access report."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from api.cli import app as cli
from services.audit import merkle
from services.runtime import Runtime
from services.settings import Settings, get_settings
from services.subject_report import LANGUAGES, catalog
from tests.integration.journey import (
    AUDITOR,
    CGG,
    CGG_WORKER,
    CLINICAL_NOTE,
    OFFICE,
    PERSON,
    Journey,
)
from tests.tokens import TokenMinter


async def _case_in_care(api: httpx.AsyncClient, minter: TokenMinter) -> Journey:
    j = Journey(api, minter)
    await j.to_in_progress()
    await j.step(CGG, "progress", {"attendance": "attending", "clinical_note": CLINICAL_NOTE})
    await j.view(CGG_WORKER)
    return j


async def test_auditor_searches_proves_and_verifies(
    api: httpx.AsyncClient, minter: TokenMinter, runtime: Runtime
) -> None:
    j = await _case_in_care(api, minter)
    assert j.id is not None
    import uuid

    pseudonym = runtime.gatekeeper.pseudonym(uuid.UUID(j.id))
    auditor = minter.headers(*AUDITOR)
    found = await api.get(
        "/api/v1/audit/entries",
        params={"referral_pseudonym": pseudonym, "limit": 500},
        headers=auditor,
    )
    assert found.status_code == 200, found.text
    entries = found.json()["entries"]
    assert {e["actor_organisation"] for e in entries} >= {"parket-antwerpen", "cgg-antwerpen"}
    assert all(e["referral_pseudonym"] == pseudonym for e in entries)
    text = found.text
    assert PERSON["name"] not in text and CLINICAL_NOTE not in text and j.id not in text

    head = (await api.post("/api/v1/audit/tree-heads", headers=auditor)).json()
    size = head["tree_size"]
    index = entries[0]["index"]
    proof = (
        await api.get(
            f"/api/v1/audit/entries/{index}/inclusion-proof",
            params={"tree_size": size},
            headers=auditor,
        )
    ).json()
    leaf = bytes.fromhex(entries[0]["leaf_hash"])
    path = [bytes.fromhex(p) for p in proof["path"]]
    root = bytes.fromhex(head["root_hash"])
    assert merkle.verify_inclusion(leaf, index, size, path, root)
    assert not merkle.verify_inclusion(leaf, index + 1, size, path, root)

    await j.view(OFFICE)  # the log grows
    later = (await api.post("/api/v1/audit/tree-heads", headers=auditor)).json()
    consistency = (
        await api.get(
            "/api/v1/audit/consistency-proof",
            params={"first": size, "second": later["tree_size"]},
            headers=auditor,
        )
    ).json()
    assert merkle.verify_consistency(
        size,
        later["tree_size"],
        root,
        bytes.fromhex(later["root_hash"]),
        [bytes.fromhex(p) for p in consistency["path"]],
    )
    heads = (await api.get("/api/v1/audit/tree-heads", headers=auditor)).json()
    assert {h["tree_size"] for h in heads} >= {size, later["tree_size"]}
    verified = (await api.post("/api/v1/audit/verify", headers=auditor)).json()
    assert verified["ok"] is True, verified
    key = await api.get("/api/v1/audit/public-key", headers=auditor)
    assert key.text.startswith("-----BEGIN PUBLIC KEY-----")

    # bad proofs requests are 4xx, never 500
    bad = await api.get(
        "/api/v1/audit/consistency-proof", params={"first": 5, "second": 10**9}, headers=auditor
    )
    assert bad.status_code == 422
    bad = await api.get("/api/v1/audit/entries/999999999/inclusion-proof", headers=auditor)
    assert bad.status_code == 422
    bad = await api.get(
        "/api/v1/audit/entries", params={"referral_pseudonym": "x"}, headers=auditor
    )
    assert bad.status_code == 422

    # the auditor's own queries are in the log
    mine = await api.get(
        "/api/v1/audit/entries",
        params={"organisation": "dpo-office", "action": "audit.search", "limit": 500},
        headers=auditor,
    )
    assert len(mine.json()["entries"]) >= 1


@pytest.mark.parametrize("party", [OFFICE, CGG, CGG_WORKER])
async def test_case_parties_may_not_use_the_audit_api(
    api: httpx.AsyncClient, minter: TokenMinter, party: tuple[str, str]
) -> None:
    for method, path in (
        ("GET", "/api/v1/audit/entries"),
        ("GET", "/api/v1/audit/tree-heads"),
        ("POST", "/api/v1/audit/verify"),
    ):
        resp = await api.request(method, path, headers=minter.headers(*party))
        assert resp.status_code == 403, (party, path, resp.text)


async def test_access_report_in_four_languages(api: httpx.AsyncClient, minter: TokenMinter) -> None:
    j = await _case_in_care(api, minter)
    titles = set()
    for lang in LANGUAGES:
        resp = await api.get(
            f"/api/v1/referrals/{j.id}/access-report",
            params={"lang": lang},
            headers=minter.headers(*CGG_WORKER),
        )
        assert resp.status_code == 200, resp.text
        report = resp.json()
        titles.add(report["title"])
        orgs = {group["organisation"] for group in report["organisations"]}
        assert any("Parket Antwerpen" in o for o in orgs) and any("CGG" in o for o in orgs)
        assert PERSON["name"] not in resp.text and CLINICAL_NOTE not in resp.text
        text = await api.get(
            f"/api/v1/referrals/{j.id}/access-report",
            params={"lang": lang, "format": "text"},
            headers=minter.headers(*CGG_WORKER),
        )
        assert text.headers["content-type"].startswith("text/plain")
        assert report["title"] in text.text
    assert len(titles) == 4
    # justice may not produce it; an outsider does not learn the referral exists
    office = await api.get(
        f"/api/v1/referrals/{j.id}/access-report", headers=minter.headers(*OFFICE)
    )
    assert office.status_code == 403
    other = await api.get(
        f"/api/v1/referrals/{j.id}/access-report",
        headers=minter.headers("parquet-bruxelles", "prosecutor"),
    )
    assert other.status_code == 404


def test_every_label_is_translated_in_every_language() -> None:
    ids = {m.id for m in catalog("en") if m.id}
    for lang in LANGUAGES:
        messages = {m.id: m.string for m in catalog(lang) if m.id}
        assert set(messages) == ids, lang
        assert all(messages.values()), [k for k, v in messages.items() if not v]


@pytest.fixture
def cli_env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("REFERRAL_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("REFERRAL_KEYRING_PATH", str(settings.keyring_path))
    monkeypatch.setenv("REFERRAL_AUDIT_KEY_PATH", str(settings.audit_key_file))
    monkeypatch.setenv("REFERRAL_ENVIRONMENT", "test")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


async def test_offline_export_and_verification(
    api: httpx.AsyncClient, minter: TokenMinter, tmp_path: Path, cli_env: None
) -> None:
    await _case_in_care(api, minter)
    out = tmp_path / "audit.jsonl"
    key = tmp_path / "audit.pem"
    runner = CliRunner()
    result = runner.invoke(cli, ["audit", "export", "--out", str(out)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["audit", "public-key"])
    assert result.exit_code == 0
    key.write_text(result.output)
    result = runner.invoke(cli, ["audit", "verify", str(out), "--public-key", str(key)])
    assert result.exit_code == 0, result.output
    assert "intact" in result.output

    lines = out.read_text().splitlines()
    target = next(
        i
        for i, line in enumerate(lines)
        if json.loads(line).get("type") == "entry" and json.loads(line)["index"] == 3
    )
    record = json.loads(lines[target])
    record["action"] = "referral.nothing_happened"
    lines[target] = json.dumps(record)
    out.write_text("\n".join(lines) + "\n")
    result = runner.invoke(cli, ["audit", "verify", str(out), "--public-key", str(key)])
    assert result.exit_code == 1
    assert "index 3" in result.output, result.output
