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

from services.audit.models import AuditEntry
from services.crypto import DataKeyShredded
from services.db import session_scope
from services.lifecycle import (
    CancelInput,
    ComplianceFact,
    NotificationKind,
    Outcome,
    Snapshot,
    Stage,
)
from services.models import JusticeMessage, Notification, Offer, Referral, StatusHistory
from services.runtime import Runtime
from tests import factories as f
from workflows.binaries import SERVER_STARTUP_TIMEOUT, temporal_binary
from workflows.referral import ReferralWorkflow, workflow_id
from workflows.worker import build_worker

DAY = timedelta(days=1)
_STARTED: list[WorkflowHandle[ReferralWorkflow, Snapshot]] = []
# the runtime of the running test's worker: its vault seals each referral's personal data
_RUNTIME: list[Runtime] = []
# what was sealed for each referral, to prove after the purge that it cannot be opened
_SEALED: dict[uuid.UUID, dict[str, str]] = {}

# Made-up personal data of every test referral, one field of each holding's categories.
PERSON = {
    "identity.name": "Jan Peeters",
    "identity.birth_date": "1985-07-30",
    "identity.national_number": "85.07.30-033.61",
    "judicial_context.notice_number": "AN.12.34.567890-24",
    "referral_reason.substance_or_behaviour": "cannabis",
    "clinical.note": "craving under control",
    "welfare.note": "housing found",
}


@pytest.fixture
async def env(
    request: pytest.FixtureRequest,
    time_skipping_env: WorkflowEnvironment,
    engine: Engine,
    runtime: Runtime,
    task_queue: str,
    activity_executor: ThreadPoolExecutor,
) -> AsyncIterator[WorkflowEnvironment]:
    _RUNTIME[:] = [runtime]
    if request.node.get_closest_marker("rejects_updates"):
        # The Java time-skipping test server keeps time skipping locked after it rejects an
        # update, which would stall every later timer test: such tests get their own server.
        isolated = await WorkflowEnvironment.start_time_skipping(
            test_server_existing_path=temporal_binary("temporal-test-server"),
            test_server_startup_timeout=SERVER_STARTUP_TIMEOUT,
            data_converter=time_skipping_env.client.data_converter,
        )
        try:
            async with build_worker(
                client=isolated.client,
                task_queue=task_queue,
                engine=engine,
                shredder=runtime.vault,
                executor=activity_executor,
                gatekeeper=runtime.gatekeeper,
            ):
                yield isolated
                # End what the test left running before the worker leaves, as on the shared
                # server: a CI run hung for good in this teardown (PostgreSQL, after the
                # whole suite), with the worker shutting down beside a workflow still open.
                await _terminate_started()
        finally:
            _STARTED.clear()
            await isolated.shutdown()
        return
    worker = build_worker(
        client=time_skipping_env.client,
        task_queue=task_queue,
        engine=engine,
        shredder=runtime.vault,
        executor=activity_executor,
        gatekeeper=runtime.gatekeeper,
    )
    async with worker:
        yield time_skipping_env
        # Workflows left waiting on timers would hold back time skipping in later tests.
        await _terminate_started()


async def _terminate_started() -> None:
    """Terminate every workflow the test started that still runs."""
    while _STARTED:
        handle = _STARTED.pop()
        desc = await handle.describe()
        if desc.status == WorkflowExecutionStatus.RUNNING:
            await handle.terminate("test over")


async def start(
    env: WorkflowEnvironment, engine: Engine, task_queue: str, **kwargs: object
) -> WorkflowHandle[ReferralWorkflow, Snapshot]:
    referral_id = f.referral_row(engine, **{k: v for k, v in kwargs.items() if k == "district"})  # type: ignore[arg-type]
    vault = _RUNTIME[0].vault
    with session_scope(engine) as session:
        row = session.get(Referral, referral_id)
        assert row is not None
        row.personal = vault.seal_record(session=session, referral_id=referral_id, fields=PERSON)
        _SEALED[referral_id] = dict(row.personal)
        session.add(row)
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


def shredding_entries(runtime: Runtime, referral_id: uuid.UUID) -> list[tuple[str, list[str]]]:
    """The audit entries of the referral's shreddings: (action, categories)."""
    pseudonym = runtime.gatekeeper.pseudonym(referral_id)
    with Session(runtime.engine) as s:
        rows = s.exec(
            select(AuditEntry)
            .where(AuditEntry.referral_pseudonym == pseudonym)
            .where(AuditEntry.event_type == "delete")
            .order_by(col(AuditEntry.index))
        ).all()
        return [(r.action, sorted(r.categories)) for r in rows]


