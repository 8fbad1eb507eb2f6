"""ReferralWorkflow on the time-skipping test server: every transition and timer path."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, col, select
from temporalio.client import (
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.testing import WorkflowEnvironment

from services.lifecycle import (
    CancelInput,
    ComplianceFact,
    NotificationKind,
    Outcome,
    Snapshot,
    Stage,
)
from services.models import JusticeMessage, Notification, Offer, Referral, StatusHistory
from tests import factories as f
from workflows.binaries import temporal_binary
from workflows.referral import ReferralWorkflow, workflow_id
from workflows.worker import build_worker

DAY = timedelta(days=1)
_STARTED: list[WorkflowHandle[ReferralWorkflow, Snapshot]] = []


@pytest.fixture
async def env(
    request: pytest.FixtureRequest,
    time_skipping_env: WorkflowEnvironment,
    engine: Engine,
    task_queue: str,
    activity_executor: ThreadPoolExecutor,
) -> AsyncIterator[WorkflowEnvironment]:
    if request.node.get_closest_marker("rejects_updates"):
        # The Java time-skipping test server keeps time skipping locked after it rejects an
        # update, which would stall every later timer test: such tests get their own server.
        isolated = await WorkflowEnvironment.start_time_skipping(
            test_server_existing_path=temporal_binary("temporal-test-server"),
            data_converter=time_skipping_env.client.data_converter,
        )
        try:
            async with build_worker(
                client=isolated.client,
                task_queue=task_queue,
                engine=engine,
                shredder=None,
                executor=activity_executor,
            ):
                yield isolated
        finally:
            _STARTED.clear()
            await isolated.shutdown()
        return
    worker = build_worker(
        client=time_skipping_env.client,
        task_queue=task_queue,
        engine=engine,
        shredder=None,
        executor=activity_executor,
    )
    async with worker:
        yield time_skipping_env
        # Workflows left waiting on timers would hold back time skipping in later tests.
        while _STARTED:
            handle = _STARTED.pop()
            desc = await handle.describe()
            if desc.status == WorkflowExecutionStatus.RUNNING:
                await handle.terminate("test over")


async def start(
    env: WorkflowEnvironment, engine: Engine, task_queue: str, **kwargs: object
) -> WorkflowHandle[ReferralWorkflow, Snapshot]:
    referral_id = f.referral_row(engine, **{k: v for k, v in kwargs.items() if k == "district"})  # type: ignore[arg-type]
    handle = await env.client.start_workflow(
        ReferralWorkflow.run,
        f.workflow_input(referral_id, **kwargs),  # type: ignore[arg-type]
        id=workflow_id(referral_id),
        task_queue=task_queue,
    )
    _STARTED.append(handle)
    return handle


async def skip(env: WorkflowEnvironment, duration: timedelta) -> None:
    """Skip time in steps of at most two days: each test-server call stays short under load."""
    while duration > timedelta(0):
        step = min(duration, 2 * DAY)
        await env.sleep(step)
        duration -= step


async def stage_of(handle: WorkflowHandle[ReferralWorkflow, Snapshot]) -> Stage:
    return (await handle.query(ReferralWorkflow.status)).stage


async def wait_for(
    env: WorkflowEnvironment,
    handle: WorkflowHandle[ReferralWorkflow, Snapshot],
    stage: Stage,
    *,
    business: str | None = None,
) -> Snapshot:
    """Poll the query (skipping a little time) until the referral reaches `stage`."""
    for _ in range(200):
        snap = await handle.query(ReferralWorkflow.status)
        if snap.stage is stage and (business is None or snap.business_status == business):
            return snap
        await env.sleep(timedelta(seconds=1))
    raise AssertionError(f"never reached {stage} (last: {snap.stage} {snap.business_status})")


def rid(handle: WorkflowHandle[ReferralWorkflow, Snapshot]) -> uuid.UUID:
    return uuid.UUID(handle.id.removeprefix("referral-"))


def facts(engine: Engine, referral_id: uuid.UUID) -> list[str]:
    with Session(engine) as s:
        rows = s.exec(
            select(JusticeMessage)
            .where(JusticeMessage.referral_id == referral_id)
            .order_by(col(JusticeMessage.created_at))
        ).all()
        return [r.fact for r in rows]


def notifications(engine: Engine, referral_id: uuid.UUID) -> list[tuple[str, str]]:
    with Session(engine) as s:
        rows = s.exec(
            select(Notification)
            .where(Notification.referral_id == referral_id)
            .order_by(col(Notification.created_at))
        ).all()
        return [(r.kind, r.recipient) for r in rows]


async def to_in_progress(
    env: WorkflowEnvironment, handle: WorkflowHandle[ReferralWorkflow, Snapshot], **consent: bool
) -> None:
    await handle.execute_update(ReferralWorkflow.record_consent, f.consent(**consent))
    await wait_for(env, handle, Stage.OFFERED)
    await handle.execute_update(ReferralWorkflow.accept, f.accept(f.CGG))
    await handle.execute_update(ReferralWorkflow.record_intake, f.intake(f.CGG))


async def test_full_lifecycle_to_purged(
    env: WorkflowEnvironment, engine: Engine, task_queue: str
) -> None:
    handle = await start(env, engine, task_queue)
    snap = await wait_for(env, handle, Stage.AWAITING_CONSENT)
    assert snap.status.value == "requested"

    snap = await handle.execute_update(ReferralWorkflow.record_consent, f.consent())
    snap = await wait_for(env, handle, Stage.OFFERED)
    assert snap.offered_provider == "cgg-antwerpen"
    assert snap.status.value == "received"

    snap = await handle.execute_update(ReferralWorkflow.accept, f.accept(f.CGG))
    assert snap.stage is Stage.ACCEPTED and snap.accepted_provider == "cgg-antwerpen"
    snap = await handle.execute_update(ReferralWorkflow.record_intake, f.intake(f.CGG))
    assert snap.stage is Stage.IN_PROGRESS and snap.status.value == "in-progress"
    snap = await handle.execute_update(ReferralWorkflow.report_progress, f.progress(f.CGG))
    assert snap.business_status == "attending"
    snap = await handle.execute_update(ReferralWorkflow.close, f.close(f.CGG))
    assert snap.stage is Stage.COMPLETED
    snap = await wait_for(env, handle, Stage.OUTCOME_REPORTED)
    assert snap.status.value == "completed"
    snap = await handle.execute_update(ReferralWorkflow.decide, f.decision())
    assert snap.stage is Stage.CLOSED and snap.purge_at is not None

    result = await handle.result()  # time skips through the retention period
    assert result.stage is Stage.PURGED

    referral_id = rid(handle)
    assert facts(engine, referral_id) == ["registered", "started", "attending", "completed"]
    with Session(engine) as s:
        row = s.get(Referral, referral_id)
        assert row is not None and row.stage == "purged" and row.purged_at is not None
        assert row.personal == {}
        history = s.exec(
            select(StatusHistory.stage)
            .where(StatusHistory.referral_id == referral_id)
            .order_by(col(StatusHistory.version))
        ).all()
    assert history == [
        "awaiting_consent",
        "matching",
        "offered",
        "accepted",
        "in_progress",
        "in_progress",
        "completed",
        "outcome_reported",
        "closed",
        "purged",
    ]


async def test_consent_deadline_returns_case_to_justice(
    env: WorkflowEnvironment, engine: Engine, task_queue: str
) -> None:
    handle = await start(env, engine, task_queue)
    await wait_for(env, handle, Stage.AWAITING_CONSENT)
    await skip(env, 15 * DAY)
    snap = await wait_for(env, handle, Stage.OUTCOME_REPORTED)
    assert snap.outcome is Stage.RETURNED_TO_JUSTICE and snap.status.value == "rejected"
    assert facts(engine, rid(handle)) == [ComplianceFact.CONSENT_NOT_GIVEN.value]


async def test_consent_refused_returns_case_to_justice(
    env: WorkflowEnvironment, engine: Engine, task_queue: str
) -> None:
    handle = await start(env, engine, task_queue)
    await wait_for(env, handle, Stage.AWAITING_CONSENT)
    await handle.execute_update(ReferralWorkflow.record_consent, f.consent(given=False))
    snap = await wait_for(env, handle, Stage.OUTCOME_REPORTED)
    assert snap.outcome is Stage.RETURNED_TO_JUSTICE


async def test_sla_reminder_then_reroute_then_on_hold_when_no_provider_left(
    env: WorkflowEnvironment, engine: Engine, task_queue: str
) -> None:
    handle = await start(env, engine, task_queue)
    await handle.execute_update(ReferralWorkflow.record_consent, f.consent())
    snap = await wait_for(env, handle, Stage.OFFERED)
    assert snap.offered_provider == "cgg-antwerpen"
    await skip(env, 3 * DAY + timedelta(hours=1))
    assert (NotificationKind.OFFER_REMINDER.value, "cgg-antwerpen") in notifications(
        engine, rid(handle)
    )
    await skip(env, 2 * DAY)
    snap = await wait_for(env, handle, Stage.OFFERED)
    assert snap.offered_provider == "free-clinic-antwerpen"
    assert snap.providers_tried == ("cgg-antwerpen",)
    await skip(env, 6 * DAY)
    snap = await wait_for(env, handle, Stage.ON_HOLD)
    assert snap.status.value == "on-hold"
    sent = notifications(engine, rid(handle))
    assert (NotificationKind.NO_PROVIDER_LEFT.value, "parket-antwerpen") in sent
    assert sent.count((NotificationKind.OFFER.value, "cgg-antwerpen")) == 1
    assert facts(engine, rid(handle)) == [ComplianceFact.NO_PROVIDER_AVAILABLE.value]
    with Session(engine) as s:
        offers = s.exec(select(Offer).where(Offer.referral_id == rid(handle))).all()
    assert sorted(o.provider for o in offers) == ["cgg-antwerpen", "free-clinic-antwerpen"]

    # the office asks to try again: matching starts over
    snap = await handle.execute_update(ReferralWorkflow.rematch, f.rematch())
    snap = await wait_for(env, handle, Stage.OFFERED)
    assert snap.offered_provider == "cgg-antwerpen"


async def test_decline_with_reason_goes_to_next_provider(
    env: WorkflowEnvironment, engine: Engine, task_queue: str
) -> None:
    handle = await start(env, engine, task_queue)
    await handle.execute_update(ReferralWorkflow.record_consent, f.consent())
    await wait_for(env, handle, Stage.OFFERED)
    snap = await handle.execute_update(ReferralWorkflow.decline, f.decline(f.CGG))
    assert snap.business_status == "declined_no_capacity"
    snap = await wait_for(env, handle, Stage.OFFERED)
    assert snap.offered_provider == "free-clinic-antwerpen"
    await handle.execute_update(ReferralWorkflow.decline, f.decline(f.FREE_CLINIC))
    await wait_for(env, handle, Stage.ON_HOLD)


async def test_missed_progress_report_gives_a_reminder(
    env: WorkflowEnvironment, engine: Engine, task_queue: str
) -> None:
    handle = await start(env, engine, task_queue)
    await to_in_progress(env, handle)
    await skip(env, 31 * DAY)
    snap = await wait_for(env, handle, Stage.IN_PROGRESS, business="progress_report_overdue")
    assert snap.next_progress_report_due is not None
    assert (NotificationKind.PROGRESS_REPORT_MISSED.value, "cgg-antwerpen") in notifications(
        engine, rid(handle)
    )


async def test_prosecutor_decision_deadline_reminds_the_office(
    env: WorkflowEnvironment, engine: Engine, task_queue: str
) -> None:
    handle = await start(env, engine, task_queue)
    await to_in_progress(env, handle)
    await handle.execute_update(ReferralWorkflow.close, f.close(f.CGG, Outcome.FAILED))
    snap = await wait_for(env, handle, Stage.OUTCOME_REPORTED)
    assert snap.status.value == "failed"
    await skip(env, 31 * DAY)
    for _ in range(50):
        if (NotificationKind.DECISION_DUE.value, "parket-antwerpen") in notifications(
            engine, rid(handle)
        ):
            break
        await env.sleep(timedelta(seconds=1))
    else:
        raise AssertionError("no decision reminder")
    assert facts(engine, rid(handle))[-1] == ComplianceFact.DROPPED_OUT.value


@pytest.mark.rejects_updates
async def test_withdrawal_cancels_and_justice_only_learns_consent_withdrawn(
    env: WorkflowEnvironment, engine: Engine, task_queue: str
) -> None:
    handle = await start(env, engine, task_queue)
    await to_in_progress(env, handle)
    snap = await handle.execute_update(ReferralWorkflow.withdraw_consent, f.withdraw(f.CGG))
    assert snap.stage is Stage.CANCELLED
    with pytest.raises(WorkflowUpdateFailedError):
        await handle.execute_update(ReferralWorkflow.report_progress, f.progress(f.CGG))
    snap = await wait_for(env, handle, Stage.OUTCOME_REPORTED)
    assert snap.status.value == "cancelled"
    assert facts(engine, rid(handle))[-1] == ComplianceFact.CONSENT_WITHDRAWN.value


async def test_consent_expiry_is_a_durable_timer(
    env: WorkflowEnvironment, engine: Engine, task_queue: str
) -> None:
    from datetime import UTC, datetime

    handle = await start(env, engine, task_queue)
    now = datetime.now(UTC)
    valid_until = max(now, await env.get_current_time()) + 10 * DAY
    await handle.execute_update(ReferralWorkflow.record_consent, f.consent(valid_until=valid_until))
    await wait_for(env, handle, Stage.OFFERED)
    await handle.execute_update(ReferralWorkflow.accept, f.accept(f.CGG))
    await skip(env, 11 * DAY)
    snap = await wait_for(env, handle, Stage.OUTCOME_REPORTED)
    assert snap.outcome is Stage.CANCELLED
    assert facts(engine, rid(handle))[-1] == ComplianceFact.CONSENT_EXPIRED.value


async def test_without_reporting_consent_justice_gets_no_progress(
    env: WorkflowEnvironment, engine: Engine, task_queue: str
) -> None:
    handle = await start(env, engine, task_queue)
    await to_in_progress(env, handle, reporting=False)
    await handle.execute_update(ReferralWorkflow.report_progress, f.progress(f.CGG))
    await handle.execute_update(ReferralWorkflow.close, f.close(f.CGG))
    await wait_for(env, handle, Stage.OUTCOME_REPORTED)
    assert facts(engine, rid(handle)) == [ComplianceFact.ENDED_WITHOUT_REPORTING_CONSENT.value]


@pytest.mark.rejects_updates
@pytest.mark.parametrize(
    "step",
    [
        "accept_twice",
        "close_before_intake",
        "accept_by_wrong_organisation",
        "decision_by_other_office",
        "decision_before_outcome",
        "consent_without_referral_purpose",
        "intake_by_offered_but_not_accepted",
    ],
)
async def test_validators_refuse_illegal_steps(
    env: WorkflowEnvironment, engine: Engine, task_queue: str, step: str
) -> None:
    handle = await start(env, engine, task_queue)
    await wait_for(env, handle, Stage.AWAITING_CONSENT)
    if step == "consent_without_referral_purpose":
        bad = f.consent().model_copy(update={"purposes": ()})
        with pytest.raises(WorkflowUpdateFailedError):
            await handle.execute_update(ReferralWorkflow.record_consent, bad)
        assert await stage_of(handle) is Stage.AWAITING_CONSENT
        return
    await handle.execute_update(ReferralWorkflow.record_consent, f.consent())
    await wait_for(env, handle, Stage.OFFERED)
    if step == "accept_by_wrong_organisation":
        with pytest.raises(WorkflowUpdateFailedError):
            await handle.execute_update(ReferralWorkflow.accept, f.accept(f.FREE_CLINIC))
        assert await stage_of(handle) is Stage.OFFERED
        return
    if step == "intake_by_offered_but_not_accepted":
        with pytest.raises(WorkflowUpdateFailedError):
            await handle.execute_update(ReferralWorkflow.record_intake, f.intake(f.CGG))
        return
    version = (await handle.query(ReferralWorkflow.status)).version
    await handle.execute_update(ReferralWorkflow.accept, f.accept(f.CGG))
    if step == "accept_twice":
        with pytest.raises(WorkflowUpdateFailedError):
            await handle.execute_update(ReferralWorkflow.accept, f.accept(f.CGG))
    elif step == "close_before_intake":
        with pytest.raises(WorkflowUpdateFailedError):
            await handle.execute_update(ReferralWorkflow.close, f.close(f.CGG))
    elif step == "decision_before_outcome":
        with pytest.raises(WorkflowUpdateFailedError):
            await handle.execute_update(ReferralWorkflow.decide, f.decision())
    elif step == "decision_by_other_office":
        await handle.execute_update(ReferralWorkflow.record_intake, f.intake(f.CGG))
        await handle.execute_update(ReferralWorkflow.close, f.close(f.CGG))
        await wait_for(env, handle, Stage.OUTCOME_REPORTED)
        version = (await handle.query(ReferralWorkflow.status)).version
        with pytest.raises(WorkflowUpdateFailedError):
            await handle.execute_update(ReferralWorkflow.decide, f.decision(f.OTHER_OFFICE))
        assert (await handle.query(ReferralWorkflow.status)).version == version
        return
    snap = await handle.query(ReferralWorkflow.status)
    assert snap.stage is Stage.ACCEPTED and snap.version == version + 1


@pytest.mark.parametrize("stage", [Stage.ACCEPTED, Stage.IN_PROGRESS])
async def test_office_may_cancel_during_care(
    env: WorkflowEnvironment, engine: Engine, task_queue: str, stage: Stage
) -> None:
    # a cancel refused only once care started would tell an office without reporting
    # consent (which sees `referred_to_care`) that care started
    handle = await start(env, engine, task_queue)
    await handle.execute_update(ReferralWorkflow.record_consent, f.consent(reporting=False))
    await wait_for(env, handle, Stage.OFFERED)
    await handle.execute_update(ReferralWorkflow.accept, f.accept(f.CGG))
    if stage is Stage.IN_PROGRESS:
        await handle.execute_update(ReferralWorkflow.record_intake, f.intake(f.CGG))
    snap = await handle.execute_update(ReferralWorkflow.cancel, CancelInput(actor=f.OFFICE))
    assert snap.stage is Stage.CANCELLED and snap.next_progress_report_due is None
    snap = await wait_for(env, handle, Stage.OUTCOME_REPORTED)
    assert snap.status.value == "cancelled"
    assert facts(engine, rid(handle)) == []  # its own cancel: nothing to tell the office
