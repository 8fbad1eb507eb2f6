"""Bearer JWT validation (RS256 against a JWKS) and the mapping of claims to a Principal.

The claim shapes are those of the Keycloak realm in `deploy/keycloak/`: roles in
`realm_access.roles`, the organisation as the single key of `organization` with its
`sector` attribute (attributes are lists). Platform roles (the administrator) have their
place there too: the operators' organisation, of sector `platform`, a party to no case.

The key set is cached and replaced whole on every refresh, so a key dropped from the JWKS
stops being trusted at the next refresh. While the JWKS cannot be fetched, tokens signed by
a cached key are still checked; any other token gets 503 (the identity provider is down),
not 401 (the token is bad): a client must not throw away a valid token over an outage.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from services.errors import Unauthenticated, Unavailable
from services.principal import PLATFORM_ROLES, Principal, Role, Sector

_KNOWN_ROLES = {role.value for role in Role}

# RFC 7638 thumbprint of the development realm's fixed signing key
# (deploy/keycloak/realm/referral-realm.json). Its private half is public in the repository,
# so production refuses every token it signed.
DEVELOPMENT_KEY_THUMBPRINT = "pHP76GqNkM8bNEBWTQ6jQQHPRs-MwWwuByu-zHqCf-Q"


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def thumbprint(key: RSAPublicKey) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url) of an RSA public key."""
    numbers = key.public_numbers()

    def member(value: int) -> str:
        return _b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))

    canonical = json.dumps(
        {"e": member(numbers.e), "kty": "RSA", "n": member(numbers.n)}, separators=(",", ":")
    )
    return _b64url(hashlib.sha256(canonical.encode()).digest())


class TokenValidator:
    """Checks signature, expiry, issuer and audience against a cached JWKS.

    `cache_seconds`: how long a fetched key set is used before it is fetched again.
    `refetch_seconds`: the least time between two fetches (an unknown key id, or an
    unreachable identity provider, does not make every request fetch).
    `refused_thumbprints`: keys never trusted even when the JWKS publishes them.
    """

    def __init__(
        self,
        *,
        jwks_url: str,
        issuer: str,
        audience: str,
        cache_seconds: int = 300,
        refetch_seconds: float = 5.0,
        fetch_timeout: float = 5.0,
        refused_thumbprints: frozenset[str] = frozenset(),
    ) -> None:
        self._issuer = issuer
        self._audience = audience
        self._jwks_url = jwks_url
        self._cache_seconds = cache_seconds
        self._refetch_seconds = refetch_seconds
        self._fetch_timeout = fetch_timeout
        self._refused = refused_thumbprints
        self._lock = threading.Lock()
        self._keys: dict[str, Any] = {}
        self._fetched_at: float | None = None  # last successful fetch (monotonic)
        # the same two, read together without the lock by `validate_cached`
        self._fresh_keys: tuple[float, dict[str, Any]] | None = None
        self._attempted_at: float | None = None  # last fetch, successful or not
        self._unknown_kid_at: float | None = None  # last fetch for an unknown key id
        self._reachable = False  # did the last fetch succeed?

    def _fetch(self) -> None:
        """Replace the key set with the JWKS's; raises Unavailable when it cannot be fetched."""
        attempted = self._attempted_at = time.monotonic()
        try:
            resp = httpx.get(self._jwks_url, timeout=self._fetch_timeout)
            resp.raise_for_status()
            key_set = jwt.PyJWKSet.from_dict(resp.json())
        except (httpx.HTTPError, ValueError, jwt.PyJWTError):
            self._reachable = False
            raise Unavailable("the identity provider is unavailable") from None
        keys: dict[str, Any] = {}
        for jwk in key_set.keys:
            if not jwk.key_id or jwk.public_key_use == "enc":
                continue
            if isinstance(jwk.key, RSAPublicKey) and thumbprint(jwk.key) in self._refused:
                continue
            keys[jwk.key_id] = jwk.key
        self._keys = keys
        self._fetched_at = attempted
        self._fresh_keys = (attempted, keys)
        self._reachable = True

    def _may_fetch(self, now: float) -> bool:
        return self._attempted_at is None or now - self._attempted_at >= self._refetch_seconds

    def _signing_key(self, kid: str) -> Any:
        with self._lock:
            now = time.monotonic()
            fresh = self._fetched_at is not None and now - self._fetched_at < self._cache_seconds
            if fresh and kid in self._keys:
                return self._keys[kid]
            if fresh:
                # a key rotated in since the last fetch: refetch at once, but for unknown
                # key ids at most once per window, and not while the last fetch failed
                may_fetch = self._reachable or self._may_fetch(now)
                if self._unknown_kid_at is not None:
                    may_fetch = may_fetch and now - self._unknown_kid_at >= self._refetch_seconds
                if may_fetch:
                    self._unknown_kid_at = now
            else:
                may_fetch = self._may_fetch(now)
            if may_fetch:
                try:
                    self._fetch()
                except Unavailable:
                    if kid in self._keys:  # an outage: the key cached before it still checks
                        return self._keys[kid]
                    raise
            if kid in self._keys:
                return self._keys[kid]
            if not self._reachable:
                raise Unavailable("the identity provider is unavailable")
            raise Unauthenticated("the token is not signed by a trusted key")

    def identity_provider_reachable(self) -> bool:
        """Whether the JWKS answers (fetched at most every `refetch_seconds`; blocking I/O)."""
        with self._lock:
            if self._may_fetch(time.monotonic()):
                try:
                    self._fetch()
                except Unavailable:
                    pass
            return self._reachable

    def validate(self, token: str) -> Principal:
        """The principal of a valid token; raises Unauthenticated otherwise, Unavailable when
        the identity provider cannot be reached and no cached key checks the token."""
        principal = self._check(token, self._signing_key)
        assert principal is not None  # `_signing_key` finds a key or raises
        return principal

    def validate_cached(self, token: str) -> Principal | None:
        """`validate` when the key set is fresh and holds the token's key; None when the
        check needs the JWKS fetched (then call `validate`, off the event loop). Never does
        I/O and never waits for the lock (held while a fetch runs): safe on the event loop.
        Raises as `validate` does for a token that is not valid."""
        snapshot = self._fresh_keys
        if snapshot is None or time.monotonic() - snapshot[0] >= self._cache_seconds:
            return None
        return self._check(token, snapshot[1].get)

    def _check(self, token: str, key_of: Callable[[str], Any]) -> Principal | None:
        try:
            header = jwt.get_unverified_header(token)
            if header.get("alg") != "RS256":
                raise Unauthenticated("the token must be signed with RS256")
            kid = header.get("kid")
            if not isinstance(kid, str) or not kid:
                raise Unauthenticated("the token is not valid")
            key = key_of(kid)
            if key is None:
                return None
            claims = jwt.decode(
                token,
                key,
                algorithms=["RS256"],
                audience=self._audience,
                issuer=self._issuer,
                leeway=30,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except (Unauthenticated, Unavailable):
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
    if sector is Sector.PLATFORM:
        # the platform's operators do no casework: a case role given to one is ignored
        roles &= PLATFORM_ROLES
    return Principal(subject=subject, organisation=str(code), sector=sector, roles=roles)
