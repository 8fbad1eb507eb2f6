"""Development-only token signing for `make run` before Keycloak is wired in.

The key lives under `.data/`, is generated locally, and is refused in production. Tokens
carry the same claim shape as the Keycloak realm (`organization`, `realm_access`).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from services.settings import Settings

DEV_KID = "dev-only-signing-key"


class DevTokensRefused(RuntimeError):
    """Development tokens asked for where the settings forbid them."""


def _require_dev(settings: Settings) -> None:
    if settings.is_production or not settings.dev_tokens_enabled:
        raise DevTokensRefused("development tokens are refused by these settings")


def jwks_path(settings: Settings) -> Path:
    return settings.data_dir / "dev-jwks.json"


def ensure_key(settings: Settings) -> rsa.RSAPrivateKey:
    """Create (once) the development signing key and publish its JWKS file."""
    _require_dev(settings)
    path = settings.dev_signing_key_path
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        assert isinstance(key, rsa.RSAPrivateKey)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
    jwk: dict[str, Any] = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update({"kid": DEV_KID, "use": "sig", "alg": "RS256"})
    jwks_path(settings).write_text(json.dumps({"keys": [jwk]}))
    return key


def mint(
    settings: Settings,
    *,
    subject: str,
    organisation: str,
    sector: str,
    roles: list[str],
    ttl_seconds: int = 900,
) -> str:
    """A Keycloak-shaped access token signed with the development key."""
    key = ensure_key(settings)
    now = int(time.time())
    claims = {
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "sub": subject,
        "iat": now,
        "exp": now + ttl_seconds,
        "jti": str(uuid.uuid4()),
        "realm_access": {"roles": roles},
        "organization": {organisation: {"sector": [sector], "demo": ["true"]}},
    }
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": DEV_KID})
