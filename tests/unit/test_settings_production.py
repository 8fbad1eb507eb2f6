"""Production settings refuse development material: demo users, plain-http JWKS, SQLite,
insecure cookies, and the development file key ring."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from services.runtime import load_keyring
from services.settings import Settings

PRODUCTION: dict[str, Any] = {
    "environment": "production",
    "database_url": "postgresql+psycopg://referral@db.internal/referral",
    "jwks_url": "https://id.example/realms/referral/protocol/openid-connect/certs",
    "jwt_issuer": "https://id.example/realms/referral",
    "demo_users_enabled": False,
}


def test_a_complete_production_configuration_is_accepted() -> None:
    assert Settings(**PRODUCTION).is_production


@pytest.mark.parametrize(
    "override",
    [
        {"demo_users_enabled": True},
        {"database_url": "sqlite:///.data/referral.db"},
        {"jwks_url": "http://id.example/certs"},
        {"session_cookie_secure": False},
    ],
    ids=["demo users", "sqlite", "plain-http jwks", "insecure cookie"],
)
def test_production_refuses_development_material(override: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Settings(**{**PRODUCTION, **override})


def test_production_refuses_the_file_key_ring(tmp_path: Path) -> None:
    settings = Settings(**PRODUCTION, keyring_path=tmp_path / "keyring.json")
    with pytest.raises(RuntimeError, match="file key ring"):
        load_keyring(settings)
    assert not (tmp_path / "keyring.json").exists()
    allowed = Settings(
        **PRODUCTION, keyring_path=tmp_path / "keyring.json", allow_file_keyring_in_production=True
    )
    assert load_keyring(allowed).current_kek_version()
