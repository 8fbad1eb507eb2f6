"""The development realm keeps its signing key across Keycloak restarts (a REAL Keycloak).

Before, every start generated new realm keys, so a restart of Keycloak made every issued
token fail. The realm export now carries a fixed, development-only RS256 key: a token issued
before a restart still validates after it, and while Keycloak is down the API answers 503
(no cached key could check the token), never 401.
"""

from __future__ import annotations

import json
from pathlib import Path

import jwt
import pytest

from api.auth import DEVELOPMENT_KEY_THUMBPRINT, TokenValidator
from deploy.keycloak.server import (
    HERE,
    KeycloakUnavailable,
    find_java,
    free_port,
    password_grant,
    running_keycloak,
)
from services.errors import Unavailable
from tests.ports import restartable_port

pytestmark = [pytest.mark.keycloak, pytest.mark.integration]

USER = "demo-care-worker-cgg-antwerpen"
ACCESS_TOKEN_SECONDS = 300  # documented in README.md and services/settings.py


def _validator(issuer: str, jwks_url: str) -> TokenValidator:
    # refetch at once: this test restarts the server within seconds
    return TokenValidator(
        jwks_url=jwks_url, issuer=issuer, audience="referral-api", refetch_seconds=0
    )


def test_the_realm_export_marks_its_fixed_key_development_only() -> None:
    realm = json.loads((HERE / "realm" / "referral-realm.json").read_text())
    (provider,) = realm["components"]["org.keycloak.keys.KeyProvider"]
    assert provider["name"].startswith("DEVELOPMENT-ONLY")
    assert DEVELOPMENT_KEY_THUMBPRINT  # production refuses it (tests/unit/test_token_keys.py)


def test_access_tokens_of_the_development_realm_live_five_minutes() -> None:
    """Logouts and disabled users lose API access within this time (README, settings)."""
    realm = json.loads((HERE / "realm" / "referral-realm.json").read_text())
    assert realm["accessTokenLifespan"] == ACCESS_TOKEN_SECONDS


def test_a_token_issued_before_a_restart_validates_after_it(tmp_path: Path) -> None:
    try:
        find_java()
    except KeycloakUnavailable as exc:
        pytest.skip(f"Keycloak needs Java 17+ and none was found: {exc}")
    # The same port on both runs (the issuer, `iss`, names it), below the ephemeral range
    # so that no client connection takes it while Keycloak is down; the management port
    # is not part of the issuer and is new on each start.
    port = restartable_port()
    run_dir = tmp_path / "keycloak"
    with running_keycloak(port, run_dir, management_port=free_port()) as kc:
        grant = password_grant(kc, USER)
        assert grant.status_code == 200, grant.text
        token = grant.json()["access_token"]
        kid_before = jwt.get_unverified_header(token)["kid"]
        claims = jwt.decode(token, options={"verify_signature": False})
        assert claims["exp"] - claims["iat"] == ACCESS_TOKEN_SECONDS
        long_lived = _validator(kc.issuer, kc.jwks_url)
        assert long_lived.validate(token).organisation == "cgg-antwerpen"
        issuer, jwks_url = kc.issuer, kc.jwks_url

    # Keycloak down: an API started now has no key to check the token with: 503, not 401.
    started_during_outage = _validator(issuer, jwks_url)
    with pytest.raises(Unavailable):
        started_during_outage.validate(token)
    assert not started_during_outage.identity_provider_reachable()

    with running_keycloak(port, run_dir, management_port=free_port()) as kc:
        assert kc.issuer == issuer
        # the API process that was up all along, the one started during the outage, a new one
        for validator in (long_lived, started_during_outage, _validator(issuer, jwks_url)):
            assert validator.validate(token).organisation == "cgg-antwerpen"
        again = password_grant(kc, USER).json()["access_token"]
        assert jwt.get_unverified_header(again)["kid"] == kid_before