def assert_purged(runtime: Runtime, referral_id: uuid.UUID) -> None:
    """Purged for real: the data key is destroyed (nothing sealed for the referral opens
    again), the sealed fields and the office's compliance facts are gone, and each
    shredding is in the audit log. A purge that shreds nothing fails here."""
    with Session(runtime.engine) as s:
        row = s.get(Referral, referral_id)
        assert row is not None and row.stage == "purged" and row.purged_at is not None
        assert row.personal == {}
        assert row.care_purged_at is not None and row.office_purged_at is not None
        assert runtime.vault.is_shredded(session=s, referral_id=referral_id)
        for field, token in _SEALED[referral_id].items():
            with pytest.raises(DataKeyShredded):
                runtime.vault.open(session=s, referral_id=referral_id, field=field, token=token)
        left = s.exec(select(JusticeMessage).where(JusticeMessage.referral_id == referral_id))
        assert left.all() == []
    entries = shredding_entries(runtime, referral_id)
    assert entries and entries[-1][0] == "referral.purge"
    shredded = {category for _, categories in entries for category in categories}
    assert {"identity", "judicial_context", "referral_reason", "clinical", "welfare"} <= shredded


def reasons(engine: Engine, referral_id: uuid.UUID) -> list[tuple[str, str]]:
    """The referral's status history: (stage, reason) of each change."""
    with Session(engine) as s:
        rows = s.exec(
            select(StatusHistory)
            .where(StatusHistory.referral_id == referral_id)
            .order_by(col(StatusHistory.version))
        ).all()
        return [(r.stage, r.reason) for r in rows]


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
    env: WorkflowEnvironment, engine: Engine, runtime: Runtime, task_queue: str
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
    assert facts(engine, rid(handle)) == ["registered", "started", "attending", "completed"]

    result = await handle.result()  # time skips through the retention period
    assert result.stage is Stage.PURGED

    referral_id = rid(handle)
    assert_purged(runtime, referral_id)
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


# Its own server too: after this test the shared server skipped no more time (a later
# test's timers never fired, on release 2 as well), though no update here is rejected.
@pytest.mark.rejects_updates
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


# ---- every path ends, and is forgotten (release 3) ------------------------------------
#
# Each path is driven only as far as a person must act on it; from there the timers take
# it: back to justice, the decision (or closing with none), both retention clocks, purged.


async def _drive(
    env: WorkflowEnvironment,
    handle: WorkflowHandle[ReferralWorkflow, Snapshot],
    path: str,
) -> None:
    if path == "nobody_acts":
        return  # consent deadline, then the decision deadline: closed with no decision
    if path == "consent_refused":
        await handle.execute_update(ReferralWorkflow.record_consent, f.consent(given=False))
        return
    if path == "cancelled_awaiting_consent":
        await wait_for(env, handle, Stage.AWAITING_CONSENT)
        await handle.execute_update(ReferralWorkflow.cancel, CancelInput(actor=f.OFFICE))
        return
    await handle.execute_update(ReferralWorkflow.record_consent, f.consent())
    await wait_for(env, handle, Stage.OFFERED)
    if path == "on_hold_limit":
        await handle.execute_update(ReferralWorkflow.decline, f.decline(f.CGG))
        await wait_for(env, handle, Stage.OFFERED)
        await handle.execute_update(ReferralWorkflow.decline, f.decline(f.FREE_CLINIC))
        await wait_for(env, handle, Stage.ON_HOLD)
        return
    if path == "offers_expire":
        return  # reminder, expiry, re-route, expiry: on hold, then its limit
    await handle.execute_update(ReferralWorkflow.accept, f.accept(f.CGG))
    if path == "intake_deadline":
        return
    if path == "withdrawn":
        await handle.execute_update(ReferralWorkflow.withdraw_consent, f.withdraw(f.OFFICE))
        return
    await handle.execute_update(ReferralWorkflow.record_intake, f.intake(f.CGG))
    if path == "reports_missed":
        return
    if path == "cancelled_in_care":
        await handle.execute_update(ReferralWorkflow.cancel, CancelInput(actor=f.OFFICE))
        return
    assert path == "completed_decided"
    await handle.execute_update(ReferralWorkflow.close, f.close(f.CGG))
    await wait_for(env, handle, Stage.OUTCOME_REPORTED)
    await handle.execute_update(ReferralWorkflow.decide, f.decision())


