"""Record workflow histories for the replay test, one per path of the lifecycle:

    python -m tests.workflows.record_histories release-3 [scenario ...]

writes `tests/workflows/histories/<release>/<scenario>.json`. Histories of a release that
is (or was) deployed are never re-recorded: the Replayer test keeps replaying them against
the current code, so a change that would break referrals still running on that release
fails CI. A change to the workflow is gated with `workflow.patched`, and its own paths are
recorded as a new release.

The `race_*` scenarios hold one step inside its activity (tests/workflows/gates.py) while a
second step arrives, so the history holds two interleaved Updates as a real race would.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError, WorkflowUpdateStage
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from services.db import make_engine, migrate, session_scope
from services.demo import load_demo
from services.lifecycle import CancelInput, Outcome, Snapshot, Stage
from services.runtime import Runtime
from services.settings import Settings
from tests import factories as f
from tests.workflows.gates import GatedActivities, Gates
from workflows.binaries import SERVER_STARTUP_TIMEOUT, temporal_binary
from workflows.referral import ReferralWorkflow, workflow_id

HERE = Path(__file__).parent / "histories"
DAY = timedelta(days=1)

Handle = WorkflowHandle[ReferralWorkflow, Snapshot]


@dataclass
class Recorder:
    env: WorkflowEnvironment
    engine: Engine
    queue: str
    gates: Gates

    async def start(self, **timings: int) -> Handle:
        rid = f.referral_row(self.engine)
        return await self.env.client.start_workflow(
            ReferralWorkflow.run,
            f.workflow_input(rid, **timings),
            id=workflow_id(rid),
            task_queue=self.queue,
        )

    async def until(self, handle: Handle, stage: Stage) -> Snapshot:
        for _ in range(100):
            snap = await handle.query(ReferralWorkflow.status)
            if snap.stage is stage:
                return snap
            await self.env.sleep(timedelta(seconds=1))
        raise AssertionError(f"never reached {stage}: {snap.stage}")

    async def skip(self, duration: timedelta) -> None:
        while duration > timedelta(0):
            step = min(duration, 2 * DAY)
            await self.env.sleep(step)
            duration -= step

    async def to_offered(self, handle: Handle, **consent: Any) -> None:
        await handle.execute_update(ReferralWorkflow.record_consent, f.consent(**consent))
        await self.until(handle, Stage.OFFERED)

    async def decide_and_purge(self, handle: Handle) -> None:
        await self.until(handle, Stage.OUTCOME_REPORTED)
        await handle.execute_update(ReferralWorkflow.decide, f.decision())
        await handle.result()

    async def race(
        self,
        handle: Handle,
        hold: tuple[str, str | None],
        first: Callable[[], Awaitable[Any]],
        second: Any,
        second_input: Any,
    ) -> None:
        """`first` is held inside its activity `hold` while the Update `second` is admitted."""
        rid = uuid.UUID(handle.id.removeprefix("referral-"))
        gate = self.gates.hold(rid, *hold)
        first_task = asyncio.ensure_future(first())
        await gate.wait_entered()
        waiting = await handle.start_update(
            second, second_input, wait_for_stage=WorkflowUpdateStage.ACCEPTED
        )
        gate.open()
        await first_task
        try:
            await waiting.result()
        except WorkflowUpdateFailedError:
            pass  # a step that lost the race is refused (from release 2 on)


async def lifecycle_purged(r: Recorder) -> Handle:
    """The whole lifecycle to purged, with an SLA re-route on the way."""
    h = await r.start()
    await r.to_offered(h)
    await r.env.sleep(timedelta(days=5, hours=1))
    await r.until(h, Stage.OFFERED)
    await h.execute_update(ReferralWorkflow.accept, f.accept(f.FREE_CLINIC))
    await h.execute_update(ReferralWorkflow.record_intake, f.intake(f.FREE_CLINIC))
    await r.env.sleep(timedelta(days=31))
    await h.execute_update(ReferralWorkflow.report_progress, f.progress(f.FREE_CLINIC))
    await h.execute_update(ReferralWorkflow.close, f.close(f.FREE_CLINIC))
    await r.decide_and_purge(h)
    return h


async def withdrawn_purged(r: Recorder) -> Handle:
    """Consent withdrawn during care, then decision and purge."""
    h = await r.start()
    await r.to_offered(h)
    await h.execute_update(ReferralWorkflow.accept, f.accept(f.CGG))
    await h.execute_update(ReferralWorkflow.withdraw_consent, f.withdraw(f.CGG))
    await r.decide_and_purge(h)
    return h


async def declined_on_hold_rematch(r: Recorder) -> Handle:
    """Both providers decline, on hold, the office asks again, care fails, decision."""
    h = await r.start()
    await r.to_offered(h)
    await h.execute_update(ReferralWorkflow.decline, f.decline(f.CGG))
    await r.until(h, Stage.OFFERED)
    await h.execute_update(ReferralWorkflow.decline, f.decline(f.FREE_CLINIC))
    await r.until(h, Stage.ON_HOLD)
    await h.execute_update(ReferralWorkflow.rematch, f.rematch())
    await r.until(h, Stage.OFFERED)
    await h.execute_update(ReferralWorkflow.accept, f.accept(f.CGG))
    await h.execute_update(ReferralWorkflow.record_intake, f.intake(f.CGG))
    await h.execute_update(ReferralWorkflow.close, f.close(f.CGG, Outcome.FAILED))
    await r.decide_and_purge(h)
    return h


async def offers_expired_on_hold_cancelled(r: Recorder) -> Handle:
    """Reminder, expiry and re-route, expiry again, on hold, then the office cancels."""
    h = await r.start()
    await r.to_offered(h)
    await r.skip(3 * DAY + timedelta(hours=1))
    await r.skip(2 * DAY)
    await r.until(h, Stage.OFFERED)
    await r.skip(6 * DAY)
    await r.until(h, Stage.ON_HOLD)
    await h.execute_update(ReferralWorkflow.cancel, CancelInput(actor=f.OFFICE))
    await r.decide_and_purge(h)
    return h


async def cancelled_awaiting_consent(r: Recorder) -> Handle:
    h = await r.start()
    await r.until(h, Stage.AWAITING_CONSENT)
    await h.execute_update(ReferralWorkflow.cancel, CancelInput(actor=f.OFFICE))
    await r.decide_and_purge(h)
    return h


async def cancelled_offered(r: Recorder) -> Handle:
    h = await r.start()
    await r.to_offered(h)
    await h.execute_update(ReferralWorkflow.cancel, CancelInput(actor=f.OFFICE))
    await r.decide_and_purge(h)
    return h


async def consent_deadline_decision_reminder(r: Recorder) -> Handle:
    """No consent in time: back to justice; the decision is late and reminded."""
    h = await r.start()
    await r.until(h, Stage.AWAITING_CONSENT)
    await r.skip(15 * DAY)
    await r.until(h, Stage.OUTCOME_REPORTED)
    await r.skip(31 * DAY)
    await r.decide_and_purge(h)
    return h


async def consent_refused(r: Recorder) -> Handle:
    h = await r.start()
    await r.until(h, Stage.AWAITING_CONSENT)
    await h.execute_update(ReferralWorkflow.record_consent, f.consent(given=False))
    await r.decide_and_purge(h)
    return h


async def consent_expired(r: Recorder) -> Handle:
    """The consent's validity ends during the accepted stage."""
    h = await r.start()
    now = max(datetime.now(UTC), await r.env.get_current_time())
    await r.to_offered(h, valid_until=now + 10 * DAY)
    await h.execute_update(ReferralWorkflow.accept, f.accept(f.CGG))
    await r.skip(11 * DAY)
    await r.decide_and_purge(h)
    return h


