"""Test tokens: a local RSA key pair served as a JWKS on 127.0.0.1, Keycloak-shaped claims."""

from __future__ import annotations

import http.server
import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

ISSUER = "http://127.0.0.1/realms/referral-test"
AUDIENCE = "referral-api"

SECTORS = {
    "parket-antwerpen": "justice",
    "parquet-bruxelles": "justice",
    "cgg-antwerpen": "health",
    "free-clinic-antwerpen": "health",
    "caw-brussel": "welfare",
    "dpo-office": "audit",
}


@dataclass
class TokenMinter:
    key: rsa.RSAPrivateKey
    kid: str
    jwks_url: str

    def mint(
        self,
        organisation: str,
        role: str,
        *,
        subject: str | None = None,
        sector: str | None = None,
        ttl: int = 600,
        **overrides: Any,
    ) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": subject or f"user-{role}-{organisation}",
            "iat": now,
            "exp": now + ttl,
            "realm_access": {"roles": [role]},
            "organization": {
                organisation: {
                    "id": str(uuid.uuid5(uuid.NAMESPACE_DNS, organisation)),
                    "sector": [sector or SECTORS[organisation]],
                }
            },
        }
        claims.update(overrides)
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": self.kid})

    def headers(self, organisation: str, role: str, **kwargs: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.mint(organisation, role, **kwargs)}"}


@contextmanager
def jwks_server() -> Iterator[TokenMinter]:
    """A JWKS served over HTTP on 127.0.0.1 (free port), stopped afterwards."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    kid = "test-" + uuid.uuid4().hex[:8]
    jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update({"kid": kid, "use": "sig", "alg": "RS256"})
    body = json.dumps({"keys": [jwk]}).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield TokenMinter(
            key=key, kid=kid, jwks_url=f"http://127.0.0.1:{server.server_port}/jwks.json"
        )
    finally:
        server.shutdown()
        server.server_close()
