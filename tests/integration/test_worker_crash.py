"""A worker killed in the middle of a referral: a new worker finishes it with no duplicate
offer, notification, justice message or status entry."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

from sqlalchemy import Engine
from sqlmodel import Session, select
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from services.lifecycle import Snapshot, Stage
from services.models import JusticeMessage, Notification, Offer, StatusHistory
from services.settings import Settings
from tests import factories as f
from workflows.referral import ReferralWorkflow, workflow_id


def _start_worker(
    settings: Settings, address: str, queue: str, log: Path
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "REFERRAL_ENVIRONMENT": "test",
        "REFERRAL_DATABASE_URL": settings.database_url,
        "REFERRAL_KEYRING_PATH": str(settings.keyring_path),
        "REFERRAL_TEMPORAL_ADDRESS": address,
        "REFERRAL_TEMPORAL_TASK_QUEUE": queue,
        "REFERRAL_OTEL_EXPORTER": "none",
    }
    referral = str(Path(sys.executable).parent / "referral")
    with log.open("ab") as out:  # the child keeps its own descriptor
        return subprocess.Popen([referral, "worker"], env=env, stdout=out, stderr=subprocess.STDOUT)


async def _update_events(handle: WorkflowHandle[ReferralWorkflow, Snapshot]) -> Counter[int]:
    events = (await handle.fetch_history()).events
    return Counter(
        e.event_type
        for e in events
        if e.event_type
        in (
            EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED,
            EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED,
        )
    )


async def _stop_mid_step(
    handle: WorkflowHandle[ReferralWorkflow, Snapshot],
    worker: subprocess.Popen[bytes],
    before: Counter[int],
) -> bool:
    """Freeze the worker (SIGSTOP) as soon as the workflow has accepted the new update, then
    say whether the step was still in flight, i.e. that update had not completed yet."""
    accepted = EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED
    completed = EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED
    for _ in range(2000):
        if (await _update_events(handle))[accepted] > before[accepted]:
            worker.send_signal(signal.SIGSTOP)
            return (await _update_events(handle))[completed] == before[completed]
        await asyncio.sleep(0.005)
    raise AssertionError("the worker never accepted the update")


async def test_killed_worker_is_replaced_without_duplicates(
    dev_server: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    tmp_path: Path,
) -> None:
    """The worker dies (SIGKILL) in the middle of the acceptance: after the workflow took the
    update, before the step completed. The test tries up to five referrals until the kill
    lands mid-step (a kill after the step would prove nothing) and fails if none did."""
    address = dev_server.client.service_client.config.target_host
    log = tmp_path / "worker.log"
    for _attempt in range(5):
        queue = f"crash-{uuid.uuid4()}"
        referral_id = f.referral_row(engine)
        handle = await dev_server.client.start_workflow(
            ReferralWorkflow.run,
            f.workflow_input(referral_id),
            id=workflow_id(referral_id),
            task_queue=queue,
        )
        first = _start_worker(settings, address, queue, log)
        try:
            await handle.execute_update(ReferralWorkflow.record_consent, f.consent())
            for _ in range(200):
                if (await handle.query(ReferralWorkflow.status)).stage is Stage.OFFERED:
                    break
                await asyncio.sleep(0.05)
            before = await _update_events(handle)
            accept = asyncio.create_task(
                handle.execute_update(ReferralWorkflow.accept, f.accept(f.CGG))
            )
            in_flight = await _stop_mid_step(handle, first, before)
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)
        finally:
            if first.poll() is None:
                first.kill()
        if in_flight:
            break
        await asyncio.wait_for(accept, timeout=60)  # it completed before the kill: again
        await handle.terminate("the kill came after the step; trying another referral")
    else:
        raise AssertionError("in five tries the worker was never killed in the middle of a step")
    second = _start_worker(settings, address, queue, log)
    try:
        snap = await asyncio.wait_for(accept, timeout=60)
        assert snap.stage is Stage.ACCEPTED
        await handle.execute_update(ReferralWorkflow.record_intake, f.intake(f.CGG))
        await handle.execute_update(ReferralWorkflow.report_progress, f.progress(f.CGG))
        await handle.execute_update(ReferralWorkflow.close, f.close(f.CGG))
        for _ in range(200):
            if (await handle.query(ReferralWorkflow.status)).stage is Stage.OUTCOME_REPORTED:
                break
            await asyncio.sleep(0.05)
        snap = await handle.execute_update(ReferralWorkflow.decide, f.decision())
        assert snap.stage is Stage.CLOSED
    finally:
        second.terminate()
        second.wait(timeout=20)
        await handle.terminate("test over")  # the retention timer would run for years

    with Session(engine) as s:
        offers = s.exec(select(Offer).where(Offer.referral_id == referral_id)).all()
        notes = s.exec(select(Notification).where(Notification.referral_id == referral_id)).all()
        facts = s.exec(
            select(JusticeMessage).where(JusticeMessage.referral_id == referral_id)
        ).all()
        history = s.exec(
            select(StatusHistory).where(StatusHistory.referral_id == referral_id)
        ).all()
    assert [o.provider for o in offers] == ["cgg-antwerpen"]
    assert Counter(n.kind for n in notes)["offer"] == 1
    assert sorted(m.fact for m in facts) == sorted(
        ["registered", "started", "attending", "completed"]
    )
    versions = sorted(h.version for h in history)
    assert versions == list(range(1, len(versions) + 1)), versions
    assert [h.stage for h in sorted(history, key=lambda h: h.version)][-1] == "closed"


async def test_a_started_worker_settles_its_start_up_heap(
    dev_server: WorkflowEnvironment, settings: Settings, tmp_path: Path
) -> None:
    """Once it runs, the worker's start-up objects leave the garbage collector's scans
    (`services.runtime.settle_heap`): a full collection no longer pauses it for each."""
    address = dev_server.client.service_client.config.target_host
    log = tmp_path / "worker.log"
    worker = _start_worker(settings, address, f"heap-{uuid.uuid4()}", log)
    try:
        settled = None
        for _ in range(600):
            found = re.search(
                r"worker running .* \((\d+) start-up objects settled\)", log.read_text()
            )
            if found:
                settled = int(found.group(1))
                break
            assert worker.poll() is None, log.read_text()[-3000:]
            await asyncio.sleep(0.05)
        assert settled is not None, log.read_text()[-3000:]
        # the modules, policies and keys of a worker: far more than a handful of objects
        assert settled > 50_000
    finally:
        worker.terminate()
        worker.wait(timeout=30)
