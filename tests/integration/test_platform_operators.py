"""Platform roles have their place in the token and the policies (issue 15, item 5).

The platform's operators are members of the operators' organisation, of sector `platform`
(the dev realm's `platform`, with `demo-admin`). Through the HTTP API and the role UI on
the real Temporal dev server and database:

- an administrator's token is a principal: it reaches what administrators may use, the
  codec and the policy explanation (each decided and audited), and nothing of a case;
- a case role in an operator's token is ignored: the operators do no casework;
- the UI takes an administrator to the policies' explanation, not to a JSON 401; a login
  whose token gives no place in the application ends on a page, not on JSON.
"""

from __future__ import annotations

import base64

import httpx
import pytest
from fastapi import FastAPI
from google.protobuf import json_format
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from api.auth import principal_from_claims
from services.principal import Role, Sector
from tests.integration.journey import Journey
from tests.integration.web_client import WebUser
from tests.tokens import TokenMinter

pytestmark = pytest.mark.integration

PLATFORM_ADMIN = ("platform", "admin")


def _claims(roles: list[str]) -> dict[str, object]:
    return {
        "sub": "operator-1",
        "realm_access": {"roles": roles},
        "organization": {"platform": {"id": "x", "sector": ["platform"]}},
    }


def test_an_operators_token_is_a_principal_with_platform_roles_only() -> None:
    admin = principal_from_claims(_claims(["admin"]))
    assert (admin.organisation, admin.sector, admin.roles) == (
        "platform",
        Sector.PLATFORM,
        frozenset({Role.ADMIN}),
    )
    # a case role given to an operator is not casework: it is dropped
    assert principal_from_claims(_claims(["admin", "prosecutor"])).roles == {Role.ADMIN}
    assert principal_from_claims(_claims(["care_worker"])).roles == frozenset()


async def test_the_administrator_reaches_the_codec_and_the_explanation_and_no_case(
    api: httpx.AsyncClient, minter: TokenMinter, dev_server: WorkflowEnvironment
) -> None:
    j = Journey(api, minter)
    await j.create()
    admin = minter.headers(*PLATFORM_ADMIN)

    explained = await api.get(
        "/api/v1/policy/explain",
        params={
            "role": "prosecutor",
            "sector": "justice",
            "relation": "referrer",
            "category": "clinical",
            "consent": "active",
        },
        headers=admin,
    )
    assert explained.status_code == 200, explained.text
    assert explained.json()["decision"] == "DENY"

    raw = await Client.connect(dev_server.client.service_client.config.target_host)
    history = await raw.get_workflow_handle(f"referral-{j.id}").fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    body = {"payloads": json_format.MessageToDict(started.input)["payloads"]}
    decoded = await api.post("/codec/decode", json=body, headers=admin)
    assert decoded.status_code == 200, decoded.text
    data = base64.b64decode(decoded.json()["payloads"][0]["data"])
    assert j.id is not None and j.id.encode() in data

    # no case: not listed, not shown, no step
    assert (await api.get("/api/v1/referrals", headers=admin)).status_code == 403
    assert (await api.get(f"/api/v1/referrals/{j.id}", headers=admin)).status_code == 404
    resp = await api.post(f"/api/v1/referrals/{j.id}/cancel", headers=admin)
    assert resp.status_code in (403, 404), resp.text
    # and an operator token carrying a case role is still no party to the case
    mixed = minter.headers("platform", "prosecutor")
    assert (await api.get(f"/api/v1/referrals/{j.id}", headers=mixed)).status_code == 404


async def test_the_ui_takes_the_administrator_to_the_policies(
    app: FastAPI, minter: TokenMinter
) -> None:
    async with WebUser(app, minter, PLATFORM_ADMIN, language="nl") as admin:
        home = await admin.get("/ui/")
        assert home.status_code in (302, 303, 307)
        assert home.headers["location"] == "/ui/audit/explain"
        page = await admin.page("/ui/audit/explain")
        assert 'href="/ui/audit/explain"' in page  # the area in the navigation
        answered = await admin.page(
            "/ui/audit/explain",
            params={
                "role": "prosecutor",
                "sector": "justice",
                "relation": "referrer",
                "subject": "clinical",
                "consent": "active",
            },
        )
        assert "disclosure.forbid-clinical-to-justice" in answered
        assert (await admin.get("/ui/justice")).status_code == 403
