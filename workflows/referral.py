"""ReferralWorkflow: one durable workflow per referral, the whole lifecycle.

Deterministic code only: time from `workflow.now()`, I/O in activities. User actions are
Updates whose validators refuse illegal steps before anything is written to history;
every state change is projected into SQL by an idempotent activity (keyed by version).

A validator sees the state when the step arrives; the handler then waits for the case's
lock, and another step or a timer may change the state meanwhile. So every handler checks
again, under the lock, what its validator checked, and a step that lost such a race is
refused (`StepRefused`, which fails the Update, never the workflow) and changes nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from datetime import datetime, timedelta
from uuid import UUID

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from services.lifecycle import (
        ENDED_STAGES,
        OPEN_STAGES,
        AcceptInput,
        Actor,
        CancelInput,
        CloseInput,
        ComplianceFact,
        ComplianceReportInput,
        ConsentPurpose,
        ConsentRecordInput,
        ConsentStoreInput,
        ConsentWithdrawInput,
        ConsentWithdrawStoreInput,
        DataHolding,
        DecisionInput,
        DeclineInput,
        FindProvidersInput,
        IntakeInput,
        NotificationKind,
        NotifyInput,
        OfferInput,
        Outcome,
        ProgressInput,
        ProsecutorDecision,
        PurgeInput,
        ReferralWorkflowInput,
        RematchInput,
        ShredInput,
        Snapshot,
        Stage,
        TransitionInput,
        fhir_status,
    )
    from workflows.activities import ReferralActivities

ACTIVITY_TIMEOUT = timedelta(seconds=30)
ACTIVITY_RETRY = RetryPolicy(maximum_interval=timedelta(seconds=30))

# Release 1 let a step that lost a race act anyway (reviving a withdrawn referral, or
# failing the workflow task). The patch is consulted only where the re-check under the lock
# fails, so a history that never met a race replays as it was, a release-1 history that did
# replays its old behaviour, and every race from now on, old referral or new, is refused.
LOST_RACE_PATCH = "refuse-steps-that-lost-a-race"
LOST_RACE = "the referral changed while this step waited; nothing was done"

# Release 3: a deadline on every open state (intake after acceptance, on hold, missed
# progress reports, the decision: a second reminder, then closing with no decision) and two
# retention clocks, each shredded at its own time. The patch is consulted where release 2
# would wait for ever or purge on one clock; a release-2 history that passed such a point
# replays as it was (and keeps release-2 behaviour), every referral from now on ends.
DEADLINES_PATCH = "deadlines-on-every-open-state"

_OUTCOME_STAGE = {
    Outcome.COMPLETED: Stage.COMPLETED,
    Outcome.FAILED: Stage.FAILED,
    Outcome.NOT_STARTED: Stage.NOT_STARTED,
}
_CARE_DEADLINE_FACT = {
    "intake_deadline": ComplianceFact.NOT_STARTED,
    "progress_reports_missed": ComplianceFact.OUTCOME_NOT_REPORTED,
}
_OUTCOME_FACT = {
    Stage.COMPLETED: ComplianceFact.COMPLETED,
    Stage.FAILED: ComplianceFact.DROPPED_OUT,
    Stage.NOT_STARTED: ComplianceFact.NOT_STARTED,
}


def workflow_id(referral_id: object) -> str:
    """The workflow id of a referral: its random id, never personal data."""
    return f"referral-{referral_id}"


@workflow.defn
class ReferralWorkflow:
    @workflow.init
    def __init__(self, inp: ReferralWorkflowInput) -> None:
        self._inp = inp
        self._lock = asyncio.Lock()
        # Submitted on start: validators accept the first steps at once, while handlers wait
        # (`_submitted`) until the submission itself has been projected.
        self._stage = Stage.AWAITING_CONSENT
        self._business = "awaiting_consent"
        self._version = 0
        self._reason = ""
        self._offered: str | None = None
        self._accepted: str | None = None
        self._tried: list[str] = []
        self._attempt = 0
        self._offered_at: datetime | None = None
        self._offer_expires_at: datetime | None = None
        self._reminded_attempt = 0
        self._outcome: Stage | None = None
        self._decision: ProsecutorDecision | None = None
        self._consent_id: UUID | None = None
        self._consent_valid_until: datetime | None = None
        self._reporting_consent = False
        self._consent_deadline: datetime | None = None
        self._next_report_due: datetime | None = None
        self._missed_reports = 0
        self._decision_due: datetime | None = None
        self._decision_reminded = False
        self._purge_at: datetime | None = None
        self._updated_at: datetime | None = None
        # release 3 (DEADLINES_PATCH): the deadlines of accepted, on hold and the decision
        self._intake_due: datetime | None = None
        self._on_hold_until: datetime | None = None
        self._missed_in_a_row = 0
        self._decision_reminders = 0
        # the two retention clocks, and the holdings shredded so far
        self._care_purge_at: datetime | None = None
        self._office_purge_at: datetime | None = None
        self._shredded: list[DataHolding] = []
        # what `_deadlines()` answered (None: not asked yet); validators may not ask it
        self._deadlines_on: bool | None = None

    # ---- run ------------------------------------------------------------------

    @workflow.run
    async def run(self, inp: ReferralWorkflowInput) -> Snapshot:
        async with self._lock:
            self._consent_deadline = self._after(inp.timings.consent_deadline)
            await self._transition(Stage.AWAITING_CONSENT, "awaiting_consent", "submitted")
        while self._stage is not Stage.PURGED:
            await self._step()
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._snapshot()

    async def _step(self) -> None:
        stage, version = self._stage, self._version
        if stage in OPEN_STAGES and self._consent_expired():
            async with self._lock:
                if self._stage in OPEN_STAGES and self._consent_expired():
                    await self._end(Stage.CANCELLED, "consent_expired", "consent_expired")
            return
        if stage is Stage.AWAITING_CONSENT:
            if not await self._wait_change(version, self._consent_deadline):
                async with self._lock:
                    if self._version == version:
                        await self._end(
                            Stage.RETURNED_TO_JUSTICE, "consent_not_obtained", "consent_deadline"
                        )
        elif stage is Stage.MATCHING:
            async with self._lock:
                if self._version == version:
                    await self._match()
        elif stage is Stage.OFFERED:
            await self._watch_offer(version)
        elif stage is Stage.IN_PROGRESS:
            if not await self._wait_change(version, self._next_report_due):
                async with self._lock:
                    if self._version == version:
                        if not self._deadlines():
                            await self._progress_report_missed()
                        elif self._passed(self._next_report_due):  # not the consent's end
                            await self._progress_report_missed()
                            await self._end_if_reports_missed()
        elif stage is Stage.ACCEPTED and self._deadlines():
            await self._deadline(version, self._intake_due, "intake_not_held", "intake_deadline")
        elif stage is Stage.ON_HOLD and self._deadlines():
            await self._deadline(version, self._on_hold_until, "no_provider_found", "on_hold_limit")
        elif stage in (Stage.ON_HOLD, Stage.ACCEPTED):
            await self._wait_change(version, None)  # release 2: until someone acts
        elif stage in ENDED_STAGES:
            async with self._lock:
                if self._version == version:
                    await self._report_outcome()
        elif stage is Stage.OUTCOME_REPORTED and self._decision_reminded and self._deadlines():
            await self._watch_decision(version)
        elif stage is Stage.OUTCOME_REPORTED:
            due = None if self._decision_reminded else self._decision_due
            if not await self._wait_change(version, due):
                async with self._lock:
                    if self._version == version and not self._decision_reminded:
                        self._decision_reminded = True
                        self._decision_reminders = 1
                        await self._notify(
                            "decision-due",
                            self._inp.referring_office,
                            NotificationKind.DECISION_DUE,
                        )
        elif stage is Stage.CLOSED and self._deadlines():
            await self._watch_retention()
        elif stage is Stage.CLOSED:
            await workflow.sleep(max(timedelta(0), self._remaining(self._purge_at)))
            async with self._lock:
                await workflow.execute_activity_method(
                    ReferralActivities.purge,
                    PurgeInput(referral_id=self._inp.referral_id),
                    start_to_close_timeout=ACTIVITY_TIMEOUT,
                    retry_policy=ACTIVITY_RETRY,
                )
                await self._transition(Stage.PURGED, "purged", "retention_elapsed")

    async def _wait_change(self, version: int, until: datetime | None) -> bool:
        """Wait until the state changes (True) or `until` passes (False)."""
        if self._stage in OPEN_STAGES and self._consent_valid_until is not None:
            if until is None or self._consent_valid_until < until:
                until = self._consent_valid_until
        if until is None:
            await workflow.wait_condition(lambda: self._version != version)
            return True
        remaining = self._remaining(until)
        if remaining <= timedelta(0):
            return self._version != version
        try:
            await workflow.wait_condition(lambda: self._version != version, timeout=remaining)
        except TimeoutError:
            return self._version != version
        return True

    def _deadlines(self) -> bool:
        """Whether this referral runs by release 3's deadlines and retention clocks."""
        self._deadlines_on = workflow.patched(DEADLINES_PATCH)
        return self._deadlines_on

    @staticmethod
    def _passed(when: datetime | None) -> bool:
        return when is not None and workflow.now() >= when

    async def _deadline(
        self, version: int, due: datetime | None, business: str, reason: str
    ) -> None:
        """Wait in an open state until a step or `due`; then back to justice."""
        if due is None:  # cannot happen (set on entering the state); never wait for ever
            workflow.logger.warning("open stage without its deadline")
            due = workflow.now()
        if not await self._wait_change(version, due):
            async with self._lock:
                # the wait also ends when the consent's validity does: that is not ours
                if self._version == version and self._passed(due):
                    await self._end(Stage.RETURNED_TO_JUSTICE, business, reason)

    async def _end_if_reports_missed(self) -> None:
        """After N reports missed in a row the provider had its chances: back to justice."""
        if self._missed_in_a_row >= self._inp.timings.max_missed_reports:
            await self._end(
                Stage.RETURNED_TO_JUSTICE, "progress_reports_missed", "progress_reports_missed"
            )

    async def _watch_decision(self, version: int) -> None:
        """After the first reminder: a second one, then closing with no decision."""
        assert self._decision_due is not None  # set with the outcome
        second = self._decision_due + timedelta(seconds=self._inp.timings.decision_second_reminder)
        if self._decision_reminders < 2:
            if not await self._wait_change(version, second):
                async with self._lock:
                    if self._version == version and self._decision_reminders < 2:
                        self._decision_reminders = 2
                        await self._notify(
                            "decision-due-2",
                            self._inp.referring_office,
                            NotificationKind.DECISION_DUE,
                        )
            return
        if not await self._wait_change(version, self._decision_closing()):
            async with self._lock:
                if self._version == version:
                    self._decision_due = None
                    self._start_retention()
                    await self._transition(
                        Stage.CLOSED, "closed_no_decision", "decision_deadline_passed"
                    )

    def _start_retention(self) -> None:
        """Start both retention clocks (release 3); `purge_at` is the later of them."""
        timings = self._inp.timings
        self._care_purge_at = self._after(timings.retention)
        self._office_purge_at = self._after(timings.retention_justice or timings.retention)
        self._purge_at = max(self._care_purge_at, self._office_purge_at)

    async def _watch_retention(self) -> None:
        """Shred each holding when its clock ends; the last one purges the referral."""
        clocks = {DataHolding.CARE: self._care_purge_at, DataHolding.OFFICE: self._office_purge_at}
        if any(at is None for at in clocks.values()):  # closed by a release-2 decision
            self._start_retention_from(self._purge_at)
            clocks = {
                DataHolding.CARE: self._care_purge_at,
                DataHolding.OFFICE: self._office_purge_at,
            }
        pending = sorted(
            (at, holding)
            for holding, at in clocks.items()
            if at is not None and holding not in self._shredded
        )
        await workflow.sleep(max(timedelta(0), self._remaining(pending[0][0])))
        async with self._lock:
            due = [holding for at, holding in pending if self._passed(at)]
            if len(due) < len(pending):
                for holding in due:
                    await workflow.execute_activity_method(
                        ReferralActivities.shred,
                        ShredInput(referral_id=self._inp.referral_id, holding=holding),
                        start_to_close_timeout=ACTIVITY_TIMEOUT,
                        retry_policy=ACTIVITY_RETRY,
                    )
                    self._shredded.append(holding)
                business = "_".join(h.value for h in due)
                await self._transition(
                    Stage.CLOSED, f"{business}_data_shredded", f"{business}_retention_elapsed"
                )
                return
            await workflow.execute_activity_method(
                ReferralActivities.purge,
                PurgeInput(
                    referral_id=self._inp.referral_id,
                    holdings=tuple(holding for _, holding in pending),
                ),
                start_to_close_timeout=ACTIVITY_TIMEOUT,
                retry_policy=ACTIVITY_RETRY,
            )
            self._shredded.extend(holding for _, holding in pending)
            await self._transition(Stage.PURGED, "purged", "retention_elapsed")

    def _start_retention_from(self, purge_at: datetime | None) -> None:
        """A referral decided on release 2 keeps its one clock for both holdings."""
        at = purge_at or workflow.now()
        self._care_purge_at = self._office_purge_at = at

    async def _match(self) -> None:
        found = await workflow.execute_activity_method(
            ReferralActivities.find_providers,
            FindProvidersInput(
                referral_id=self._inp.referral_id,
                framework_id=self._inp.framework_id,
                district=self._inp.district,
                target_group=self._inp.target_group,
                language=self._inp.language,
                exclude=tuple(self._tried),
            ),
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            retry_policy=ACTIVITY_RETRY,
        )
        if not found.providers:
            self._offered = None
            self._offer_expires_at = None
            self._on_hold_until = self._after(self._inp.timings.on_hold_limit)
            await self._transition(Stage.ON_HOLD, "no_provider_available", "no_provider_left")
            await self._notify(
                f"no-provider-{self._version}",
                self._inp.referring_office,
                NotificationKind.NO_PROVIDER_LEFT,
            )
            await self._tell_justice(
                f"no-provider-{self._version}", ComplianceFact.NO_PROVIDER_AVAILABLE
            )
            return
        provider = found.providers[0]
        self._attempt += 1
        self._offered = provider
        self._offered_at = workflow.now()
        self._offer_expires_at = self._after(self._inp.timings.acceptance_sla)
        await workflow.execute_activity_method(
            ReferralActivities.create_offer,
            OfferInput(
                referral_id=self._inp.referral_id,
                attempt=self._attempt,
                provider=provider,
                expires_at=self._offer_expires_at,
            ),
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            retry_policy=ACTIVITY_RETRY,
        )
        await self._transition(Stage.OFFERED, "offered", "provider_matched")
        await self._notify(f"offer-{self._attempt}", provider, NotificationKind.OFFER)

    async def _watch_offer(self, version: int) -> None:
        if self._offered_at is None or self._offer_expires_at is None or self._offered is None:
            # Cannot happen (an offer sets all three before the stage); if it did, wait for a
            # step (cancel, withdrawal) rather than fail the workflow task forever.
            workflow.logger.warning("offered stage without an open offer")
            await self._wait_change(version, None)
            return
        attempt = self._attempt
        reminder_at = self._offered_at + timedelta(seconds=self._inp.timings.acceptance_reminder)
        if self._reminded_attempt < attempt and reminder_at < self._offer_expires_at:
            if not await self._wait_change(version, reminder_at):
                async with self._lock:
                    if self._version == version and self._offered is not None:
                        self._reminded_attempt = attempt
                        await self._notify(
                            f"offer-reminder-{attempt}",
                            self._offered,
                            NotificationKind.OFFER_REMINDER,
                        )
            return
        if not await self._wait_change(version, self._offer_expires_at):
            async with self._lock:
                if self._version == version and self._offered is not None:
                    await self._notify(
                        f"offer-expired-{attempt}", self._offered, NotificationKind.OFFER_EXPIRED
                    )
                    self._tried.append(self._offered)
                    self._offered = None
                    self._offer_expires_at = None
                    await self._transition(Stage.MATCHING, "rerouting", "acceptance_sla_expired")

    async def _progress_report_missed(self) -> None:
        self._missed_reports += 1
        self._missed_in_a_row += 1
        if self._accepted is not None:  # always, in progress; never fail the task over it
            await self._notify(
                f"progress-missed-{self._missed_reports}",
                self._accepted,
                NotificationKind.PROGRESS_REPORT_MISSED,
            )
        self._next_report_due = self._after(self._inp.timings.progress_report_interval)
        await self._transition(Stage.IN_PROGRESS, "progress_report_overdue", "report_missed")

    async def _report_outcome(self) -> None:
        ended = self._stage
        self._outcome = ended
        if ended is Stage.CANCELLED and self._reason == "consent_withdrawn":
            fact: ComplianceFact | None = ComplianceFact.CONSENT_WITHDRAWN
        elif ended is Stage.CANCELLED and self._reason == "consent_expired":
            fact = ComplianceFact.CONSENT_EXPIRED
        elif ended is Stage.RETURNED_TO_JUSTICE and self._reason == "on_hold_limit":
            fact = ComplianceFact.NO_PROVIDER_AVAILABLE
        elif ended is Stage.RETURNED_TO_JUSTICE and self._reason in _CARE_DEADLINE_FACT:
            # how care went is compliance data: only with the consent to report it
            fact = (
                _CARE_DEADLINE_FACT[self._reason]
                if self._reporting_consent
                else ComplianceFact.ENDED_WITHOUT_REPORTING_CONSENT
            )
        elif ended is Stage.RETURNED_TO_JUSTICE:
            fact = ComplianceFact.CONSENT_NOT_GIVEN
        elif ended in _OUTCOME_FACT:
            fact = (
                _OUTCOME_FACT[ended]
                if self._reporting_consent
                else ComplianceFact.ENDED_WITHOUT_REPORTING_CONSENT
            )
        else:
            fact = None  # cancelled by the referring office itself: nothing to tell it
        if fact is not None:
            await self._tell_justice("outcome", fact, needs_reporting_consent=False)
        self._decision_due = self._after(self._inp.timings.decision_deadline)
        await self._transition(Stage.OUTCOME_REPORTED, "outcome_reported", ended.value)

    async def _end(self, stage: Stage, business: str, reason: str) -> None:
        self._offer_expires_at = None
        self._next_report_due = None
        self._intake_due = None
        self._on_hold_until = None
        await self._transition(stage, business, reason)

    # ---- queries and updates ----------------------------------------------------

    @workflow.query
    def status(self) -> Snapshot:
        return self._snapshot()

    @workflow.update
    async def submitted(self) -> Snapshot:
        """Answers once the submission is projected: create waits on this, not on SQL."""
        await self._submitted()
        # `run` holds the lock until the submission's projection activity has completed
        async with self._lock:
            return self._snapshot()

    @workflow.update
    async def record_consent(self, inp: ConsentRecordInput) -> Snapshot:
        await self._submitted()
        async with self._lock:
            # after a withdrawal, expiry, cancel or deadline no consent revives the referral
            self._refuse_if(self._open_problem(inp.actor) or self._consent_problem(inp))
            await workflow.execute_activity_method(
                ReferralActivities.store_consent,
                ConsentStoreInput(referral_id=self._inp.referral_id, record=inp),
                start_to_close_timeout=ACTIVITY_TIMEOUT,
                retry_policy=ACTIVITY_RETRY,
            )
            if not inp.given:
                await self._end(Stage.RETURNED_TO_JUSTICE, "consent_refused", "consent_refused")
                return self._snapshot()
            self._consent_id = inp.consent_id
            self._consent_valid_until = inp.valid_until
            self._reporting_consent = ConsentPurpose.PROGRESS_REPORTING_TO_JUSTICE in inp.purposes
            if self._stage is Stage.AWAITING_CONSENT:
                self._consent_deadline = None
                await self._transition(Stage.MATCHING, "matching", "consent_given")
            else:
                await self._transition(self._stage, self._business, "consent_amended")
            return self._snapshot()

    @record_consent.validator
    def _validate_record_consent(self, inp: ConsentRecordInput) -> None:
        self._require_open()
        self._require_org(inp.actor, self._inp.referring_office, self._accepted)
        self._require_unexpired()
        if inp.given and ConsentPurpose.REFERRAL_TO_CARE not in inp.purposes:
            raise ValueError("a consent must include the purpose referral_to_care")
        problem = self._consent_problem(inp)
        if problem is not None:
            raise ValueError(problem)

    def _consent_problem(self, inp: ConsentRecordInput) -> str | None:
        if not inp.given and self._stage is not Stage.AWAITING_CONSENT:
            return "a refusal can only be recorded while consent is awaited"
        if inp.valid_until is not None and inp.valid_until <= workflow.now():
            return "the consent's validity has already ended"
        return None

    @workflow.update
    async def withdraw_consent(self, inp: ConsentWithdrawInput) -> Snapshot:
        await self._submitted()
        async with self._lock:
            # a withdrawal that finds the referral ended did nothing: it must not answer 200
            self._refuse_if(self._open_problem(inp.actor))
            if self._stage not in OPEN_STAGES:
                return self._snapshot()  # release 1: answered with the ended state
            if self._consent_id is None:  # the validator saw one; none is ever removed
                raise ApplicationError(
                    "there is no consent to withdraw", type="StepRefused", non_retryable=True
                )
            await workflow.execute_activity_method(
                ReferralActivities.withdraw_consent,
                ConsentWithdrawStoreInput(
                    referral_id=self._inp.referral_id,
                    consent_id=self._consent_id,
                    withdrawn_at=inp.withdrawn_at or workflow.now(),
                    actor=inp.actor,
                ),
                start_to_close_timeout=ACTIVITY_TIMEOUT,
                retry_policy=ACTIVITY_RETRY,
            )
            self._reporting_consent = False
            await self._end(Stage.CANCELLED, "consent_withdrawn", "consent_withdrawn")
            return self._snapshot()

    @withdraw_consent.validator
    def _validate_withdraw_consent(self, inp: ConsentWithdrawInput) -> None:
        self._require_open()
        self._require_org(inp.actor, self._inp.referring_office, self._accepted)
        self._require_unexpired()
        if self._consent_id is None:
            raise ValueError("there is no consent to withdraw")

    @workflow.update
    async def accept(self, inp: AcceptInput) -> Snapshot:
        attempt = self._attempt  # the offer the validator saw: an answer is for that one only
        await self._submitted()
        async with self._lock:
            self._refuse_if(self._offer_problem(inp.actor, attempt))
            self._accepted = self._offered
            self._offer_expires_at = None
            self._intake_due = self._after(self._inp.timings.intake_deadline)
            await self._transition(Stage.ACCEPTED, "accepted", "offer_accepted")
            await self._tell_justice(f"registered-{self._version}", ComplianceFact.REGISTERED)
            return self._snapshot()

    @accept.validator
    def _validate_accept(self, inp: AcceptInput) -> None:
        self._require_stage(Stage.OFFERED)
        self._require_org(inp.actor, self._offered)
        self._require_unexpired()

    @workflow.update
    async def decline(self, inp: DeclineInput) -> Snapshot:
        attempt = self._attempt  # the offer the validator saw: an answer is for that one only
        await self._submitted()
        async with self._lock:
            self._refuse_if(self._offer_problem(inp.actor, attempt))
            if self._offered is None:  # release 1 failed its workflow task here, for ever
                raise ApplicationError(LOST_RACE, type="StepRefused", non_retryable=True)
            self._tried.append(self._offered)
            self._offered = None
            self._offer_expires_at = None
            await self._transition(Stage.MATCHING, f"declined_{inp.reason.value}", "declined")
            return self._snapshot()

    @decline.validator
    def _validate_decline(self, inp: DeclineInput) -> None:
        self._require_stage(Stage.OFFERED)
        self._require_org(inp.actor, self._offered)
        self._require_unexpired()

    @workflow.update
    async def record_intake(self, inp: IntakeInput) -> Snapshot:
        await self._submitted()
        async with self._lock:
            self._refuse_if(
                self._care_problem(Stage.ACCEPTED, inp.actor) or self._overdue(self._intake_due)
            )
            self._intake_due = None
            self._next_report_due = self._after(self._inp.timings.progress_report_interval)
            business = "first_attendance" if inp.attended else "intake_scheduled"
            await self._transition(Stage.IN_PROGRESS, business, "intake")
            if inp.attended:
                await self._tell_justice(f"started-{self._version}", ComplianceFact.STARTED)
            return self._snapshot()

    @record_intake.validator
    def _validate_intake(self, inp: IntakeInput) -> None:
        self._require_stage(Stage.ACCEPTED)
        self._require_org(inp.actor, self._accepted)
        self._require_unexpired()
        self._require_in_time(self._intake_due)

    @workflow.update
    async def report_progress(self, inp: ProgressInput) -> Snapshot:
        await self._submitted()
        async with self._lock:
            self._refuse_if(self._care_problem(Stage.IN_PROGRESS, inp.actor))
            if self._stage is not Stage.IN_PROGRESS:
                return self._snapshot()  # release 1: answered with the ended state
            self._next_report_due = self._after(self._inp.timings.progress_report_interval)
            self._missed_in_a_row = 0
            await self._transition(Stage.IN_PROGRESS, inp.attendance.value, "progress_report")
            if inp.attendance.value == "attending":
                await self._tell_justice(f"attending-{self._version}", ComplianceFact.ATTENDING)
            return self._snapshot()

    @report_progress.validator
    def _validate_progress(self, inp: ProgressInput) -> None:
        self._require_stage(Stage.IN_PROGRESS)
        self._require_org(inp.actor, self._accepted)
        self._require_unexpired()

    @workflow.update
    async def close(self, inp: CloseInput) -> Snapshot:
        await self._submitted()
        async with self._lock:
            self._refuse_if(self._care_problem(Stage.IN_PROGRESS, inp.actor))
            if self._stage is not Stage.IN_PROGRESS:
                return self._snapshot()  # release 1: answered with the ended state
            stage = _OUTCOME_STAGE[inp.outcome]
            await self._end(
                stage, "dropped_out" if stage is Stage.FAILED else stage.value, "closed"
            )
            return self._snapshot()

    @close.validator
    def _validate_close(self, inp: CloseInput) -> None:
        self._require_stage(Stage.IN_PROGRESS)
        self._require_org(inp.actor, self._accepted)
        self._require_unexpired()

    @workflow.update
    async def decide(self, inp: DecisionInput) -> Snapshot:
        await self._submitted()
        async with self._lock:
            self._refuse_if(
                self._stage_problem(
                    (Stage.OUTCOME_REPORTED,), inp.actor, self._inp.referring_office
                )
                or self._overdue(self._decision_closing())
            )
            self._decision = inp.decision
            self._decision_due = None
            self._purge_at = self._after(self._inp.timings.retention)
            if self._deadlines():
                self._start_retention()
            await self._transition(Stage.CLOSED, "closed", f"decision_{inp.decision.value}")
            return self._snapshot()

    @decide.validator
    def _validate_decide(self, inp: DecisionInput) -> None:
        self._require_stage(Stage.OUTCOME_REPORTED)
        self._require_org(inp.actor, self._inp.referring_office)
        self._require_in_time(self._decision_closing())

    @workflow.update
    async def cancel(self, inp: CancelInput) -> Snapshot:
        await self._submitted()
        async with self._lock:
            self._refuse_if(self._stage_problem(OPEN_STAGES, inp.actor, self._inp.referring_office))
            if self._stage not in OPEN_STAGES:
                return self._snapshot()  # release 1: answered with the ended state
            await self._end(Stage.CANCELLED, "cancelled_by_referrer", "cancelled")
            return self._snapshot()

    @cancel.validator
    def _validate_cancel(self, inp: CancelInput) -> None:
        # In every open stage: the prosecutor may end a diversion at any time, and a cancel
        # refused only once care started would tell an office without reporting consent
        # (which sees `referred_to_care`) that care started.
        self._require_open()
        self._require_org(inp.actor, self._inp.referring_office)

    @workflow.update
    async def rematch(self, inp: RematchInput) -> Snapshot:
        await self._submitted()
        async with self._lock:
            self._refuse_if(
                self._stage_problem((Stage.ON_HOLD,), inp.actor, self._inp.referring_office)
                or self._expired_problem()
                or self._overdue(self._on_hold_until)
            )
            self._tried.clear()
            self._on_hold_until = None
            await self._transition(Stage.MATCHING, "matching", "rematch_requested")
            return self._snapshot()

    @rematch.validator
    def _validate_rematch(self, inp: RematchInput) -> None:
        self._require_stage(Stage.ON_HOLD)
        self._require_org(inp.actor, self._inp.referring_office)
        self._require_unexpired()
        self._require_in_time(self._on_hold_until)

    # ---- internals ------------------------------------------------------------

    async def _submitted(self) -> None:
        await workflow.wait_condition(lambda: self._version > 0)

    def _require_stage(self, *stages: Stage) -> None:
        if self._stage not in stages:
            allowed = ", ".join(s.value for s in stages)
            raise ValueError(f"not allowed in stage {self._stage.value} (needs: {allowed})")

    def _require_open(self) -> None:
        if self._stage not in OPEN_STAGES:
            raise ValueError(f"not allowed in stage {self._stage.value}: the referral has ended")

    def _require_in_time(self, due: datetime | None) -> None:
        # release 3: once a stage's deadline has passed, its timer ends the stage as soon as
        # it holds the lock, and no step may act first (as for the consent's validity)
        if self._deadlines_on and self._passed(due):
            raise ValueError("the deadline of this stage has passed")

    def _overdue(self, due: datetime | None) -> str | None:
        """The re-check under the lock of `_require_in_time` (it may ask the patch)."""
        if self._passed(due) and self._deadlines():
            return "the deadline of this stage has passed"
        return None

    def _decision_closing(self) -> datetime | None:
        """When an undecided referral closes with no decision (release 3)."""
        if self._decision_due is None:
            return None
        return self._decision_due + timedelta(seconds=self._inp.timings.decision_close)

    def _require_unexpired(self) -> None:
        problem = self._expired_problem()
        if problem is not None:
            raise ValueError(problem)

    # ---- the re-check under the lock: what the validator checked, on the state now ----------

    def _refuse_if(self, problem: str | None) -> None:
        """Refuse a step that lost a race while it waited for the lock (it changes nothing).

        Returns only when there is no problem, or when replaying a release-1 history that
        met one: the caller then goes on as release 1 did."""
        if problem is not None and workflow.patched(LOST_RACE_PATCH):
            workflow.logger.info("step refused under the lock: %s", problem)
            raise ApplicationError(LOST_RACE, type="StepRefused", non_retryable=True)

    def _stage_problem(
        self, stages: Collection[Stage], actor: Actor, *organisations: str | None
    ) -> str | None:
        if self._stage not in stages:
            return "the stage changed"
        if actor.organisation not in {org for org in organisations if org is not None}:
            return "the organisation may no longer take this step"
        return None

    def _expired_problem(self) -> str | None:
        # the main loop ends the referral as soon as it holds the lock: nothing may act first
        return "the consent's validity has ended" if self._consent_expired() else None

    def _open_problem(self, actor: Actor) -> str | None:
        return (
            self._stage_problem(OPEN_STAGES, actor, self._inp.referring_office, self._accepted)
            or self._expired_problem()
        )

    def _care_problem(self, stage: Stage, actor: Actor) -> str | None:
        return self._stage_problem((stage,), actor, self._accepted) or self._expired_problem()

    def _offer_problem(self, actor: Actor, attempt: int) -> str | None:
        if self._attempt != attempt:
            return "the offer ended"  # expired and re-routed, declined, or offered again
        return self._stage_problem((Stage.OFFERED,), actor, self._offered) or (
            self._expired_problem()
        )

    @staticmethod
    def _require_org(actor: Actor, *organisations: str | None) -> None:
        if actor.organisation not in {org for org in organisations if org is not None}:
            raise ValueError("this organisation may not take this step on this referral")

    def _consent_expired(self) -> bool:
        until = self._consent_valid_until
        return until is not None and workflow.now() >= until

    def _after(self, seconds: int) -> datetime:
        return workflow.now() + timedelta(seconds=seconds)

    @staticmethod
    def _remaining(until: datetime | None) -> timedelta:
        if until is None:
            return timedelta(0)
        return until - workflow.now()

    def _snapshot(self) -> Snapshot:
        return Snapshot(
            referral_id=self._inp.referral_id,
            stage=self._stage,
            status=fhir_status(self._stage, self._outcome),
            business_status=self._business,
            version=self._version,
            referring_office=self._inp.referring_office,
            offered_provider=self._offered,
            accepted_provider=self._accepted,
            providers_tried=tuple(self._tried),
            outcome=self._outcome,
            decision=self._decision,
            consent_id=self._consent_id,
            reporting_consent=self._reporting_consent,
            consent_deadline=self._consent_deadline,
            offer_expires_at=self._offer_expires_at,
            next_progress_report_due=self._next_report_due,
            decision_due=self._decision_due,
            purge_at=self._purge_at,
            updated_at=self._updated_at,
            intake_due=self._intake_due,
            on_hold_until=self._on_hold_until,
            care_purge_at=self._care_purge_at,
            office_purge_at=self._office_purge_at,
        )

    async def _transition(self, stage: Stage, business: str, reason: str) -> None:
        """Change state and project it into SQL (idempotent per version)."""
        self._stage = stage
        self._business = business
        self._reason = reason
        self._version += 1
        self._updated_at = workflow.now()
        await workflow.execute_activity_method(
            ReferralActivities.record_transition,
            TransitionInput(snapshot=self._snapshot(), reason=reason),
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            retry_policy=ACTIVITY_RETRY,
        )

    async def _notify(self, step: str, recipient: str, kind: NotificationKind) -> None:
        await workflow.execute_activity_method(
            ReferralActivities.notify,
            NotifyInput(
                key=f"{self._inp.referral_id}:{step}",
                referral_id=self._inp.referral_id,
                recipient=recipient,
                kind=kind,
            ),
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            retry_policy=ACTIVITY_RETRY,
        )

    async def _tell_justice(
        self, step: str, fact: ComplianceFact, *, needs_reporting_consent: bool = True
    ) -> None:
        """Send a compliance fact to the referring office, if it is entitled to it."""
        if needs_reporting_consent and not self._reporting_consent:
            return
        await workflow.execute_activity_method(
            ReferralActivities.report_to_justice,
            ComplianceReportInput(
                key=f"{self._inp.referral_id}:{step}",
                referral_id=self._inp.referral_id,
                recipient=self._inp.referring_office,
                fact=fact,
                needs_reporting_consent=needs_reporting_consent,
            ),
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            retry_policy=ACTIVITY_RETRY,
        )
