"""Stored histories of every release replay against the current workflow code: a change
that would break referrals still running on an older release fails here."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

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
