"""The worker's reconciler: every referral stored with a pending start intent gets its
workflow, so a create that crashed after its commit still ends in a running referral."""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import timedelta

from sqlalchemy import Engine
from sqlmodel import Session
from temporalio.client import Client
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from services import referrals, start_intents, unlinking
from services.lifecycle import ReferralWorkflowInput
from services.models import utcnow
from services.settings import Settings
from workflows.referral import ReferralWorkflow, workflow_id

logger = logging.getLogger(__name__)


async def start_referral(
    *, client: Client, engine: Engine, task_queue: str, inp: ReferralWorkflowInput
) -> None:
    """Start the referral's workflow once, ever (a retry or a second starter changes
    nothing), then mark its start intent done."""
    try:
        await client.start_workflow(
            ReferralWorkflow.run,
            inp,
            id=workflow_id(inp.referral_id),
            task_queue=task_queue,
            # never a second run for one referral, not even after the first one closed
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        )
    except WorkflowAlreadyStartedError:
        pass
    await asyncio.to_thread(_mark_started, engine, inp.referral_id)


def _mark_started(engine: Engine, referral_id: uuid.UUID) -> None:
    with Session(engine) as session:
        start_intents.mark_started(session=session, referral_id=referral_id)
        session.commit()


def _pending(engine: Engine, settings: Settings, grace: timedelta) -> list[ReferralWorkflowInput]:
    with Session(engine) as session:
        ids = start_intents.pending_starts(session=session, older_than=utcnow() - grace)
        return [
            referrals.workflow_input(
                session=session,
                referral=referrals.get(session=session, referral_id=rid),
                settings=settings,
            )
            for rid in ids
        ]


async def start_pending(
    *, client: Client, engine: Engine, settings: Settings, grace: timedelta | None = None
) -> int:
    """Start every workflow whose intent is older than `grace` and still pending."""
    if grace is None:
        # the API starts its own workflows at once; only the ones it lost are ours
        grace = timedelta(seconds=settings.reconcile_every_seconds)
    inputs = await asyncio.to_thread(_pending, engine, settings, grace)
    for inp in inputs:
        await start_referral(
            client=client, engine=engine, task_queue=settings.temporal_task_queue, inp=inp
        )
    if inputs:
        logger.info("reconciler started %d pending workflow(s)", len(inputs))
    return len(inputs)


def forget_expired_fingerprints(engine: Engine, settings: Settings) -> int:
    """Delete the request fingerprints older than the idempotency time (keyed, and kept
    no longer than a retry needs them)."""
    with Session(engine) as session:
        count = unlinking.forget_expired(
            session=session,
            now=utcnow(),
            ttl=timedelta(seconds=settings.idempotency_ttl_seconds),
        )
        session.commit()
        return count


async def reconcile_until(
    stop: asyncio.Event, *, client: Client, engine: Engine, settings: Settings
) -> None:
    """Run `start_pending` (and forget expired request fingerprints) on the configured
    cadence until `stop` is set."""
    while not stop.is_set():
        try:
            await start_pending(client=client, engine=engine, settings=settings)
            await asyncio.to_thread(forget_expired_fingerprints, engine, settings)
        except Exception:  # noqa: BLE001 - Temporal or the database away: next round
            logger.warning("reconciler round failed; retrying", exc_info=True)
        try:
            await asyncio.wait_for(stop.wait(), timeout=settings.reconcile_every_seconds)
        except TimeoutError:
            pass
