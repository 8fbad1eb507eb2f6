"""After full lifecycles with known personal values, none of them appears anywhere but in
the encrypted record: database files or dumps, Temporal histories (fetched without the
codec), the Temporal server's database file, logs and spans. And the codec endpoint only
decodes for administrators."""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, inspect, text
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from services import telemetry
from services.settings import Settings
from tests.integration.journey import (
    CGG,
    CLINICAL_NOTE,
    NOTE,
    OFFICE,
    PERSON,
    PHONE,
    WELFARE_NOTE,
    Journey,
)
from tests.sqlite_files import database_files
from tests.tokens import TokenMinter

SECRETS = [
    PERSON["name"],
    PERSON["national_number"],
    "91041712345",
    PHONE,
    "Teststraat 1",
    NOTE,
    CLINICAL_NOTE,
    WELFARE_NOTE,
    "AN.12.L1.000042-26",
]


def _leaks(blob: bytes | str) -> list[str]:
    data = blob.encode() if isinstance(blob, str) else blob
    return [s for s in SECRETS if s.encode() in data]


def _database_text(engine: Engine, database_url: str) -> bytes:
    if database_url.startswith("sqlite"):
        path = Path(database_url.split("///", 1)[1])
        return database_files(path)
    pg_dump = shutil.which("pg_dump")
    if pg_dump:
        url = database_url.replace("+psycopg", "")
        return subprocess.run([pg_dump, "--data-only", url], capture_output=True, check=True).stdout
    chunks = []
    with engine.connect() as conn:
        for table in inspect(conn).get_table_names():
            for row in conn.execute(text(f'SELECT * FROM "{table}"')):
                chunks.append(repr(tuple(row)))
    return "\n".join(chunks).encode()


async def test_no_personal_value_in_clear_anywhere(
    api: httpx.AsyncClient,
    minter: TokenMinter,
    engine: Engine,
    settings: Settings,
    dev_server: WorkflowEnvironment,
    integration_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    journeys = []
    for outcome in ("completed", "failed"):
        j = Journey(api, minter)
        await j.to_in_progress()
        await j.step(
            CGG,
            "progress",
            {
                "attendance": "attending",
                "clinical_note": CLINICAL_NOTE,
                "welfare_note": WELFARE_NOTE,
            },
        )
        await j.step(CGG, "close", {"outcome": outcome})
        await j.wait_stage("outcome_reported")
        await j.step(OFFICE, "decision", {"decision": "dismissed"})
        journeys.append(j)
    # the record itself does hold them, for those entitled (this proves the search works)
    assert PERSON["name"] in str(await journeys[0].view(OFFICE))

    assert _leaks(_database_text(engine, settings.database_url)) == []

    target = dev_server.client.service_client.config.target_host
    raw = await Client.connect(target)  # no codec: what the Temporal server and UI hold
    for j in journeys:
        history = await raw.get_workflow_handle(f"referral-{j.id}").fetch_history()
        as_json = history.to_json()
        assert _leaks(as_json) == []
        assert "binary/encrypted" in as_json or "YmluYXJ5L2VuY3J5cHRlZA" in as_json

    temporal_files = database_files(integration_dir / "temporal.db")
    assert temporal_files, "the dev server's database file exists"
    assert _leaks(temporal_files) == []

    assert _leaks("\n".join(r.getMessage() for r in caplog.records)) == []
    exporter = telemetry.memory_exporter
    assert exporter is not None
    spans = str(
        [(s.name, dict(s.attributes or {}), s.events) for s in exporter.get_finished_spans()]
    )
    assert _leaks(spans) == []


async def test_codec_endpoint_decodes_for_administrators_only(
    api: httpx.AsyncClient, minter: TokenMinter, dev_server: WorkflowEnvironment
) -> None:
    j = Journey(api, minter)
    await j.create()
    raw = await Client.connect(dev_server.client.service_client.config.target_host)
    history = await raw.get_workflow_handle(f"referral-{j.id}").fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    from google.protobuf import json_format

    payloads = json_format.MessageToDict(started.input)["payloads"]
    body = {"payloads": payloads}

    denied = await api.post("/codec/decode", json=body, headers=minter.headers(*OFFICE))
    assert denied.status_code == 403
    assert denied.headers["content-type"] == "application/problem+json"
    assert (await api.post("/codec/decode", json=body)).status_code == 401

    admin = minter.headers("parket-antwerpen", "admin")
    decoded = await api.post("/codec/decode", json=body, headers=admin)
    assert decoded.status_code == 200, decoded.text
    import base64

    data = base64.b64decode(decoded.json()["payloads"][0]["data"])
    assert j.id is not None and j.id.encode() in data  # the workflow input, in clear for the admin

    again = await api.post("/codec/encode", json=decoded.json(), headers=admin)
    assert again.status_code == 200
    bad = await api.post("/codec/decode", json={"payloads": [{"data": 5}]}, headers=admin)
    assert bad.status_code == 422
