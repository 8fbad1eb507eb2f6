"""The dev realm `referral` against a REAL Keycloak: token claim shape, signatures, users, keys.

These pin the contract the API's authentication relies on (see deploy/keycloak/README.md):
`sub`, `iss`, `aud` contains `referral-api`, `realm_access.roles`, and the `organization`
claim `{alias: {"id": ..., "sector": [...]}}`.
"""

from __future__ import annotations

import base64
import json
import subprocess
import uuid
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest
from jwt import PyJWKClient

from deploy.keycloak.server import (
    API_CLIENT_ID,
    DEMO_ORGANIZATIONS,
    DEMO_USERS,
    HERE,
    KeycloakInfo,
    KeycloakUnavailable,
    admin_client,
    find_java,
    password_grant,
)

pytestmark = [pytest.mark.keycloak, pytest.mark.integration]


def _header(token: str) -> dict[str, Any]:
    head = token.split(".")[0]
    return dict(json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4))))


def _verify(token: str, jwks: PyJWKClient, info: KeycloakInfo) -> dict[str, Any]:
    """What the API must do: RS256 only, signature from JWKS, issuer, audience, exp."""
    key = jwks.get_signing_key_from_jwt(token)
    return dict(
        jwt.decode(
            token,
            key.key,
            algorithms=["RS256"],
            audience=API_CLIENT_ID,
            issuer=info.issuer,
            options={"require": ["exp", "iat", "iss", "sub", "aud"]},
        )
    )


def _token(info: KeycloakInfo, username: str, password: str = "demo") -> str:
    resp = password_grant(info, username, password)
    assert resp.status_code == 200, resp.text
    return str(resp.json()["access_token"])


@pytest.fixture(scope="module")
def realm_export() -> dict[str, Any]:
    return dict(json.loads((HERE / "realm" / "referral-realm.json").read_text()))


@pytest.fixture(scope="module")
def org_ids(keycloak: KeycloakInfo) -> dict[str, str]:
    with admin_client(keycloak) as admin:
        resp = admin.get("/organizations", params={"briefRepresentation": "false"})
        resp.raise_for_status()
        return {org["alias"]: org["id"] for org in resp.json()}


def test_java_absent_is_reported_not_crashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """The skip path: no usable Java -> KeycloakUnavailable with a readable reason."""
    monkeypatch.setenv("REFERRAL_JAVA_HOME", "/nonexistent-jdk")
    with pytest.raises(KeycloakUnavailable, match="not a Java 17"):
        find_java()


def test_discovery_health_and_realm(keycloak: KeycloakInfo) -> None:
    disc = httpx.get(f"{keycloak.issuer}/.well-known/openid-configuration", timeout=30)
    assert disc.status_code == 200
    body = disc.json()
    assert body["issuer"] == keycloak.issuer
    assert body["jwks_uri"] == keycloak.jwks_url
    assert body["token_endpoint"] == keycloak.token_url
    assert keycloak.issuer.startswith("http://127.0.0.1:")
    ready = httpx.get(f"{keycloak.management_url}/health/ready", timeout=30)
    assert ready.status_code == 200 and ready.json()["status"] == "UP"
    # health lives on the management port only, not on the public port
    assert httpx.get(f"{keycloak.base_url}/health/ready", timeout=30).status_code == 404


def test_realm_has_the_organizations_with_sector(
    keycloak: KeycloakInfo, org_ids: dict[str, str], realm_export: dict[str, Any]
) -> None:
    assert set(org_ids) == set(DEMO_ORGANIZATIONS)
    # ids are pinned in the export, so they are the same in every run
    assert org_ids == {o["alias"]: o["id"] for o in realm_export["organizations"]}
    with admin_client(keycloak) as admin:
        for alias, sector in DEMO_ORGANIZATIONS.items():
            org = admin.get(f"/organizations/{org_ids[alias]}").json()
            assert org["attributes"]["sector"] == [sector]
            assert org["attributes"]["demo"] == ["true"]
            members = admin.get(f"/organizations/{org_ids[alias]}/members").json()
            expected = {u for u, (_, o) in DEMO_USERS.items() if o == alias}
            assert {m["username"] for m in members} == expected
        users = admin.get("/users", params={"q": "demo:true", "max": 100}).json()
        assert {u["username"] for u in users} == set(DEMO_USERS)


