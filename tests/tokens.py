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
    "platform": "platform",
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


class JwksServer:
    """A JWKS over HTTP on 127.0.0.1 that a test can stop, start again (same port) and re-key:
    the identity provider's outages and key rotations, without a mock."""

    def __init__(self) -> None:
        self.minters: list[TokenMinter] = []
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0
        self.requests = 0  # JWKS fetches answered
        self.add_key()

    @property
    def jwks_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/jwks.json"

    @property
    def minter(self) -> TokenMinter:
        """The newest key's minter."""
        return self.minters[-1]

    def add_key(self) -> TokenMinter:
        """Publish one more key (the old ones stay published)."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        minter = TokenMinter(key=key, kid="test-" + uuid.uuid4().hex[:8], jwks_url="")
        self.minters.append(minter)
        self._set_urls()
        return minter

    def publish_only(self, *minters: TokenMinter) -> None:
        """Publish exactly these keys (the others are dropped from the JWKS)."""
        self.minters = list(minters)

    def body(self) -> bytes:
        keys = []
        for minter in self.minters:
            jwk = json.loads(RSAAlgorithm.to_jwk(minter.key.public_key()))
            jwk.update({"kid": minter.kid, "use": "sig", "alg": "RS256"})
            keys.append(jwk)
        return json.dumps({"keys": keys}).encode()

    def _set_urls(self) -> None:
        for minter in self.minters:
            minter.jwks_url = self.jwks_url

    def start(self) -> None:
        jwks = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                body = jwks.body()
                jwks.requests += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_port
        self._set_urls()
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Nothing listens on the port any more (connections are refused)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@contextmanager
def jwks_server() -> Iterator[TokenMinter]:
    """A JWKS served over HTTP on 127.0.0.1 (free port), stopped afterwards."""
    with running_jwks() as server:
        yield server.minter


@contextmanager
def running_jwks() -> Iterator[JwksServer]:
    """A JwksServer, started on a free port, stopped afterwards."""
    server = JwksServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