async def progress_missed_amended_withdrawn(r: Recorder) -> Handle:
    """No reporting consent; a missed report; the consent is amended, then withdrawn."""
    h = await r.start()
    await r.to_offered(h, reporting=False)
    await h.execute_update(ReferralWorkflow.accept, f.accept(f.CGG))
    await h.execute_update(ReferralWorkflow.record_intake, f.intake(f.CGG))
    await r.skip(31 * DAY)
    await h.execute_update(ReferralWorkflow.report_progress, f.progress(f.CGG, attending=False))
    await h.execute_update(ReferralWorkflow.record_consent, f.consent())
    await h.execute_update(ReferralWorkflow.withdraw_consent, f.withdraw(f.OFFICE))
    await r.decide_and_purge(h)
    return h


async def race_withdrawal_then_intake(r: Recorder) -> Handle:
    """An intake validated while a withdrawal is in flight (release 1 revives the referral)."""
    h = await r.start()
    await r.to_offered(h)
    await h.execute_update(ReferralWorkflow.accept, f.accept(f.CGG))
    await r.race(
        h,
        ("withdraw_consent", None),
        lambda: h.execute_update(ReferralWorkflow.withdraw_consent, f.withdraw(f.OFFICE)),
        ReferralWorkflow.record_intake,
        f.intake(f.CGG),
    )
    if (await h.query(ReferralWorkflow.status)).stage is Stage.IN_PROGRESS:
        await h.execute_update(ReferralWorkflow.close, f.close(f.CGG))
    await r.decide_and_purge(h)
    return h


