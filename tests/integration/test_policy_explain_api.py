"""`GET /api/v1/policy/explain` and `referral policy explain`: the live Cedar policies explain
a typical situation to auditors and administrators; case parties are refused; asking is
audited."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine
from sqlmodel import Session, col, select
from typer.testing import CliRunner

from api.cli import app as cli_app
from services.audit.models import AuditEntry
from services.policy import ConsentState, DataCategory, Relation, explain
from services.principal import Role, Sector
from tests.tokens import TokenMinter

URL = "/api/v1/policy/explain"
EXAMPLE = {
    "role": "prosecutor",
    "sector": "justice",
    "relation": "referrer",
    "category": "clinical",
    "consent": "active",
}
AUDITOR = ("dpo-office", "auditor")
ADMIN = ("cgg-antwerpen", "admin")  # administrators may ask, whatever their sector
CASE_PARTIES = [
    ("parket-antwerpen", "prosecutor"),
    ("parket-antwerpen", "justice_assistant"),
    ("cgg-antwerpen", "intake_coordinator"),
    ("cgg-antwerpen", "care_worker"),
    ("caw-brussel", "care_worker"),
]


def _subject(tag: str) -> str:
    return f"explain-{tag}-{uuid.uuid4().hex[:12]}"


async def _ask(
    api: httpx.AsyncClient, minter: TokenMinter, who: tuple[str, str], **params: Any
) -> httpx.Response:
    subject = params.pop("subject", None)
    headers = minter.headers(*who, subject=subject) if subject else minter.headers(*who)
    return await api.get(URL, params=params, headers=headers)


def _audit(engine: Engine, subject: str) -> list[AuditEntry]:
    with Session(engine) as session:
        return list(
            session.exec(
                select(AuditEntry)
                .where(AuditEntry.actor_subject == subject)
                .order_by(col(AuditEntry.index))
            ).all()
        )


@pytest.mark.parametrize("who", [AUDITOR, ADMIN], ids=["auditor", "admin"])
async def test_the_example_is_denied_by_the_forbid(
    api: httpx.AsyncClient, minter: TokenMinter, who: tuple[str, str]
) -> None:
    resp = await _ask(api, minter, who, **EXAMPLE)
    assert resp.status_code == 200, resp.text
    assert resp.json() == {
        "decision": "DENY",
        "policy_ids": ["disclosure.forbid-clinical-to-justice"],
    }


async def test_allowed_situations_name_the_permits(
    api: httpx.AsyncClient, minter: TokenMinter
) -> None:
    minimal = await _ask(
        api,
        minter,
        AUDITOR,
        role="care_worker",
        sector="health",
        relation="care_team",
        category="judicial_context",
    )
    assert minimal.status_code == 200, minimal.text
    assert minimal.json() == {
        "decision": "ALLOW",
        "policy_ids": ["disclosure.permit-care-team-minimal-judicial-context-with-consent"],
    }
    step = await _ask(
        api,
        minter,
        ADMIN,
        role="prosecutor",
        sector="justice",
        relation="referrer",
        action="view_referral",
        consent="withdrawn",
    )
    assert step.status_code == 200, step.text
    assert step.json() == {
        "decision": "ALLOW",
        "policy_ids": ["lifecycle.permit-referring-office-steps"],
    }


async def test_default_deny_names_no_policy(api: httpx.AsyncClient, minter: TokenMinter) -> None:
    resp = await _ask(
        api,
        minter,
        AUDITOR,
        role="intake_coordinator",
        sector="health",
        relation="framework_member",
        category="identity",
    )
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"decision": "DENY", "policy_ids": []}


async def test_consent_state_changes_the_answer(
    api: httpx.AsyncClient, minter: TokenMinter
) -> None:
    ask = {
        "role": "prosecutor",
        "sector": "justice",
        "relation": "referrer",
        "category": "compliance",
    }
    active = await _ask(api, minter, AUDITOR, **ask, consent="active")
    withdrawn = await _ask(api, minter, AUDITOR, **ask, consent="withdrawn")
    assert active.json() == {
        "decision": "ALLOW",
        "policy_ids": ["disclosure.permit-compliance-to-referring-office-with-reporting-consent"],
    }
    assert withdrawn.json() == {
        "decision": "DENY",
        "policy_ids": ["disclosure.forbid-compliance-to-justice-after-consent-ends"],
    }


async def test_the_api_answers_as_the_policy_service_does(
    api: httpx.AsyncClient, minter: TokenMinter
) -> None:
    """Every role x relation for two categories and two actions: the same answer."""
    for role in Role:
        for relation in Relation:
            sector = {
                Role.PROSECUTOR: Sector.JUSTICE,
                Role.JUSTICE_ASSISTANT: Sector.JUSTICE,
                Role.INTAKE_COORDINATOR: Sector.HEALTH,
                Role.CARE_WORKER: Sector.WELFARE,
                Role.AUDITOR: Sector.AUDIT,
                Role.ADMIN: Sector.AUDIT,
            }[role]
            for key, subject in (
                ("category", DataCategory.CLINICAL.value),
                ("category", DataCategory.COMPLIANCE.value),
                ("action", "view_referral"),
                ("action", "accept"),
            ):
                expected = explain(role, sector, relation, subject, ConsentState.ACTIVE)
                resp = await _ask(
                    api,
                    minter,
                    ADMIN,
                    role=role.value,
                    sector=sector.value,
                    relation=relation.value,
                    **{key: subject},
                )
                assert resp.status_code == 200, resp.text
                assert resp.json() == {
                    "decision": "ALLOW" if expected.allowed else "DENY",
                    "policy_ids": list(expected.policy_ids),
                }, (role, relation, subject)


@pytest.mark.parametrize("who", CASE_PARTIES, ids=["/".join(p) for p in CASE_PARTIES])
async def test_case_parties_are_refused(
    api: httpx.AsyncClient, minter: TokenMinter, who: tuple[str, str]
) -> None:
    resp = await _ask(api, minter, who, **EXAMPLE)
    assert resp.status_code == 403, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    body = resp.json()
    assert body["status"] == 403 and "decision" not in body and "policy_ids" not in body


async def test_a_token_is_required(api: httpx.AsyncClient) -> None:
    resp = await api.get(URL, params=EXAMPLE)
    assert resp.status_code == 401
    assert resp.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(
    "change",
    [
        {"role": "chef"},
        {"sector": "space"},
        {"relation": "friend"},
        {"category": "dna"},
        {"consent": "maybe"},
        {"category": None, "action": "delete_everything"},
        {"category": None, "action": "disclose"},  # a disclosure is asked with a category
        {"category": None},  # neither a category nor an action
        {"action": "view_referral"},  # both
        {"role": None},  # missing
    ],
    ids=lambda change: ",".join(f"{k}={v}" for k, v in change.items()),
)
async def test_unknown_or_incomplete_questions_are_422_problems(
    api: httpx.AsyncClient, minter: TokenMinter, change: dict[str, str | None]
) -> None:
    params = {k: v for k, v in {**EXAMPLE, **change}.items() if v is not None}
    resp = await _ask(api, minter, AUDITOR, **params)
    assert resp.status_code == 422, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    body = resp.json()
    assert body["status"] == 422 and "decision" not in body


async def test_every_question_is_audited_allow_or_deny(
    api: httpx.AsyncClient, minter: TokenMinter, engine: Engine
) -> None:
    auditor, prosecutor = _subject("auditor"), _subject("prosecutor")
    assert (await _ask(api, minter, AUDITOR, subject=auditor, **EXAMPLE)).status_code == 200
    refused = await _ask(
        api, minter, ("parket-antwerpen", "prosecutor"), subject=prosecutor, **EXAMPLE
    )
    assert refused.status_code == 403

    (permit,) = [e for e in _audit(engine, auditor) if e.action == "policy.explain"]
    assert permit.decision == "permit" and permit.event_type == "query"
    assert permit.outcome == "success"
    assert permit.policy_ids == ["audit.permit-explain-policy"]
    assert permit.actor_organisation == "dpo-office" and permit.referral_pseudonym is None
    assert permit.purpose_of_use == "HOPERAT"  # HL7 PurposeOfUse: healthcare operations

    (deny,) = [e for e in _audit(engine, prosecutor) if e.action == "policy.explain"]
    assert deny.decision == "deny" and deny.outcome == "refused"
    assert deny.actor_organisation == "parket-antwerpen"


def test_cli_explains_the_example() -> None:
    result = CliRunner().invoke(
        cli_app,
        [
            "policy",
            "explain",
            "--role",
            "prosecutor",
            "--sector",
            "justice",
            "--relation",
            "referrer",
            "--category",
            "clinical",
            "--consent",
            "active",
        ],
    )
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == ["DENY", "disclosure.forbid-clinical-to-justice"]


async def test_cli_and_api_agree(api: httpx.AsyncClient, minter: TokenMinter) -> None:
    args = ["--role", "care_worker", "--sector", "welfare", "--relation", "care_team"]
    for consent in ("active", "withdrawn", "none"):
        result = CliRunner().invoke(
            cli_app, ["policy", "explain", *args, "--category", "welfare", "--consent", consent]
        )
        assert result.exit_code == 0, result.output
        resp = await _ask(
            api,
            minter,
            AUDITOR,
            role="care_worker",
            sector="welfare",
            relation="care_team",
            category="welfare",
            consent=consent,
        )
        body = resp.json()
        lines = result.output.splitlines()
        assert lines[0] == body["decision"], (consent, lines, body)
        assert [line for line in lines[1:] if not line.startswith("(")] == body["policy_ids"]
