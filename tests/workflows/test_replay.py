"""Stored histories of every release replay against the current workflow code: a change
that would break referrals still running on an older release fails here."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from sqlalchemy.pool import StaticPool
from sqlmodel import SQLModel, create_engine
from temporalio.api.common.v1 import Payload
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from services.crypto import (
    EncryptionCodec,
    FileKeyRing,
    ReferralPayloadKey,
    ReferralPayloadKeys,
    data_converter,
)
from workflows.referral import ReferralWorkflow

HERE = Path(__file__).parent / "histories"
HISTORIES = sorted(HERE.glob("*/*.json"))


def test_histories_are_stored() -> None:
    assert len(HISTORIES) >= 2


@pytest.mark.parametrize("path", HISTORIES, ids=lambda p: f"{p.parent.name}/{p.stem}")
async def test_history_replays(path: Path) -> None:
    replayer = Replayer(workflows=[ReferralWorkflow], data_converter=pydantic_data_converter)
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    await replayer.replay_workflow(history)


def _payloads(message: Message) -> list[Payload]:
    found: list[Payload] = []
    for descriptor, value in message.ListFields():
        if (
            descriptor.type != FieldDescriptor.TYPE_MESSAGE
            or descriptor.name == "search_attributes"
        ):
            continue
        if isinstance(value, Message):
            items = [value]
        elif descriptor.message_type.GetOptions().map_entry:
            items = [v for v in value.values() if isinstance(v, Message)]
        else:
            items = list(value)
        for item in items:
            found.extend([item] if isinstance(item, Payload) else _payloads(item))
    return found


LATEST = sorted(p for p in HISTORIES if p.parent == HISTORIES[-1].parent)


@pytest.mark.parametrize("path", LATEST, ids=lambda p: f"{p.parent.name}/{p.stem}")
async def test_history_sealed_with_the_shared_key_replays_with_referral_keys(
    path: Path, tmp_path: Path
) -> None:
    """Histories written before referrals had keys of their own (every payload sealed with
    the key ring's shared payload key) still decode and replay with the current converter."""
    keyring = FileKeyRing.create(tmp_path / "keyring.json")
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    old_codec = EncryptionCodec(keyring)  # no referral keys: how release 2 sealed them
    sealed = 0
    for event in history.events:
        if event.HasField("marker_recorded_event_attributes"):
            continue  # patch markers are read by the SDK's core, never through the codec
        for payload in _payloads(event):
            [encrypted] = await old_codec.encode([payload])
            payload.CopyFrom(encrypted)
            sealed += 1
    assert sealed > 0
    engine = create_engine("sqlite://", poolclass=StaticPool)
    SQLModel.metadata.create_all(engine, tables=[ReferralPayloadKey.__table__])  # type: ignore[attr-defined]
    try:
        converter = data_converter(keyring, ReferralPayloadKeys(engine, keyring))
        replayer = Replayer(workflows=[ReferralWorkflow], data_converter=converter)
        await replayer.replay_workflow(history)
    finally:
        engine.dispose()
