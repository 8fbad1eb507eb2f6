"""`referral keys rotate-pseudonym-key` while the system runs: every stored pseudonym of a
live referral is re-derived under the new key, the old ones are gone from the database, and
lists, the DPO's person search and idempotent replays (create, consent) still work."""

from __future__ import annotations

import asyncio
import uuid
from datetime import date
from typing import Any

import httpx
import pytest
from sqlalchemy import or_
from sqlmodel import Session, col, func, select
from typer.testing import CliRunner

from api.cli import app
from services import person_report, pseudonym_rotation
from services.audit.models import AuditEntry
from services.crypto import PersonalDataVault, Pseudonymizer
from services.models import Consent, Referral
from services.runtime import Runtime
from services.settings import get_settings
from tests.integration.journey import AUDITOR, OFFICE, consent_body, new_referral
from tests.tokens import TokenMinter


def national_number(serial: int) -> str:
    """A valid national number of someone born on 17 April 1991, of this test alone."""
    base = f"910417{serial:03d}"
    return f"{base[:2]}.{base[2:4]}.{base[4:6]}-{base[6:]}.{97 - int(base) % 97:02d}"


PERSON = {
    "name": "Rotatie Testpersoon",
    "birth_date": "1991-04-17",
    "national_number": national_number(731),
}


async def _post(
    api: httpx.AsyncClient,
    minter: TokenMinter,
    party: tuple[str, str],
    path: str,
    body: Any,
    key: str,
    expect: int,
) -> dict[str, Any]:
    resp = await api.post(
        path, json=body, headers={**minter.headers(*party), "Idempotency-Key": key}
    )
    assert resp.status_code == expect, (resp.status_code, resp.text)
    return resp.json()  # type: ignore[no-any-return]


def _pseudonyms(runtime: Runtime, ids: list[str]) -> dict[str, tuple[str, str, str | None]]:
    with Session(runtime.engine) as session:
        rows = session.exec(select(Referral).where(col(Referral.id).in_(map(uuid.UUID, ids))))
        return {
            str(r.id): (r.subject_pseudonym, r.name_pseudonym, r.pseudonym_key_id) for r in rows
        }


def _consents(session: Session, referral_id: str) -> int:
    query = select(func.count()).select_from(Consent)
    return int(session.exec(query.where(Consent.referral_id == uuid.UUID(referral_id))).one())


