"""The worker: runs ReferralWorkflow and its activities on the task queue from settings."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import Engine
from temporalio.client import Client
from temporalio.worker import Worker

from services.access import Gatekeeper
from workflows.activities import ReferralActivities, Shredder
from workflows.referral import ReferralWorkflow


def build_worker(
    *,
    client: Client,
    task_queue: str,
    engine: Engine,
    shredder: Shredder,
    executor: ThreadPoolExecutor,
    gatekeeper: Gatekeeper,
) -> Worker:
    """A worker for the referral workflow; the caller owns the executor's lifetime. The
    gatekeeper records the justice channel's decisions and every shredding."""
    activities = ReferralActivities(engine=engine, shredder=shredder, gatekeeper=gatekeeper)
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[ReferralWorkflow],
        activities=activities.all(),
        activity_executor=executor,
        max_concurrent_activities=16,
    )
