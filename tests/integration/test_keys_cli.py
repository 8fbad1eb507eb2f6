"""`referral keys rotate` and `referral keys rewrap` while the system runs: everything
stays readable, new data keys are wrapped under the new key-encryption key."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlmodel import Session, select
from typer.testing import CliRunner

from api.cli import app
from services.crypto import ReferralDataKey
from services.runtime import Runtime
from services.settings import Settings, get_settings
from tests.integration.journey import OFFICE, PERSON, Journey
from tests.tokens import TokenMinter


@pytest.fixture
def cli_env(settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.setenv("REFERRAL_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("REFERRAL_KEYRING_PATH", str(settings.keyring_path))
    monkeypatch.setenv("REFERRAL_DATA_DIR", str(settings.data_dir))  # not ./.data
    monkeypatch.setenv("REFERRAL_ENVIRONMENT", "test")
    get_settings.cache_clear()
    # from an empty directory: a command that fell back to ./.data (its own audit signing
    # key, signing the shared log with a key no one else knows) shows itself there
    monkeypatch.chdir(tmp_path)
    yield
    get_settings.cache_clear()
    assert not (tmp_path / ".data").exists(), "a command used ./.data, not the session's"


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