async def test_rotating_the_pseudonym_key_keeps_everything_working(
    api: httpx.AsyncClient, minter: TokenMinter, runtime: Runtime, cli_env: None
) -> None:
    create_key, consent_key = f"rot-{uuid.uuid4()}", f"rot-{uuid.uuid4()}"
    body = new_referral(identity=dict(PERSON))
    first = await _post(api, minter, OFFICE, "/api/v1/referrals", body, create_key, 201)
    second = await _post(api, minter, OFFICE, "/api/v1/referrals", body, f"rot-{uuid.uuid4()}", 201)
    ids = [first["id"], second["id"]]
    consent = consent_body()
    consent_path = f"/api/v1/referrals/{first['id']}/consent"
    await _post(api, minter, OFFICE, consent_path, consent, consent_key, 200)
    # a read before the rotation: its entry names the referral by its audit pseudonym
    view = await api.get(f"/api/v1/referrals/{first['id']}", headers=minter.headers(*OFFICE))
    assert view.status_code == 200, view.text
    of_first = runtime.gatekeeper.pseudonym(uuid.UUID(first["id"]))
    old_id = runtime.keyring.current_pseudonym_key_id()
    before = _pseudonyms(runtime, ids)
    old_values = {v for subject, name, _ in before.values() for v in (subject, name)}
    assert len(old_values) == 2  # one person: one pair of pseudonyms

    result = CliRunner().invoke(app, ["keys", "rotate-pseudonym-key", "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    await asyncio.sleep(1.1)  # the running process rereads the key ring within a second
    new_id = runtime.keyring.current_pseudonym_key_id()
    assert new_id != old_id and new_id in result.output

    # every stored pseudonym re-derived under the new key; the old ones are gone
    fresh = Pseudonymizer(runtime.keyring.pseudonym_key(), new_id)
    expected = (
        fresh.national_number(PERSON["national_number"]),
        fresh.name_and_birth_date(PERSON["name"], date(1991, 4, 17)),
        new_id,
    )
    assert _pseudonyms(runtime, ids) == dict.fromkeys(ids, expected)
    with Session(runtime.engine) as session:
        left = session.exec(
            select(func.count())
            .select_from(Referral)
            .where(
                or_(
                    col(Referral.subject_pseudonym).in_(old_values),
                    col(Referral.name_pseudonym).in_(old_values),
                )
            )
        ).one()
        assert left == 0
        behind = session.exec(
            select(func.count())
            .select_from(Referral)
            .where(col(Referral.subject_pseudonym) != "", col(Referral.pseudonym_key_id) != new_id)
        ).one()
        assert behind == 0
        # the rotation is one audit entry, naming no referral, person or key
        [entry] = session.exec(
            select(AuditEntry).where(AuditEntry.action == "keys.pseudonym.rederive")
        ).all()[-1:]
        assert entry.outcome == "success" and entry.actor_subject.startswith("os:")
        assert entry.referral_pseudonym is None and entry.person_pseudonym is None
        consents_before = _consents(session, first["id"])
    # the command signed the shared log with the deployment's audit key, not one of its own
    runtime.audit.sign_tree_head()
    verified = runtime.audit.verify()
    assert verified.ok, verified.reason

    # the same create, and the same consent, again: the first answers, nothing new
    again = await _post(api, minter, OFFICE, "/api/v1/referrals", body, create_key, 200)
    assert again["id"] == first["id"]
    changed = new_referral(identity={**PERSON, "name": "Iemand Anders"})
    await _post(api, minter, OFFICE, "/api/v1/referrals", changed, create_key, 422)
    await _post(api, minter, OFFICE, consent_path, consent, consent_key, 200)
    with Session(runtime.engine) as session:
        assert _consents(session, first["id"]) == consents_before

    # a new referral of the same person gets the new pseudonyms: still one person
    third = await _post(api, minter, OFFICE, "/api/v1/referrals", body, f"rot-{uuid.uuid4()}", 201)
    ids.append(third["id"])
    assert _pseudonyms(runtime, [third["id"]]) == {third["id"]: expected}

    # lists still hold them
    listed = await api.get(
        "/api/v1/referrals", params={"limit": 100}, headers=minter.headers(*OFFICE)
    )
    assert listed.status_code == 200, listed.text
    assert set(ids) <= {item["id"] for item in listed.json()["items"]}

    # the audit entries' pseudonyms never rotate: a process started after the rotation names
    # the referral as before, and finds the person under the new pseudonym key
    restarted = Runtime.build(get_settings())
    try:
        assert restarted.gatekeeper.pseudonym(uuid.UUID(first["id"])) == of_first
        assert restarted.pseudonymizer.national_number(PERSON["national_number"]) == expected[0]
    finally:
        restarted.close()

    # the DPO finds the person by national number: every referral, the entries from before
    # the rotation and after
    view = await api.get(f"/api/v1/referrals/{first['id']}", headers=minter.headers(*OFFICE))
    assert view.status_code == 200, view.text
    with Session(runtime.engine) as session:
        entries = person_report.entries_of_national_number(
            session=session,
            national_number=PERSON["national_number"],
            pseudonymizers=runtime.pseudonymizers(),
            gatekeeper=runtime.gatekeeper,
        )
    referrals = {runtime.gatekeeper.pseudonym(uuid.UUID(rid)) for rid in ids}
    created = [e for e in entries if e.action == "referral.create" and e.outcome == "success"]
    assert {e.referral_pseudonym for e in created} == referrals
    reads = [e for e in entries if e.action == "referral.read" and e.referral_pseudonym == of_first]
    assert len(reads) >= 2  # the read before the rotation, and the one after
    report = await api.post(
        "/api/v1/audit/person-access-report",
        json={"national_number": PERSON["national_number"], "lang": "en"},
        headers=minter.headers(*AUDITOR),
    )
    assert report.status_code == 200, report.text
    assert report.content.startswith(b"%PDF")

    # the old version is still needed (request and evidence fingerprints): refused
    refused = CliRunner().invoke(app, ["keys", "retire-pseudonym-key", old_id])
    assert refused.exit_code == 1, refused.output
    assert old_id in {k for k, _ in runtime.keyring.pseudonym_keys()}

    # run again: nothing left to do, and still one entry per run
    result = CliRunner().invoke(app, ["keys", "rotate-pseudonym-key", "--resume"])
    assert result.exit_code == 0, result.output
    assert "of 0 referrals" in result.output
    assert runtime.keyring.current_pseudonym_key_id() == new_id


class _Interrupted(Exception):
    pass


class _FailingVault:
    """Opens `allowed` identities, then fails as a crashed run would."""

    def __init__(self, vault: PersonalDataVault, allowed: int) -> None:
        self._vault = vault
        self._allowed = allowed

    def open_record(self, **kwargs: Any) -> dict[str, str]:
        if self._allowed == 0:
            raise _Interrupted
        self._allowed -= 1
        return self._vault.open_record(**kwargs)


async def test_an_interrupted_rederivation_finishes_when_run_again(
    api: httpx.AsyncClient, minter: TokenMinter, runtime: Runtime
) -> None:
    body = new_referral(identity={**PERSON, "national_number": national_number(732)})
    made = [
        await _post(api, minter, OFFICE, "/api/v1/referrals", body, f"rot-{uuid.uuid4()}", 201)
        for _ in range(3)
    ]
    new_id = runtime.keyring.rotate_pseudonym_key()

    def found() -> set[str | None]:
        with Session(runtime.engine) as session:
            entries = person_report.entries_of_national_number(
                session=session,
                national_number=national_number(732),
                pseudonymizers=runtime.pseudonymizers(),
                gatekeeper=runtime.gatekeeper,
            )
        return {e.referral_pseudonym for e in entries if e.action == "referral.create"}

    referrals = {runtime.gatekeeper.pseudonym(uuid.UUID(r["id"])) for r in made}
    # before the re-derivation, the DPO still finds the person (under the old version)
    assert found() == referrals

    def behind() -> int:
        with Session(runtime.engine) as session:
            return int(
                session.exec(
                    select(func.count())
                    .select_from(Referral)
                    .where(
                        col(Referral.subject_pseudonym) != "",
                        or_(
                            col(Referral.pseudonym_key_id).is_(None),
                            col(Referral.pseudonym_key_id) != new_id,
                        ),
                    )
                ).one()
            )

    waiting = behind()
    assert waiting >= 3
    with Session(runtime.engine) as session, pytest.raises(_Interrupted):
        pseudonym_rotation.rederive(
            session=session,
            vault=_FailingVault(runtime.vault, 2),  # type: ignore[arg-type]
            keyring=runtime.keyring,
            batch_size=2,
        )
    # the first batch committed, the rest is still to do
    assert behind() == waiting - 2
    with Session(runtime.engine) as session:
        done = pseudonym_rotation.rederive(
            session=session, vault=runtime.vault, keyring=runtime.keyring, batch_size=2
        )
    assert done.rederived == waiting - 2 - done.unreadable
    assert behind() == done.unreadable
    with Session(runtime.engine) as session:
        again = pseudonym_rotation.rederive(
            session=session, vault=runtime.vault, keyring=runtime.keyring
        )
    assert again.rederived == 0
    assert found() == referrals