# path -> the reason it ended with, and how it was closed
PATHS = {
    "nobody_acts": ("consent_deadline", "decision_deadline_passed"),
    "consent_refused": ("consent_refused", "decision_deadline_passed"),
    "cancelled_awaiting_consent": ("cancelled", "decision_deadline_passed"),
    "on_hold_limit": ("on_hold_limit", "decision_deadline_passed"),
    "offers_expire": ("on_hold_limit", "decision_deadline_passed"),
    "intake_deadline": ("intake_deadline", "decision_deadline_passed"),
    "withdrawn": ("consent_withdrawn", "decision_deadline_passed"),
    "reports_missed": ("progress_reports_missed", "decision_deadline_passed"),
    "cancelled_in_care": ("cancelled", "decision_deadline_passed"),
    "completed_decided": ("closed", f"decision_{f.decision().decision.value}"),
}


@pytest.mark.parametrize("path", list(PATHS))
async def test_every_path_ends_in_purged(
    env: WorkflowEnvironment, engine: Engine, runtime: Runtime, task_queue: str, path: str
) -> None:
    handle = await start(env, engine, task_queue)
    await _drive(env, handle, path)
    result = await handle.result()  # time skips through every deadline and both clocks
    assert result.stage is Stage.PURGED
    ended, closed = PATHS[path]
    history = reasons(engine, rid(handle))
    assert (result.outcome.value if result.outcome else None, ended) in history
    assert ("closed", closed) in history
    assert history[-1] == ("purged", "retention_elapsed")
    assert_purged(runtime, rid(handle))


async def test_decision_reminded_twice_then_closed_without_decision(
    env: WorkflowEnvironment, engine: Engine, task_queue: str
) -> None:
    handle = await start(env, engine, task_queue)
    await handle.execute_update(ReferralWorkflow.record_consent, f.consent(given=False))
    snap = await wait_for(env, handle, Stage.OUTCOME_REPORTED)
    assert snap.decision_due is not None
    await env.sleep(30 * DAY + timedelta(hours=1))
    await wait_for(env, handle, Stage.OUTCOME_REPORTED)
    due = [n for n in notifications(engine, rid(handle)) if n[0] == "decision_due"]
    assert due == [("decision_due", "parket-antwerpen")]
    await env.sleep(14 * DAY)
    snap = await wait_for(env, handle, Stage.OUTCOME_REPORTED)
    due = [n for n in notifications(engine, rid(handle)) if n[0] == "decision_due"]
    assert len(due) == 2
    await env.sleep(16 * DAY)
    snap = await wait_for(env, handle, Stage.CLOSED)
    assert snap.business_status == "closed_no_decision" and snap.decision is None
    assert snap.care_purge_at is not None and snap.purge_at == snap.office_purge_at


async def test_reports_missed_in_a_row_return_the_case(
    env: WorkflowEnvironment, engine: Engine, task_queue: str
) -> None:
    handle = await start(env, engine, task_queue)
    await to_in_progress(env, handle)
    await env.sleep(61 * DAY)  # two missed
    snap = await wait_for(env, handle, Stage.IN_PROGRESS, business="progress_report_overdue")
    # a report resets the count: the provider is back on track
    await handle.execute_update(ReferralWorkflow.report_progress, f.progress(f.CGG))
    await env.sleep(61 * DAY)
    snap = await wait_for(env, handle, Stage.IN_PROGRESS, business="progress_report_overdue")
    await env.sleep(30 * DAY)
    snap = await wait_for(env, handle, Stage.OUTCOME_REPORTED)
    assert snap.outcome is Stage.RETURNED_TO_JUSTICE
    missed = [n for n in notifications(engine, rid(handle)) if n[0] == "progress_report_missed"]
    assert len(missed) == 5
    # with the consent to report progress, the office learns the provider stopped reporting
    assert facts(engine, rid(handle))[-1] == ComplianceFact.OUTCOME_NOT_REPORTED.value