async def race_withdrawal_then_consent(r: Recorder) -> Handle:
    """A consent amendment validated while a withdrawal is in flight."""
    h = await r.start()
    await r.to_offered(h)
    await h.execute_update(ReferralWorkflow.accept, f.accept(f.CGG))
    await r.race(
        h,
        ("withdraw_consent", None),
        lambda: h.execute_update(ReferralWorkflow.withdraw_consent, f.withdraw(f.OFFICE)),
        ReferralWorkflow.record_consent,
        f.consent(),
    )
    await r.decide_and_purge(h)
    return h


async def race_withdrawal_then_progress(r: Recorder) -> Handle:
    """A progress report validated while a withdrawal is in flight."""
    h = await r.start()
    await r.to_offered(h)
    await h.execute_update(ReferralWorkflow.accept, f.accept(f.CGG))
    await h.execute_update(ReferralWorkflow.record_intake, f.intake(f.CGG))
    await r.race(
        h,
        ("withdraw_consent", None),
        lambda: h.execute_update(ReferralWorkflow.withdraw_consent, f.withdraw(f.CGG)),
        ReferralWorkflow.report_progress,
        f.progress(f.CGG),
    )
    await r.decide_and_purge(h)
    return h


async def cancelled_in_progress(r: Recorder) -> Handle:
    """From release 2 the office may cancel during care too."""
    h = await r.start()
    await r.to_offered(h)
    await h.execute_update(ReferralWorkflow.accept, f.accept(f.CGG))
    await h.execute_update(ReferralWorkflow.record_intake, f.intake(f.CGG))
    await h.execute_update(ReferralWorkflow.cancel, CancelInput(actor=f.OFFICE))
    await r.decide_and_purge(h)
    return h


async def race_offer_expiry_then_decline(r: Recorder) -> Handle:
    """A decline validated while the offer expires (release 1 failed its workflow task)."""
    h = await r.start()
    await r.to_offered(h)
    await r.race(
        h,
        ("notify", "offer_expired"),
        lambda: r.env.sleep(timedelta(days=5, hours=1)),
        ReferralWorkflow.decline,
        f.decline(f.CGG),
    )
    await r.until(h, Stage.OFFERED)
    await h.execute_update(ReferralWorkflow.cancel, CancelInput(actor=f.OFFICE))
    await r.decide_and_purge(h)
    return h


# ---- release 3: a deadline on every open state, two retention clocks -------------------


async def nobody_acts_purged(r: Recorder) -> Handle:
    """No consent, no decision: back to justice, two reminders, closed, shredded, purged."""
    h = await r.start()
    await r.until(h, Stage.AWAITING_CONSENT)
    await h.result()
    return h


async def intake_deadline_purged(r: Recorder) -> Handle:
    h = await r.start()
    await r.to_offered(h)
    await h.execute_update(ReferralWorkflow.accept, f.accept(f.CGG))
    await h.result()
    return h


