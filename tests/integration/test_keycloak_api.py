"""The API with the real Keycloak: each demo role reaches exactly what it should, forged
tokens are refused, a user moved to another organisation loses the old one's referrals,
and rotated realm keys are accepted without a restart."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from api.main import create_app
from services.runtime import Runtime
from services.settings import Settings
from tests.integration.journey import consent_body, new_referral

pytestmark = [pytest.mark.keycloak, pytest.mark.integration]

# What each demo user may do with a referral created by the Antwerp prosecutor's office
# that is waiting for consent: create one (201/403), list (200/403), read it (200/404).
ROLE_MATRIX = [
    ("demo-prosecutor-antwerpen", 201, 200, 200),
    ("demo-justice-assistant-antwerpen", 201, 200, 200),
    ("demo-prosecutor-bruxelles", 201, 200, 404),  # also in the framework
    ("demo-justice-assistant-bruxelles", 201, 200, 404),
    ("demo-intake-coordinator-cgg-antwerpen", 403, 200, 404),
    ("demo-care-worker-cgg-antwerpen", 403, 200, 404),
    ("demo-intake-coordinator-free-clinic-antwerpen", 403, 200, 404),
    ("demo-care-worker-free-clinic-antwerpen", 403, 200, 404),
    ("demo-intake-coordinator-caw-brussel", 403, 200, 404),
    ("demo-care-worker-caw-brussel", 403, 200, 404),
    ("demo-auditor-dpo-office", 403, 403, 404),
]


def _token(keycloak: Any, username: str) -> str:
    from deploy.keycloak.server import password_grant

    resp = password_grant(keycloak, username)
    assert resp.status_code == 200, resp.text
    return str(resp.json()["access_token"])


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def kc_api(
    keycloak: Any,
    settings: Settings,
    runtime: Runtime,
    dev_server: WorkflowEnvironment,
    worker: Worker,
) -> AsyncIterator[httpx.AsyncClient]:
    kc_settings = settings.model_copy(
        update={"jwks_url": keycloak.jwks_url, "jwt_issuer": keycloak.issuer}
    )
    app = create_app(kc_settings, runtime=runtime, temporal=dev_server.client)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


async def _antwerp_referral(kc_api: httpx.AsyncClient, keycloak: Any) -> str:
    token = _token(keycloak, "demo-prosecutor-antwerpen")
    resp = await kc_api.post(
        "/api/v1/referrals",
        json=new_referral(),
        headers={**_bearer(token), "Idempotency-Key": f"kc-{uuid.uuid4()}"},
    )
    assert resp.status_code == 201, resp.text
    return str(resp.json()["id"])


async def test_each_demo_role_reaches_exactly_what_it_should(
    kc_api: httpx.AsyncClient, keycloak: Any
) -> None:
    referral_id = await _antwerp_referral(kc_api, keycloak)
    seen = []
    for username, _create, _listing, _read in ROLE_MATRIX:
        headers = _bearer(_token(keycloak, username))
        created = await kc_api.post(
            "/api/v1/referrals",
            json=new_referral(),
            headers={**headers, "Idempotency-Key": f"kc-{uuid.uuid4()}"},
        )
        listed = await kc_api.get("/api/v1/referrals", headers=headers)
        got = await kc_api.get(f"/api/v1/referrals/{referral_id}", headers=headers)
        seen.append((username, created.status_code, listed.status_code, got.status_code))
    assert seen == ROLE_MATRIX

    # the offered provider can then accept with its own Keycloak login
    office = _bearer(_token(keycloak, "demo-prosecutor-antwerpen"))
    resp = await kc_api.post(
        f"/api/v1/referrals/{referral_id}/consent", json=consent_body(), headers=office
    )
    assert resp.status_code == 200, resp.text
    # the realm's administrator is a platform operator (organisation `platform`): what
    # administrators may use answers, a case does not
    admin = _bearer(_token(keycloak, "demo-admin"))
    assert (await kc_api.get("/api/v1/referrals", headers=admin)).status_code == 403
    assert (await kc_api.get(f"/api/v1/referrals/{referral_id}", headers=admin)).status_code == 404
    explained = await kc_api.get(
        "/api/v1/policy/explain",
        params={
            "role": "care_worker",
            "sector": "health",
            "relation": "care_team",
            "category": "clinical",
            "consent": "active",
        },
        headers=admin,
    )
    assert explained.status_code == 200, explained.text
    decoded = await kc_api.post("/codec/decode", json={"payloads": []}, headers=admin)
    assert decoded.status_code == 200, decoded.text


async def test_forged_keycloak_tokens_are_refused(kc_api: httpx.AsyncClient, keycloak: Any) -> None:
    token = _token(keycloak, "demo-prosecutor-bruxelles")
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["organization"] = {"parket-antwerpen": {"sector": ["justice"]}}
    forged_payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    none_header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    for bad in (
        f"{header}.{forged_payload}.{signature}",
        f"{none_header}.{payload}.",
        f"{header}.{payload}.{signature[:-4]}AAAA",
    ):
        resp = await kc_api.get("/api/v1/referrals", headers=_bearer(bad))
        assert resp.status_code == 401, resp.text
        assert resp.headers["content-type"] == "application/problem+json"


async def test_user_moved_to_another_organisation_loses_access(
    kc_api: httpx.AsyncClient, keycloak: Any
) -> None:
    from deploy.keycloak.server import admin_client

    referral_id = await _antwerp_referral(kc_api, keycloak)
    user = "demo-justice-assistant-antwerpen"
    before = _bearer(_token(keycloak, user))
    assert (await kc_api.get(f"/api/v1/referrals/{referral_id}", headers=before)).status_code == 200
    with admin_client(keycloak) as admin:
        orgs = {o["alias"]: o["id"] for o in admin.get("/organizations").json()}
        user_id = admin.get("/users", params={"username": user, "exact": "true"}).json()[0]["id"]
        old, new = orgs["parket-antwerpen"], orgs["parquet-bruxelles"]
        assert admin.delete(f"/organizations/{old}/members/{user_id}").status_code == 204
        added = admin.post(
            f"/organizations/{new}/members",
            content=json.dumps(user_id),
            headers={"Content-Type": "application/json"},
        )
        assert added.status_code == 201, added.text
        try:
            after = _bearer(_token(keycloak, user))
            got = await kc_api.get(f"/api/v1/referrals/{referral_id}", headers=after)
            assert got.status_code == 404
            listed = await kc_api.get("/api/v1/referrals?limit=100", headers=after)
            assert referral_id not in {item["id"] for item in listed.json()["items"]}
        finally:
            admin.delete(f"/organizations/{new}/members/{user_id}")
            admin.post(
                f"/organizations/{old}/members",
                content=json.dumps(user_id),
                headers={"Content-Type": "application/json"},
            )


async def test_rotated_realm_keys_are_accepted_without_restart(
    kc_api: httpx.AsyncClient, keycloak: Any
) -> None:
    from deploy.keycloak.server import admin_client

    office = "demo-prosecutor-antwerpen"
    old = _token(keycloak, office)
    assert (await kc_api.get("/api/v1/referrals", headers=_bearer(old))).status_code == 200
    with admin_client(keycloak) as admin:
        realm_id = admin.get("").json()["id"]
        created = admin.post(
            "/components",
            json={
                "name": "rsa-rotated-by-api-test",
                "providerId": "rsa-generated",
                "providerType": "org.keycloak.keys.KeyProvider",
                "parentId": realm_id,
                "config": {
                    "priority": ["2000"],
                    "keySize": ["2048"],
                    "algorithm": ["RS256"],
                    "enabled": ["true"],
                    "active": ["true"],
                },
            },
        )
        assert created.status_code == 201, created.text
        component_id = created.headers["location"].rsplit("/", 1)[-1]
        try:
            new = _token(keycloak, office)

            def kid(token: str) -> str:
                head = token.split(".")[0]
                padded = head + "=" * (-len(head) % 4)
                return str(json.loads(base64.urlsafe_b64decode(padded))["kid"])

            assert kid(new) != kid(old)
            resp = await kc_api.get("/api/v1/referrals", headers=_bearer(new))
            assert resp.status_code == 200
        finally:
            # give the realm its original key back for the other Keycloak tests
            admin.delete(f"/components/{component_id}")