@pytest.mark.parametrize("username", sorted(DEMO_USERS))
def test_demo_user_token_claim_shape(
    keycloak: KeycloakInfo,
    jwks_client: PyJWKClient,
    org_ids: dict[str, str],
    realm_export: dict[str, Any],
    username: str,
) -> None:
    role, org_alias = DEMO_USERS[username]
    token = _token(keycloak, username)
    assert _header(token)["alg"] == "RS256"
    claims = _verify(token, jwks_client, keycloak)

    # `sub` is present (the `basic` scope) and is the user id pinned in the realm export
    user_ids = {u["username"]: u["id"] for u in realm_export["users"]}
    assert claims["sub"] == user_ids[username]
    aud = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
    assert API_CLIENT_ID in aud
    assert claims["iss"] == keycloak.issuer
    assert claims["azp"] == "referral-cli"
    assert claims["preferred_username"] == username
    # exactly the application role: the clients have fullScopeAllowed=false + scope mappings
    assert claims["realm_access"]["roles"] == [role]
    assert "resource_access" not in claims

    if org_alias is None:
        assert "organization" not in claims
    else:
        assert claims["organization"] == {
            org_alias: {
                "id": org_ids[org_alias],
                "sector": [DEMO_ORGANIZATIONS[org_alias]],
                "demo": ["true"],
            }
        }


def test_wrong_password_gets_no_token(keycloak: KeycloakInfo) -> None:
    resp = password_grant(keycloak, "demo-prosecutor-antwerpen", "not-the-password")
    assert resp.status_code in (400, 401)  # Keycloak 26 answers 400
    assert resp.json()["error"] == "invalid_grant"


def test_worker_service_account_token(
    keycloak: KeycloakInfo, jwks_client: PyJWKClient, realm_export: dict[str, Any]
) -> None:
    resp = httpx.post(
        keycloak.token_url,
        data={
            "grant_type": "client_credentials",
            "client_id": "referral-worker",
            "client_secret": "referral-worker-dev-secret",  # dev realm only
        },
        timeout=30,
    )
    assert resp.status_code == 200, resp.text
    claims = _verify(resp.json()["access_token"], jwks_client, keycloak)
    assert claims["azp"] == "referral-worker"
    assert "organization" not in claims
    assert "realm_access" not in claims  # the service account has no application role
    sa_ids = [u["id"] for u in realm_export["users"] if u.get("serviceAccountClientId")]
    assert claims["sub"] == sa_ids[0]


def test_api_client_cannot_log_anyone_in(keycloak: KeycloakInfo) -> None:
    resp = password_grant(keycloak, "demo-prosecutor-antwerpen", client_id=API_CLIENT_ID)
    assert resp.status_code in (400, 401)


def test_web_client_requires_pkce_s256(keycloak: KeycloakInfo) -> None:
    auth_url = f"{keycloak.issuer}/protocol/openid-connect/auth"
    params = {
        "client_id": "referral-web",
        "response_type": "code",
        "scope": "openid",
        "redirect_uri": "http://127.0.0.1:8000/auth/callback",
        "state": "s",
    }
    no_pkce = httpx.get(auth_url, params=params, follow_redirects=False, timeout=30)
    assert no_pkce.status_code == 302
    query = parse_qs(urlsplit(no_pkce.headers["location"]).query)
    assert query["error"] == ["invalid_request"]

    plain = httpx.get(
        auth_url,
        params={**params, "code_challenge": "x" * 43, "code_challenge_method": "plain"},
        follow_redirects=False,
        timeout=30,
    )
    assert plain.status_code == 302
    assert parse_qs(urlsplit(plain.headers["location"]).query)["error"] == ["invalid_request"]

    s256 = httpx.get(
        auth_url,
        params={**params, "code_challenge": "E" * 43, "code_challenge_method": "S256"},
        follow_redirects=False,
        timeout=30,
    )
    assert s256.status_code == 200  # the login page

    bad_redirect = httpx.get(
        auth_url,
        params={
            **params,
            "redirect_uri": "http://evil.example/cb",
            "code_challenge": "E" * 43,
            "code_challenge_method": "S256",
        },
        follow_redirects=False,
        timeout=30,
    )
    assert bad_redirect.status_code == 400