async def on_hold_limit_purged(r: Recorder) -> Handle:
    h = await r.start()
    await r.to_offered(h)
    await h.execute_update(ReferralWorkflow.decline, f.decline(f.CGG))
    await r.until(h, Stage.OFFERED)
    await h.execute_update(ReferralWorkflow.decline, f.decline(f.FREE_CLINIC))
    await r.until(h, Stage.ON_HOLD)
    await h.result()
    return h


async def reports_missed_purged(r: Recorder) -> Handle:
    """One report, then three missed in a row: the case goes back to justice."""
    h = await r.start()
    await r.to_offered(h)
    await h.execute_update(ReferralWorkflow.accept, f.accept(f.CGG))
    await h.execute_update(ReferralWorkflow.record_intake, f.intake(f.CGG))
    await r.env.sleep(timedelta(days=31))
    await h.execute_update(ReferralWorkflow.report_progress, f.progress(f.CGG))
    await h.result()
    return h


async def two_clocks_purged(r: Recorder) -> Handle:
    """Decided: care notes shredded after the care period, the rest after the justice one."""
    h = await r.start(retention_justice=1825 * 86400)
    await r.to_offered(h)
    await h.execute_update(ReferralWorkflow.accept, f.accept(f.CGG))
    await h.execute_update(ReferralWorkflow.record_intake, f.intake(f.CGG))
    await h.execute_update(ReferralWorkflow.close, f.close(f.CGG))
    await r.decide_and_purge(h)
    return h


SCENARIOS: dict[str, Callable[[Recorder], Awaitable[Handle]]] = {
    fn.__name__: fn
    for fn in (
        lifecycle_purged,
        withdrawn_purged,
        declined_on_hold_rematch,
        offers_expired_on_hold_cancelled,
        cancelled_awaiting_consent,
        cancelled_offered,
        consent_deadline_decision_reminder,
        consent_refused,
        consent_expired,
        progress_missed_amended_withdrawn,
        race_withdrawal_then_intake,
        race_withdrawal_then_consent,
        race_withdrawal_then_progress,
        cancelled_in_progress,
        race_offer_expiry_then_decline,
        nobody_acts_purged,
        intake_deadline_purged,
        on_hold_limit_purged,
        reports_missed_purged,
        two_clocks_purged,
    )
}


async def main(release: str, names: list[str]) -> None:
    out = HERE / release
    out.mkdir(parents=True, exist_ok=True)
    state = Path("/tmp") / f"record-{uuid.uuid4()}"
    state.mkdir()
    db = state / "record.db"
    url = f"sqlite:///{db}"
    migrate(url)
    engine = make_engine(url)
    with session_scope(engine) as session:
        load_demo(session=session)
    # the real vault and audit log: the purges recorded are real purges
    runtime = Runtime.build(
        Settings(
            environment="test",
            data_dir=state,
            database_url=url,
            keyring_path=state / "keyring.json",
            demo_users_enabled=False,
        ),
        engine=engine,
    )
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=temporal_binary("temporal-test-server"),
        test_server_startup_timeout=SERVER_STARTUP_TIMEOUT,
        data_converter=pydantic_data_converter,
    )
    queue = f"record-{uuid.uuid4()}"
    gates = Gates()
    activities = GatedActivities(
        engine=engine, shredder=runtime.vault, gatekeeper=runtime.gatekeeper, gates=gates
    )
    with ThreadPoolExecutor(16) as executor:
        async with Worker(
            env.client,
            task_queue=queue,
            workflows=[ReferralWorkflow],
            activities=activities.all(),
            activity_executor=executor,
            max_concurrent_activities=16,
        ):
            recorder = Recorder(env=env, engine=engine, queue=queue, gates=gates)
            for name in names or list(SCENARIOS):
                handle = await SCENARIOS[name](recorder)
                history = await handle.fetch_history()
                (out / f"{name}.json").write_text(history.to_json())
                print(f"{release}/{name}: {len(history.events)} events", flush=True)  # noqa: T201
    await env.shutdown()
    runtime.close()
    shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    asyncio.run(main(sys.argv[1], sys.argv[2:]))
