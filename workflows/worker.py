"""The worker: runs ReferralWorkflow and its activities on the task queue from settings."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import Engine
from temporalio.client import Client
from temporalio.worker import Worker

from services.access import Gatekeeper
from services.crypto.payload_keys import ReferralPayloadKeys
from workflows.activities import ReferralActivities, Shredder
from workflows.code_cache import keep_compiled_modules
from workflows.referral import ReferralWorkflow


def build_worker(
    *,
    client: Client,
    task_queue: str,
    engine: Engine,
    shredder: Shredder,
    executor: ThreadPoolExecutor,
    gatekeeper: Gatekeeper,
    payload_keys: ReferralPayloadKeys | None = None,
) -> Worker:
    """A worker for the referral workflow; the caller owns the executor's lifetime. The
    gatekeeper records the justice channel's decisions and every shredding; the purge
    destroys a referral's Temporal payload key in `payload_keys`."""
    keep_compiled_modules()  # the sandbox imports the workflow's module for every run
    activities = ReferralActivities(
        engine=engine, shredder=shredder, gatekeeper=gatekeeper, payload_keys=payload_keys
    )
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[ReferralWorkflow],
        activities=activities.all(),
        activity_executor=executor,
        max_concurrent_activities=16,
    )
