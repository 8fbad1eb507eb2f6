"""Record workflow histories for the replay test: `python -m tests.workflows.record_histories`.

Run it when the workflow changes in a way that is *meant* to be incompatible (and then
keep the old histories too, or gate the change with `workflow.patched`).
"""

from __future__ import annotations

import asyncio
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from services.db import make_engine, migrate, session_scope
from services.demo import load_demo
from services.lifecycle import Stage
from tests import factories as f
from workflows.binaries import temporal_binary
from workflows.referral import ReferralWorkflow, workflow_id
from workflows.worker import build_worker

HERE = Path(__file__).parent / "histories"


async def main() -> None:
    db = Path("/tmp") / f"record-{uuid.uuid4()}.db"
    url = f"sqlite:///{db}"
    migrate(url)
    engine = make_engine(url)
    with session_scope(engine) as session:
        load_demo(session=session)
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=temporal_binary("temporal-test-server"),
        data_converter=pydantic_data_converter,
    )
    queue = f"record-{uuid.uuid4()}"
    with ThreadPoolExecutor(16) as executor:
        async with build_worker(
            client=env.client, task_queue=queue, engine=engine, shredder=None, executor=executor
        ):

            async def start() -> object:
                rid = f.referral_row(engine)
                return await env.client.start_workflow(
                    ReferralWorkflow.run,
                    f.workflow_input(rid),
                    id=workflow_id(rid),
                    task_queue=queue,
                )

            async def until(handle: object, stage: Stage) -> None:
                for _ in range(100):
                    if (await handle.query(ReferralWorkflow.status)).stage is stage:  # type: ignore[attr-defined]
                        return
                    await env.sleep(timedelta(seconds=1))

            # 1. the whole lifecycle to purged, with an SLA re-route on the way
            h = await start()
            await h.execute_update(ReferralWorkflow.record_consent, f.consent())  # type: ignore[attr-defined]
            await until(h, Stage.OFFERED)
            await env.sleep(timedelta(days=5, hours=1))
            await until(h, Stage.OFFERED)
            await h.execute_update(ReferralWorkflow.accept, f.accept(f.FREE_CLINIC))  # type: ignore[attr-defined]
            await h.execute_update(ReferralWorkflow.record_intake, f.intake(f.FREE_CLINIC))  # type: ignore[attr-defined]
            await env.sleep(timedelta(days=31))
            await h.execute_update(ReferralWorkflow.report_progress, f.progress(f.FREE_CLINIC))  # type: ignore[attr-defined]
            await h.execute_update(ReferralWorkflow.close, f.close(f.FREE_CLINIC))  # type: ignore[attr-defined]
            await until(h, Stage.OUTCOME_REPORTED)
            await h.execute_update(ReferralWorkflow.decide, f.decision())  # type: ignore[attr-defined]
            await h.result()  # type: ignore[attr-defined]
            (HERE / "lifecycle_purged.json").write_text((await h.fetch_history()).to_json())  # type: ignore[attr-defined]

            # 2. consent withdrawn during care, then decision and purge
            h = await start()
            await h.execute_update(ReferralWorkflow.record_consent, f.consent())  # type: ignore[attr-defined]
            await until(h, Stage.OFFERED)
            await h.execute_update(ReferralWorkflow.accept, f.accept(f.CGG))  # type: ignore[attr-defined]
            await h.execute_update(ReferralWorkflow.withdraw_consent, f.withdraw(f.CGG))  # type: ignore[attr-defined]
            await until(h, Stage.OUTCOME_REPORTED)
            await h.execute_update(ReferralWorkflow.decide, f.decision())  # type: ignore[attr-defined]
            await h.result()  # type: ignore[attr-defined]
            (HERE / "withdrawn_purged.json").write_text((await h.fetch_history()).to_json())  # type: ignore[attr-defined]
    await env.shutdown()
    engine.dispose()
    db.unlink(missing_ok=True)


if __name__ == "__main__":
    asyncio.run(main())
