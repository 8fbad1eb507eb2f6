"""`referral keys rotate` and `referral keys rewrap` while the system runs: everything
stays readable, new data keys are wrapped under the new key-encryption key."""

from __future__ import annotations

import asyncio
import uuid

import httpx
from sqlmodel import Session, select
from typer.testing import CliRunner

from api.cli import app
from services.crypto import ReferralDataKey
from services.runtime import Runtime
from tests.integration.journey import OFFICE, PERSON, Journey
from tests.tokens import TokenMinter


async def test_rotate_then_rewrap_keeps_everything_readable(
    api: httpx.AsyncClient, minter: TokenMinter, runtime: Runtime, cli_env: None
) -> None:
    before = Journey(api, minter)
    await before.create()
    old_version = runtime.keyring.current_kek_version()

    result = CliRunner().invoke(app, ["keys", "rotate"])
    assert result.exit_code == 0, result.output
    await asyncio.sleep(1.1)  # the running process rereads the key ring within a second
    new_version = runtime.keyring.current_kek_version()
    assert new_version != old_version and new_version in result.output

    after = Journey(api, minter)
    await after.create()
    result = CliRunner().invoke(app, ["keys", "rewrap"])
    assert result.exit_code == 0, result.output

    with Session(runtime.engine) as session:
        for rid in (before.id, after.id):
            assert rid is not None
            key = session.exec(
                select(ReferralDataKey).where(ReferralDataKey.referral_id == uuid.UUID(rid))
            ).one()
            assert key.kek_version == new_version
    runtime.vault.forget_cached_keys()
    for j in (before, after):
        assert (await j.view(OFFICE))["content"]["identity"]["name"] == PERSON["name"]