@pytest.mark.parametrize("reporting", [True, False])
async def test_intake_deadline_returns_the_case(
    env: WorkflowEnvironment, engine: Engine, task_queue: str, reporting: bool
) -> None:
    handle = await start(env, engine, task_queue)
    await handle.execute_update(ReferralWorkflow.record_consent, f.consent(reporting=reporting))
    await wait_for(env, handle, Stage.OFFERED)
    snap = await handle.execute_update(ReferralWorkflow.accept, f.accept(f.CGG))
    assert snap.intake_due is not None
    await env.sleep(29 * DAY)
    assert await stage_of(handle) is Stage.ACCEPTED
    await env.sleep(2 * DAY)
    snap = await wait_for(env, handle, Stage.OUTCOME_REPORTED)
    assert snap.outcome is Stage.RETURNED_TO_JUSTICE
    # whether care started is compliance data: without the consent to report, only "ended"
    expected = (
        ComplianceFact.NOT_STARTED
        if reporting
        else (ComplianceFact.ENDED_WITHOUT_REPORTING_CONSENT)
    )
    assert facts(engine, rid(handle))[-1] == expected.value


async def test_two_retention_clocks_shred_each_holding_at_its_own_time(
    env: WorkflowEnvironment, engine: Engine, runtime: Runtime, task_queue: str
) -> None:
    handle = await start(env, engine, task_queue, retention_justice=1825 * 86400)
    await to_in_progress(env, handle)
    await handle.execute_update(ReferralWorkflow.close, f.close(f.CGG))
    await wait_for(env, handle, Stage.OUTCOME_REPORTED)
    snap = await handle.execute_update(ReferralWorkflow.decide, f.decision())
    assert snap.care_purge_at is not None and snap.office_purge_at is not None
    assert snap.office_purge_at - snap.care_purge_at == timedelta(days=1825 - 730)
    assert snap.purge_at == snap.office_purge_at

    await env.sleep(731 * DAY)  # the care period has ended, the justice period has not
    snap = await wait_for(env, handle, Stage.CLOSED, business="care_data_shredded")
    referral_id = rid(handle)
    with Session(engine) as s:
        row = s.get(Referral, referral_id)
        assert row is not None and row.care_purged_at is not None and row.office_purged_at is None
        assert "clinical.note" not in row.personal and "welfare.note" not in row.personal
        # what the office holds is still there, and still opens
        name = runtime.vault.open(
            session=s,
            referral_id=referral_id,
            field="identity.name",
            token=row.personal["identity.name"],
        )
        assert name == PERSON["identity.name"]
    assert facts(engine, referral_id) != []
    assert shredding_entries(runtime, referral_id) == [
        ("referral.shred_care_data", ["clinical", "welfare"])
    ]

    result = await handle.result()
    assert result.stage is Stage.PURGED
    assert_purged(runtime, referral_id)
    assert [action for action, _ in shredding_entries(runtime, referral_id)] == [
        "referral.shred_care_data",
        "referral.purge",
    ]


@pytest.mark.rejects_updates
@pytest.mark.parametrize("ended", ["intake_deadline", "on_hold_limit", "no_decision"])
async def test_steps_are_refused_once_a_deadline_ended_the_state(
    env: WorkflowEnvironment, engine: Engine, task_queue: str, ended: str
) -> None:
    handle = await start(env, engine, task_queue)
    if ended == "no_decision":
        await handle.execute_update(ReferralWorkflow.record_consent, f.consent(given=False))
        await wait_for(env, handle, Stage.OUTCOME_REPORTED)
        await env.sleep(61 * DAY)
        await wait_for(env, handle, Stage.CLOSED)
        late = (ReferralWorkflow.decide, f.decision())
    else:
        await handle.execute_update(ReferralWorkflow.record_consent, f.consent())
        await wait_for(env, handle, Stage.OFFERED)
        if ended == "intake_deadline":
            await handle.execute_update(ReferralWorkflow.accept, f.accept(f.CGG))
            late = (ReferralWorkflow.record_intake, f.intake(f.CGG))
        else:
            await handle.execute_update(ReferralWorkflow.decline, f.decline(f.CGG))
            await wait_for(env, handle, Stage.OFFERED)
            await handle.execute_update(ReferralWorkflow.decline, f.decline(f.FREE_CLINIC))
            await wait_for(env, handle, Stage.ON_HOLD)
            late = (ReferralWorkflow.rematch, f.rematch())
        await env.sleep(31 * DAY)
        await wait_for(env, handle, Stage.OUTCOME_REPORTED)
    version = (await handle.query(ReferralWorkflow.status)).version
    with pytest.raises(WorkflowUpdateFailedError):
        await handle.execute_update(*late)  # type: ignore[call-overload]
    assert (await handle.query(ReferralWorkflow.status)).version == version
