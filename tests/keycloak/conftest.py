"""Fixtures for the real-Keycloak tests: one Keycloak per test session.

The server is started through ``deploy/keycloak/server.py`` (the same scripts developers
use). Without Java 17+ on the machine every test that needs it is skipped with the reason.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from jwt import PyJWKClient

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # `deploy/` is not an installed package
    sys.path.insert(0, str(REPO_ROOT))

from deploy.keycloak.server import KeycloakInfo  # noqa: E402


@pytest.fixture(scope="session")
def jwks_client(keycloak: KeycloakInfo) -> PyJWKClient:
    """One JWKS client for the session, as the API would keep one (it refetches on unknown kid)."""
    return PyJWKClient(keycloak.jwks_url, cache_keys=True, lifespan=300, timeout=30)
