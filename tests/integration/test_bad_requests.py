"""Bad input gets a clear 4xx problem+json answer, never echoes personal data, and changes
nothing: malformed JSON, wrong types, unknown fields, oversized bodies, bad ids, bad
queries, incomplete consents, and missing, expired or forged tokens."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import Engine, func
from sqlmodel import Session, select

from services.models import Consent, Referral, StatusHistory
from tests.integration.journey import OFFICE, PERSON, Journey, consent_body, new_referral
from tests.tokens import TokenMinter


def _counts(engine: Engine) -> tuple[int, int, int]:
    with Session(engine) as s:
        return (
            s.exec(select(func.count()).select_from(Referral)).one(),
            s.exec(select(func.count()).select_from(Consent)).one(),
            s.exec(select(func.count()).select_from(StatusHistory)).one(),
        )


def _assert_problem(resp: httpx.Response, status: int) -> None:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    body = resp.json()
    assert body["status"] == status and body["title"] and body["type"] and "detail" in body
    for value in PERSON.values():
        assert value not in resp.text  # never echo what was submitted


@pytest.fixture
async def referral(api: httpx.AsyncClient, minter: TokenMinter) -> AsyncIterator[Journey]:
    j = Journey(api, minter)
    await j.create()
    yield j


def _with(path: list[str], value: Any) -> dict[str, Any]:
    body = new_referral()
    target = body
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return body


BAD_CREATES: list[tuple[str, Any, int]] = [
    ("not an object", [1, 2, 3], 422),
    ("string body", "hello", 422),
    ("unknown top-level field", {**new_referral(), "shoe_size": 44}, 422),
    ("unknown nested field", _with(["identity", "nickname"], "x"), 422),
    ("missing identity", {k: v for k, v in new_referral().items() if k != "identity"}, 422),
    ("wrong type", _with(["identity", "birth_date"], 12345), 422),
    ("bad national number", _with(["identity", "national_number"], "12-34"), 422),
    ("future birth date", _with(["identity", "birth_date"], "2999-01-01"), 422),
    ("bad phone", _with(["contact", "phone"], "call me maybe"), 422),
    ("bad district", _with(["district"], "Antwerpen; DROP TABLE"), 422),
    ("bad language", _with(["language"], "xx"), 422),
    ("bad target group", _with(["referral_reason", "target_group"], "shopping"), 422),
    ("bad offence", _with(["judicial_context", "offence_category"], "murder"), 422),
    ("name too long", _with(["identity", "name"], "x" * 201), 422),
    ("framework not a uuid", _with(["framework_id"], "not-a-uuid"), 422),
    ("unknown framework", _with(["framework_id"], str(uuid.uuid4())), 403),
]


@pytest.mark.parametrize(("case", "body", "status"), BAD_CREATES, ids=[c[0] for c in BAD_CREATES])
async def test_bad_create_changes_nothing(
    api: httpx.AsyncClient, minter: TokenMinter, engine: Engine, case: str, body: Any, status: int
) -> None:
    before = _counts(engine)
    resp = await api.post("/api/v1/referrals", json=body, headers=minter.headers(*OFFICE))
    _assert_problem(resp, status)
    assert _counts(engine) == before


async def test_malformed_json_and_oversized_bodies(
    api: httpx.AsyncClient, minter: TokenMinter, engine: Engine
) -> None:
    before = _counts(engine)
    headers = {**minter.headers(*OFFICE), "Content-Type": "application/json"}
    _assert_problem(await api.post("/api/v1/referrals", content=b"{not json", headers=headers), 422)
    big = b'{"x": "' + b"a" * 20_000 + b'"}'
    _assert_problem(await api.post("/api/v1/referrals", content=big, headers=headers), 413)

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(40):
            yield b"a" * 1024

    streamed = await api.post("/api/v1/referrals", content=chunks(), headers=headers)
    _assert_problem(streamed, 413)
    assert _counts(engine) == before


async def test_bad_ids_queries_and_headers(
    api: httpx.AsyncClient, minter: TokenMinter, engine: Engine
) -> None:
    before = _counts(engine)
    h = minter.headers(*OFFICE)
    _assert_problem(await api.get("/api/v1/referrals/not-a-uuid", headers=h), 422)
    _assert_problem(await api.get(f"/api/v1/referrals/{uuid.uuid4()}", headers=h), 404)
    _assert_problem(await api.post(f"/api/v1/referrals/{uuid.uuid4()}/accept", headers=h), 404)
    for query in ("limit=0", "limit=1000", "offset=-1", "limit=abc"):
        _assert_problem(await api.get(f"/api/v1/referrals?{query}", headers=h), 422)
    bad_key = {**h, "Idempotency-Key": "a b"}
    _assert_problem(await api.post("/api/v1/referrals", json=new_referral(), headers=bad_key), 422)
    _assert_problem(await api.get("/api/v1/nothing-here", headers=h), 404)
    _assert_problem(await api.delete("/api/v1/referrals", headers=h), 405)
    assert _counts(engine) == before


BAD_STEPS: list[tuple[str, dict[str, Any]]] = [
    ("decline", {"reason": "bored"}),
    ("decline", {}),
    ("close", {"outcome": "great"}),
    ("decision", {"decision": "hang"}),
    ("progress", {"attendance": "sometimes"}),
    ("intake", {"intake_date": "yesterday"}),
    ("intake", {"intake_date": "2026-11-28T10:00:00"}),  # no time zone
]


@pytest.mark.parametrize(("path", "body"), BAD_STEPS)
async def test_bad_step_bodies_change_nothing(
    referral: Journey, engine: Engine, path: str, body: dict[str, Any]
) -> None:
    version = (await referral.view())["stage"], _counts(engine)
    resp = await referral.api.post(
        f"/api/v1/referrals/{referral.id}/{path}", json=body, headers=referral.headers(OFFICE)
    )
    _assert_problem(resp, 422)
    assert ((await referral.view())["stage"], _counts(engine)) == version


INCOMPLETE_CONSENTS: list[tuple[str, dict[str, Any]]] = [
    ("no referral_to_care purpose", {"purposes": ["care_team_sharing"]}),
    ("no categories", {"categories": []}),
    ("no recipients", {"recipients": []}),
    ("no disclosers", {"disclosers": []}),
    ("right to revoke not explained", {"right_to_revoke_explained": False}),
    ("no expiry", {"valid_until": None}),
    ("expiry in the past", {"valid_until": "2020-01-01T00:00:00+00:00"}),
    ("bad evidence hash", {"evidence_hash": "md5:1234"}),
    ("unknown category", {"categories": ["horoscope"]}),
]


@pytest.mark.parametrize(
    ("case", "override"), INCOMPLETE_CONSENTS, ids=[c[0] for c in INCOMPLETE_CONSENTS]
)
async def test_incomplete_consent_is_refused(
    referral: Journey, engine: Engine, case: str, override: dict[str, Any]
) -> None:
    before = _counts(engine)
    resp = await referral.api.post(
        f"/api/v1/referrals/{referral.id}/consent",
        json=consent_body(**override),
        headers=referral.headers(OFFICE),
    )
    _assert_problem(resp, 422)
    assert _counts(engine) == before
    assert (await referral.view())["stage"] == "awaiting_consent"


def _forged_tokens(minter: TokenMinter) -> dict[str, str]:
    now = int(time.time())
    good = minter.mint(*OFFICE)
    header, payload, signature = good.split(".")
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = minter.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    claims = {
        "iss": "http://127.0.0.1/realms/referral-test",
        "aud": "referral-api",
        "sub": "x",
        "iat": now,
        "exp": now + 600,
        "realm_access": {"roles": ["prosecutor"]},
        "organization": {"parket-antwerpen": {"sector": ["justice"]}},
    }
    import base64
    import json

    def b64(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return {
        "garbage": "not.a.token",
        "expired": minter.mint(*OFFICE, exp=now - 3600, iat=now - 7200),
        "wrong audience": minter.mint(*OFFICE, aud="another-api"),
        "wrong issuer": minter.mint(*OFFICE, iss="https://evil.example/realms/referral"),
        "alg none": f"{b64({'alg': 'none', 'typ': 'JWT', 'kid': minter.kid})}.{payload}.",
        "hs256 with public key": _hs256(claims, public_pem, minter.kid),
        "other key same kid": jwt.encode(
            claims, other_key, algorithm="RS256", headers={"kid": minter.kid}
        ),
        "tampered payload": f"{header}.{b64({**claims, 'sub': 'someone-else'})}.{signature}",
        "no organisation": minter.mint(*OFFICE, organization={}),
        "unknown sector": minter.mint(*OFFICE, sector="astrology"),
        "no subject": minter.mint(*OFFICE, sub=""),
    }


def _hs256(claims: dict[str, Any], secret: bytes, kid: str) -> str:
    """An HS256 token keyed with the public key: the classic algorithm-confusion forgery."""
    import base64
    import hashlib
    import hmac
    import json

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = (
        b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
        + "."
        + b64(json.dumps(claims).encode())
    )
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


async def test_missing_expired_and_forged_tokens_get_401(
    api: httpx.AsyncClient, minter: TokenMinter, engine: Engine
) -> None:
    before = _counts(engine)
    _assert_problem(await api.post("/api/v1/referrals", json=new_referral()), 401)
    basic = {"Authorization": "Basic dXNlcjpwYXNz"}
    _assert_problem(await api.get("/api/v1/referrals", headers=basic), 401)
    for name, token in _forged_tokens(minter).items():
        headers = {"Authorization": f"Bearer {token}"}
        resp = await api.post("/api/v1/referrals", json=new_referral(), headers=headers)
        _assert_problem(resp, 401)
        assert "Bearer" in resp.headers.get("www-authenticate", ""), name
        # the read checks its token in the thread that reads, not in a dependency
        resp = await api.get(f"/api/v1/referrals/{uuid.uuid4()}", headers=headers)
        _assert_problem(resp, 401)
        assert "Bearer" in resp.headers.get("www-authenticate", ""), name
    assert _counts(engine) == before


async def test_health_and_docs_need_no_token(api: httpx.AsyncClient) -> None:
    assert (await api.get("/healthz")).json() == {"status": "ok"}
    assert (await api.get("/openapi.json")).status_code == 200
    assert (await api.get("/docs")).status_code == 200
    ready = await api.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {
        "database": "ok",
        "temporal": "ok",
        "identity_provider": "ok",
    }
