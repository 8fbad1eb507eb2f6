"""A test gate inside the referral activities: hold one activity call of one referral until
the test releases it, so a second party's step arrives while the first is half done.

The workflow holds its lock while it waits for an activity, so a step held here is exactly
"in flight": its validator has passed and it has taken the lock, and whatever arrives now
is validated against the state it left and then waits for the lock behind it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from uuid import UUID

from sqlalchemy import Engine
from temporalio import activity

from services.access import Gatekeeper
from services.lifecycle import (
    ComplianceReportInput,
    ComplianceReportResult,
    ConsentStoreInput,
    ConsentWithdrawStoreInput,
    EmptyResult,
    NotifyInput,
    NotifyResult,
    TransitionInput,
    TransitionResult,
)
from workflows.activities import ReferralActivities, Shredder

# Shorter than the workflow's 30 s start-to-close timeout: a forgotten gate lets go
# before Temporal would retry the activity.
HOLD_LIMIT = 25.0


@dataclass
class Gate:
    """Holds the first call of `activity` for one referral whose detail matches."""

    referral_id: UUID
    activity: str
    match: str | None
    entered: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    timed_out: bool = False

    async def wait_entered(self, timeout: float = 30.0) -> None:
        """Wait (without a thread) until the gated call is held."""
        deadline = time.monotonic() + timeout
        while not self.entered.is_set():
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.activity} ({self.match or 'any'}) was never called while gated"
                )
            await asyncio.sleep(0.02)

    def open(self) -> None:
        self.release.set()


class Gates:
    """The gates of one test run, shared with the worker's activities."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: list[Gate] = []
        self._all: list[Gate] = []

    def hold(self, referral_id: UUID, activity_name: str, match: str | None = None) -> Gate:
        gate = Gate(referral_id=referral_id, activity=activity_name, match=match)
        with self._lock:
            self._waiting.append(gate)
            self._all.append(gate)
        return gate

    def open_all(self, referral_id: UUID) -> None:
        """Open every gate of a referral (also those never reached) and forget them."""
        with self._lock:
            mine = [g for g in self._all if g.referral_id == referral_id]
            self._waiting = [g for g in self._waiting if g.referral_id != referral_id]
        for gate in mine:
            gate.open()

    def timed_out(self, referral_id: UUID) -> bool:
        """Whether a gate of this referral let go by itself (the test lost control)."""
        with self._lock:
            return any(g.timed_out for g in self._all if g.referral_id == referral_id)

    def passing(self, referral_id: UUID, activity_name: str, detail: str | None) -> None:
        """Called by an activity before its work: blocks while a matching gate is closed."""
        with self._lock:
            gate = next(
                (
                    g
                    for g in self._waiting
                    if g.referral_id == referral_id
                    and g.activity == activity_name
                    and (g.match is None or g.match == detail)
                ),
                None,
            )
            if gate is not None:
                self._waiting.remove(gate)
        if gate is None:
            return
        gate.entered.set()
        if not gate.release.wait(HOLD_LIMIT):
            gate.timed_out = True


class GatedActivities(ReferralActivities):
    """ReferralActivities whose state-changing calls pass through the test's gates first."""

    def __init__(
        self, *, engine: Engine, shredder: Shredder, gatekeeper: Gatekeeper, gates: Gates
    ) -> None:
        super().__init__(engine=engine, shredder=shredder, gatekeeper=gatekeeper)
        self._gates = gates

    @activity.defn(name="record_transition")
    def record_transition(self, inp: TransitionInput) -> TransitionResult:
        self._gates.passing(inp.snapshot.referral_id, "record_transition", inp.reason)
        return super().record_transition(inp)

    @activity.defn(name="notify")
    def notify(self, inp: NotifyInput) -> NotifyResult:
        self._gates.passing(inp.referral_id, "notify", inp.kind.value)
        return super().notify(inp)

    @activity.defn(name="report_to_justice")
    def report_to_justice(self, inp: ComplianceReportInput) -> ComplianceReportResult:
        self._gates.passing(inp.referral_id, "report_to_justice", inp.fact.value)
        return super().report_to_justice(inp)

    @activity.defn(name="store_consent")
    def store_consent(self, inp: ConsentStoreInput) -> EmptyResult:
        self._gates.passing(inp.referral_id, "store_consent", None)
        return super().store_consent(inp)

    @activity.defn(name="withdraw_consent")
    def withdraw_consent(self, inp: ConsentWithdrawStoreInput) -> EmptyResult:
        self._gates.passing(inp.referral_id, "withdraw_consent", None)
        return super().withdraw_consent(inp)
