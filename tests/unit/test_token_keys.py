"""The API's key set against a real JWKS over HTTP (tests/tokens.py), stopped and re-keyed.

An identity-provider outage is not a bad token: while the JWKS cannot be fetched and no
cached key checks a token, the answer is Unavailable (503), never Unauthenticated (401).
A key dropped from the JWKS stops being trusted when the cache refreshes. Production
refuses the development realm's fixed key, whose private half is in the repository.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from api.auth import DEVELOPMENT_KEY_THUMBPRINT, TokenValidator, thumbprint
from services.errors import Unauthenticated, Unavailable
from tests.tokens import AUDIENCE, ISSUER, JwksServer, TokenMinter, running_jwks

REALM_EXPORT = Path(__file__).resolve().parents[2] / "deploy/keycloak/realm/referral-realm.json"


@pytest.fixture
def jwks() -> Iterator[JwksServer]:
    with running_jwks() as server:
        yield server


def validator(jwks: JwksServer, **kwargs: object) -> TokenValidator:
    kwargs.setdefault("refetch_seconds", 0)
    return TokenValidator(
        jwks_url=jwks.jwks_url,
        issuer=ISSUER,
        audience=AUDIENCE,
        **kwargs,  # type: ignore[arg-type]
    )


def token(minter: TokenMinter) -> str:
    return minter.mint("cgg-antwerpen", "care_worker")


def development_key() -> rsa.RSAPrivateKey:
    realm = json.loads(REALM_EXPORT.read_text())
    (provider,) = realm["components"]["org.keycloak.keys.KeyProvider"]
    der = base64.b64decode(provider["config"]["privateKey"][0])
    key = serialization.load_der_private_key(der, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


def test_started_while_the_identity_provider_is_down_503_until_it_is_back(
    jwks: JwksServer,
) -> None:
    jwks.stop()
    tokens = validator(jwks)
    with pytest.raises(Unavailable):
        tokens.validate(token(jwks.minter))
    assert not tokens.identity_provider_reachable()
    jwks.start()
    assert tokens.validate(token(jwks.minter)).organisation == "cgg-antwerpen"
    assert tokens.identity_provider_reachable()


def test_an_outage_after_the_keys_were_fetched_keeps_checking_with_the_cached_keys(
    jwks: JwksServer,
) -> None:
    tokens = validator(jwks, cache_seconds=1)
    tokens.validate(token(jwks.minter))
    jwks.stop()
    time.sleep(1.1)  # the cache is due for a refresh, which fails
    assert tokens.validate(token(jwks.minter)).subject
    # a token signed by a key the API never saw cannot be checked: unavailable, not refused
    newcomer = jwks.add_key()
    with pytest.raises(Unavailable):
        tokens.validate(token(newcomer))


def test_a_key_dropped_from_the_jwks_is_refused_once_the_cache_refreshes(
    jwks: JwksServer,
) -> None:
    old = jwks.minter
    tokens = validator(jwks, cache_seconds=1)
    tokens.validate(token(old))
    new = jwks.add_key()
    jwks.publish_only(new)
    time.sleep(1.1)
    assert tokens.validate_cached(token(old)) is None  # stale: the thread's check decides
    with pytest.raises(Unauthenticated):
        tokens.validate(token(old))
    assert tokens.validate(token(new)).subject
    # the refreshed set no longer holds the key: never trusted on the event loop either
    assert tokens.validate_cached(token(old)) is None


def test_an_unknown_key_id_is_401_and_refetches_at_most_once_per_window(
    jwks: JwksServer,
) -> None:
    tokens = validator(jwks, refetch_seconds=30)
    tokens.validate(token(jwks.minter))
    fetches = jwks.requests
    stranger = TokenMinter(
        key=rsa.generate_private_key(public_exponent=65537, key_size=2048),
        kid="not-published",
        jwks_url=jwks.jwks_url,
    )
    for _ in range(5):
        with pytest.raises(Unauthenticated):
            tokens.validate(token(stranger))
    assert jwks.requests == fetches + 1


def test_a_key_rotated_in_right_after_a_fetch_is_trusted_at_once(jwks: JwksServer) -> None:
    tokens = validator(jwks, refetch_seconds=30)
    tokens.validate(token(jwks.minter))  # fetches the key set
    rotated = jwks.add_key()
    assert tokens.validate(token(rotated)).subject


def test_the_development_key_thumbprint_is_the_realm_exports_key() -> None:
    assert thumbprint(development_key().public_key()) == DEVELOPMENT_KEY_THUMBPRINT


def test_production_refuses_tokens_signed_with_the_development_key(jwks: JwksServer) -> None:
    dev = TokenMinter(key=development_key(), kid="dev-fixed", jwks_url=jwks.jwks_url)
    jwks.publish_only(dev)
    assert validator(jwks).validate(token(dev)).subject  # development: accepted
    production = validator(jwks, refused_thumbprints=frozenset({DEVELOPMENT_KEY_THUMBPRINT}))
    with pytest.raises(Unauthenticated):
        production.validate(token(dev))


# ---- the check on the event loop (validate_cached) ----------------------------------------


def test_the_cached_check_answers_only_from_a_fresh_key_set(jwks: JwksServer) -> None:
    tokens = validator(jwks, cache_seconds=1)
    signed = token(jwks.minter)
    assert tokens.validate_cached(signed) is None  # nothing fetched yet: a thread must fetch
    fetches = jwks.requests
    assert tokens.validate(signed).organisation == "cgg-antwerpen"
    cached = tokens.validate_cached(signed)
    assert cached is not None and cached.organisation == "cgg-antwerpen"
    # a key rotated in since the fetch is not known yet: the thread's check fetches it
    assert tokens.validate_cached(token(jwks.add_key())) is None
    time.sleep(1.1)
    assert tokens.validate_cached(signed) is None  # the key set is due for a refresh
    assert jwks.requests == fetches + 1  # and the cached check itself never fetched


def test_the_cached_check_refuses_what_validate_refuses(jwks: JwksServer) -> None:
    tokens = validator(jwks)
    tokens.validate(token(jwks.minter))
    other_audience = jwks.minter.mint("cgg-antwerpen", "care_worker", aud="another-api")
    expired = jwks.minter.mint("cgg-antwerpen", "care_worker", ttl=-120)
    for bad in (other_audience, expired, token(jwks.minter)[:-4] + "AAAA", "not.a.token"):
        with pytest.raises(Unauthenticated):
            tokens.validate(bad)
        with pytest.raises(Unauthenticated):
            tokens.validate_cached(bad)


def test_the_cached_check_never_waits_for_a_fetch_in_progress(jwks: JwksServer) -> None:
    tokens = validator(jwks)
    signed = token(jwks.minter)
    tokens.validate(signed)
    # a thread fetching the JWKS holds the lock for as long as the identity provider takes
    held, release = threading.Event(), threading.Event()

    def fetching() -> None:
        with tokens._lock:
            held.set()
            release.wait(3)

    fetcher = threading.Thread(target=fetching)
    fetcher.start()
    try:
        assert held.wait(5)
        started = time.monotonic()
        assert tokens.validate_cached(signed) is not None
        assert time.monotonic() - started < 1
    finally:
        release.set()
        fetcher.join()
