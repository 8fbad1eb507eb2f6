"""Bearer JWT validation (RS256 against a JWKS) and the mapping of claims to a Principal.

The claim shapes are those of the Keycloak realm in `deploy/keycloak/`: roles in
`realm_access.roles`, the organisation as the single key of `organization` with its
`sector` attribute (attributes are lists).
"""

from __future__ import annotations

import time
from typing import Any

import jwt
from jwt import PyJWKClient

from services.errors import Unauthenticated
from services.principal import Principal, Role, Sector

_KNOWN_ROLES = {role.value for role in Role}


class TokenValidator:
    """Checks signature, expiry, issuer and audience; caches the JWKS."""

    def __init__(
        self, *, jwks_url: str, issuer: str, audience: str, cache_seconds: int = 300
    ) -> None:
        self._issuer = issuer
        self._audience = audience
        self._jwks_url = jwks_url
        self._cache_seconds = cache_seconds
        self._client = self._new_client()
        self._last_refresh = 0.0

    def _new_client(self) -> PyJWKClient:
        return PyJWKClient(self._jwks_url, cache_keys=True, lifespan=self._cache_seconds, timeout=5)

    def _signing_key(self, token: str) -> Any:
        try:
            return self._client.get_signing_key_from_jwt(token).key
        except jwt.PyJWKClientError:
            # An unknown key id after a key rotation: refetch the key set, at most every 5 s.
            if time.monotonic() - self._last_refresh < 5:
                raise
            self._last_refresh = time.monotonic()
            self._client = self._new_client()
            return self._client.get_signing_key_from_jwt(token).key

    def validate(self, token: str) -> Principal:
        """The principal of a valid token; raises Unauthenticated otherwise (blocking I/O)."""
        try:
            header = jwt.get_unverified_header(token)
            if header.get("alg") != "RS256":
                raise Unauthenticated("the token must be signed with RS256")
            key = self._signing_key(token)
            claims = jwt.decode(
                token,
                key,
                algorithms=["RS256"],
                audience=self._audience,
                issuer=self._issuer,
                leeway=30,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except Unauthenticated:
            raise
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("the token has expired") from None
        except (jwt.PyJWTError, ValueError, KeyError):
            raise Unauthenticated("the token is not valid") from None
        return principal_from_claims(claims)


def principal_from_claims(claims: dict[str, Any]) -> Principal:
    """Map validated claims to a Principal; refuse tokens without one organisation."""
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise Unauthenticated("the token has no subject")
    organisations = claims.get("organization")
    if isinstance(organisations, dict) and len(organisations) == 1:
        ((code, attributes),) = organisations.items()
    elif isinstance(organisations, list) and len(organisations) == 1:
        code, attributes = organisations[0], {}
    else:
        raise Unauthenticated("the token must name exactly one organisation")
    sector_values = attributes.get("sector") if isinstance(attributes, dict) else None
    if isinstance(sector_values, list) and sector_values:
        sector_value = sector_values[0]
    else:
        sector_value = sector_values
    try:
        sector = Sector(str(sector_value))
    except ValueError:
        raise Unauthenticated("the token's organisation has no known sector") from None
    realm_access = claims.get("realm_access")
    raw_roles = realm_access.get("roles", []) if isinstance(realm_access, dict) else []
    roles = frozenset(Role(r) for r in raw_roles if isinstance(r, str) and r in _KNOWN_ROLES)
    return Principal(subject=subject, organisation=str(code), sector=sector, roles=roles)