def test_disabled_user_gets_no_new_token(keycloak: KeycloakInfo) -> None:
    username = f"tmp-disable-{uuid.uuid4().hex[:8]}"
    with admin_client(keycloak) as admin:
        created = admin.post(
            "/users",
            json={
                "username": username,
                "enabled": True,
                "emailVerified": True,
                "firstName": "Temp",
                "lastName": "User",
                "email": f"{username}@referral.test",
                "credentials": [{"type": "password", "value": "demo", "temporary": False}],
            },
        )
        assert created.status_code == 201, created.text
        user_id = created.headers["location"].rsplit("/", 1)[-1]
        try:
            first = password_grant(keycloak, username)
            assert first.status_code == 200, first.text
            refresh_token = first.json()["refresh_token"]

            user = admin.get(f"/users/{user_id}").json()
            user["enabled"] = False
            assert admin.put(f"/users/{user_id}", json=user).status_code == 204

            again = password_grant(keycloak, username)
            assert again.status_code in (400, 401)
            assert again.json()["error"] == "invalid_grant"
            refreshed = httpx.post(
                keycloak.token_url,
                data={
                    "grant_type": "refresh_token",
                    "client_id": "referral-cli",
                    "refresh_token": refresh_token,
                },
                timeout=30,
            )
            assert refreshed.status_code == 400
            assert refreshed.json()["error"] == "invalid_grant"
        finally:
            admin.delete(f"/users/{user_id}")


def test_key_rotation_new_kid_verifies_with_refreshed_jwks(
    keycloak: KeycloakInfo, jwks_client: PyJWKClient
) -> None:
    """Runs last in this module (it changes the realm's active signing key)."""
    old_token = _token(keycloak, "demo-auditor-dpo-office")
    old_kid = _header(old_token)["kid"]
    _verify(old_token, jwks_client, keycloak)

    with admin_client(keycloak) as admin:
        realm_id = admin.get("").json()["id"]
        created = admin.post(
            "/components",
            json={
                "name": "rsa-rotated-by-test",
                "providerId": "rsa-generated",
                "providerType": "org.keycloak.keys.KeyProvider",
                "parentId": realm_id,
                "config": {
                    "priority": ["1000"],  # higher than the default key (100): becomes active
                    "keySize": ["2048"],
                    "algorithm": ["RS256"],
                    "enabled": ["true"],
                    "active": ["true"],
                },
            },
        )
        assert created.status_code == 201, created.text
        component_id = created.headers["location"].rsplit("/", 1)[-1]
        keys = admin.get("/keys").json()
        new_kid = next(
            k["kid"]
            for k in keys["keys"]
            if k.get("providerId") == component_id and k.get("algorithm") == "RS256"
        )
        assert keys["active"]["RS256"] == new_kid

    new_token = _token(keycloak, "demo-auditor-dpo-office")
    assert _header(new_token)["kid"] == new_kid != old_kid

    # A freshly fetched JWKS verifies the new token ...
    fresh = PyJWKClient(keycloak.jwks_url, timeout=30)
    assert _verify(new_token, fresh, keycloak)["sub"]
    # ... and so does the long-lived client once it refreshes (PyJWKClient refetches on an
    # unknown kid, but at most once per `cooldown_duration`, 30 s by default: force it here).
    jwks_client.get_signing_keys(refresh=True)
    assert _verify(new_token, jwks_client, keycloak)["sub"]
    # The old key is still published (lower priority, still enabled): old tokens stay valid.
    assert _verify(old_token, fresh, keycloak)["sub"]


def test_scripts_are_valid_bash() -> None:
    for script in ("lib.sh", "fetch.sh", "start.sh", "stop.sh", "java.sh"):
        subprocess.run(["bash", "-n", str(HERE / script)], check=True)
