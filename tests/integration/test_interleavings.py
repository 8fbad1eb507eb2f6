"""Two parties act at once: every race of a step that ends or re-routes a referral
(withdrawal, consent expiry, offer expiry, cancel) with a party's step (accept, decline,
intake, progress, close, record consent, rematch, decision), in both orders.

The order is not left to luck. A test gate (tests/workflows/gates.py) holds one side
inside its activity, so it is half done and holds the case's lock, while the other side
arrives: a step over the real API, or a timer of the real Temporal dev server (short,
seconds). Only then is the gate opened. Each pair and order is one test id; all of them run
concurrently on one server and one gated worker, each on a fresh referral.

After each race:
- a withdrawal that answered 200 is final: no step that waited behind it succeeds, no later
  care step or consent succeeds, no care note is stored but those of a report the workflow
  took before it, no consent stays active, and no compliance fact is dated after it;
- the office receives "consent_withdrawn" exactly once if the withdrawal answered 200, and
  never otherwise;
- a step that lost the race is refused (409 when it reached the workflow's lock) and
  changed nothing; the referral reaches the ended stage its winner gives it (or goes on,
  re-routed or amended, where the race ends nothing);
- no workflow task ever failed (the history has no WorkflowTaskFailed event).

Pairs that cannot meet are in CANNOT_MEET with the reason; a test checks that every pair
is either run or explained there.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlmodel import Session, col, select
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from api.main import create_app
from services.access import Access
from services.lifecycle import OPEN_STAGES, CancelInput, Snapshot, Stage
from services.models import Consent, JusticeMessage, Referral, StatusHistory
from services.referrals import PROCESS_FACTS
from services.runtime import Runtime
from services.settings import Settings
from tests import factories as f
from tests.integration.journey import (
    CGG,
    CLINICAL_NOTE,
    FREE_CLINIC,
    OFFICE,
    WELFARE_NOTE,
    Journey,
    consent_body,
)
from tests.tokens import TokenMinter
from tests.workflows.gates import Gate, GatedActivities, Gates
from workflows.referral import ReferralWorkflow, workflow_id

pytestmark = pytest.mark.integration

FIRSTS = ("withdrawal", "consent_expiry", "offer_expiry", "cancel")
SECONDS = (
    "accept",
    "decline",
    "intake",
    "progress",
    "close",
    "record_consent",
    "rematch",
    "decision",
)

_ENDED_FIRST = "a decision needs the outcome reported, so the referral has ended; {} needs it open"
_AFTER_OFFER = (
    "the offer's timer runs only while offered; {} needs the offer accepted, which stops it"
)
CANNOT_MEET = {
    ("withdrawal", "decision"): _ENDED_FIRST.format("a withdrawal"),
    ("consent_expiry", "decision"): _ENDED_FIRST.format("the consent's expiry"),
    ("cancel", "decision"): _ENDED_FIRST.format("a cancel"),
    ("offer_expiry", "decision"): _ENDED_FIRST.format("an offer"),
    ("offer_expiry", "intake"): _AFTER_OFFER.format("an intake"),
    ("offer_expiry", "progress"): _AFTER_OFFER.format("a progress report"),
    ("offer_expiry", "close"): _AFTER_OFFER.format("a close"),
    ("offer_expiry", "rematch"): "rematch needs on_hold, which comes only after every offer ended",
}

# Short timers, with room for a loaded machine: the held side must be inside its activity
# before the timer of the other side fires.
SLA = 10  # seconds an offer stays open in the offer-expiry races
CONSENT_LEFT = 10.0  # seconds of validity left when a consent-expiry race starts (step held)
CONSENT_LEFT_SHORT = 5.0  # (expiry held: the amendment must still be valid when it lands)
# A timer race whose margin the machine could not keep did not happen as planned: it runs
# again on a fresh referral with margins this many times longer.
MARGINS = (1, 2)  # a held activity must let go within gates.HOLD_LIMIT


class TooSlow(Exception):
    """The timer fired before the other side was in place: the planned race did not happen."""


PARALLEL = 6  # referrals brought to their stage at once (the API's work is the load)

# Where each side is held: (activity, detail) as tests/workflows/gates.py matches it.
FIRST_GATE = {
    "withdrawal": ("withdraw_consent", None),  # before the stage changes
    "consent_expiry": ("record_transition", "consent_expired"),  # after it changed
    "offer_expiry": ("notify", "offer_expired"),  # before the stage changes
    "cancel": ("record_transition", "cancelled"),  # after it changed
}
SECOND_GATE = {
    "accept": ("record_transition", "offer_accepted"),
    "decline": ("record_transition", "declined"),
    "intake": ("record_transition", "intake"),
    "progress": ("record_transition", "progress_report"),
    "close": ("record_transition", "closed"),
    "record_consent": ("store_consent", None),  # before the stage changes
    "rematch": ("record_transition", "rematch_requested"),
}
UPDATE_NAME = {
    "withdrawal": "withdraw_consent",
    "cancel": "cancel",
    "accept": "accept",
    "decline": "decline",
    "intake": "record_intake",
    "progress": "report_progress",
    "close": "close",
    "record_consent": "record_consent",
    "rematch": "rematch",
}
# The stage the referral is brought to for the race, by second side (and first side).
STAGE_FOR = {
    "accept": Stage.OFFERED,
    "decline": Stage.OFFERED,
    "intake": Stage.ACCEPTED,
    "progress": Stage.IN_PROGRESS,
    "close": Stage.IN_PROGRESS,
    "rematch": Stage.ON_HOLD,
}


def _stage_for(first: str, second: str) -> Stage:
    if second == "record_consent":
        # the first consent races a cancel; an amendment races the others
        return {"cancel": Stage.AWAITING_CONSENT, "offer_expiry": Stage.OFFERED}.get(
            first, Stage.ACCEPTED
        )
    return STAGE_FOR[second]


@dataclass(frozen=True)
class Case:
    first: str
    second: str
    held: str  # the side held inside its activity while the other arrives

    @property
    def id(self) -> str:
        return f"{self.first}-x-{self.second}-hold-{self.held}"


CASES = [
    Case(first, second, held)
    for first in FIRSTS
    for second in SECONDS
    if (first, second) not in CANNOT_MEET
    for held in (first, second)
]


def test_every_pair_is_raced_or_explained() -> None:
    raced = {(c.first, c.second) for c in CASES}
    for pair in [(a, b) for a in FIRSTS for b in SECONDS]:
        assert (pair in raced) != (pair in CANNOT_MEET), pair
    assert len(CASES) == 2 * len(raced)


# ---- what each race must end in ---------------------------------------------------------


@dataclass(frozen=True)
class Expect:
    second: int | None  # 200, or None: refused (a 4xx that changes nothing)
    second_admitted: bool | None  # it passed its validator and waited for the lock
    first: int | None = 200  # for the steps sent over the API (withdrawal, cancel)
    end: str = "cancelled"  # cancelled | completed | accepted | rerouted | amended


def expected(case: Case) -> Expect:
    first, second = case.first, case.second
    if case.held == first:
        if first == "offer_expiry":
            # the offer is still there while its expiry is notified: the answer is admitted,
            # then finds the offer gone; an amended consent is fine in any open stage
            if second == "record_consent":
                return Expect(second=200, second_admitted=True, end="rerouted")
            return Expect(second=None, second_admitted=True, end="rerouted")
        if first == "withdrawal":
            return Expect(second=None, second_admitted=True)
        # cancel and expiry change the stage before their activity: the validator refuses
        return Expect(second=None, second_admitted=False)
    if first == "consent_expiry" and second in ("progress", "close"):
        # the workflow took the step before the consent's validity ended, but its care notes
        # reach the store after: they are refused, so the step answers 409 and stores none
        end = "completed" if second == "close" else "cancelled"
        return Expect(second=None, second_admitted=True, first=None, end=end)
    if second == "close":
        # the close ended care first: nothing is left to withdraw, cancel or expire
        return Expect(second=200, second_admitted=True, first=None, end="completed")
    if first == "offer_expiry":
        end = "accepted" if second == "accept" else "rerouted"
        return Expect(second=200, second_admitted=True, end=end)
    if first == "consent_expiry" and second == "record_consent":
        return Expect(second=200, second_admitted=True, end="amended")
    return Expect(second=200, second_admitted=True)


# ---- fixtures: a gated worker and API apps on their own task queue ----------------------


@dataclass
class Race:
    api: httpx.AsyncClient  # the API with the programme's timings
    short_offers: dict[int, httpx.AsyncClient]  # APIs whose offers expire after SLA x margin
    client: Any  # temporalio Client
    minter: TokenMinter
    gates: Gates
    engine: Any


@pytest.fixture(scope="module")
def race_executor() -> Iterator[ThreadPoolExecutor]:
    # held activities block their thread: more threads than held gates at once
    with ThreadPoolExecutor(max_workers=64) as executor:
        yield executor


@pytest.fixture(scope="module")
async def race(
    settings: Settings,
    runtime: Runtime,
    dev_server: WorkflowEnvironment,
    minter: TokenMinter,
    race_executor: ThreadPoolExecutor,
) -> AsyncIterator[Race]:
    queue = f"races-{uuid.uuid4()}"
    gates = Gates()
    activities = GatedActivities(
        engine=runtime.engine, shredder=runtime.vault, gatekeeper=runtime.gatekeeper, gates=gates
    )
    worker = Worker(
        dev_server.client,
        task_queue=queue,
        workflows=[ReferralWorkflow],
        activities=activities.all(),
        activity_executor=race_executor,
        max_concurrent_activities=64,
    )

    def app_with(**timings: int) -> httpx.AsyncClient:
        own = settings.model_copy(update={"temporal_task_queue": queue, **timings})
        app = create_app(
            own, runtime=dataclasses.replace(runtime, settings=own), temporal=dev_server.client
        )
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")

    async with worker:
        api = app_with()
        short = {
            m: app_with(acceptance_sla_seconds=SLA * m, acceptance_reminder_seconds=36000)
            for m in MARGINS
        }
        async with api, short[MARGINS[0]], short[MARGINS[1]]:
            yield Race(
                api=api,
                short_offers=short,
                client=dev_server.client,
                minter=minter,
                gates=gates,
                engine=runtime.engine,
            )


@pytest.fixture(scope="module")
async def runs(request: pytest.FixtureRequest, race: Race) -> AsyncIterator[dict[str, Any]]:
    """Start every selected race at once; each test awaits its own."""
    module = sys.modules[__name__]
    selected = [
        item.callspec.params["case"]
        for item in request.session.items
        if getattr(item, "module", None) is module and hasattr(item, "callspec")
    ]
    limit = asyncio.Semaphore(PARALLEL)

    async def one(case: Case) -> None:
        for margin in MARGINS:
            try:
                await run_race(race, case, limit, margin)
                return
            except TooSlow as slow:
                problem = slow
        raise AssertionError(f"even with {MARGINS[-1]} times the margins: {problem}")

    tasks = {case.id: asyncio.ensure_future(one(case)) for case in selected}
    yield tasks
    for task in tasks.values():
        task.cancel()
    await asyncio.gather(*tasks.values(), return_exceptions=True)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
async def test_interleaving(runs: dict[str, Any], case: Case) -> None:
    await runs[case.id]


# ---- one race ---------------------------------------------------------------------------

Handle = WorkflowHandle[ReferralWorkflow, Snapshot]


def _second_request(second: str) -> tuple[tuple[str, str], str, Any]:
    return {
        "accept": (CGG, "accept", None),
        "decline": (CGG, "decline", {"reason": "no_capacity"}),
        "intake": (CGG, "intake", {"intake_date": datetime.now(UTC).isoformat()}),
        "progress": (
            CGG,
            "progress",
            {
                "attendance": "attending",
                "clinical_note": CLINICAL_NOTE,
                "welfare_note": WELFARE_NOTE,
            },
        ),
        "close": (CGG, "close", {"outcome": "completed", "clinical_note": CLINICAL_NOTE}),
        "record_consent": (OFFICE, "consent", consent_body()),
        "rematch": (OFFICE, "rematch", None),
    }[second]


def _first_request(first: str) -> tuple[tuple[str, str], str, Any]:
    return {
        "withdrawal": (OFFICE, "consent/withdraw", None),
        "cancel": (OFFICE, "cancel", None),
    }[first]


def _projected_version(engine: Any, rid: str) -> int:
    with Session(engine) as s:
        return s.get_one(Referral, uuid.UUID(rid)).version


async def _until(
    handle: Handle, ok: Callable[[Snapshot], bool], what: str, engine: Any = None
) -> Snapshot:
    """Until the workflow's state is `ok` (and, with `engine`, projected: the API reads that)."""
    deadline = time.monotonic() + 45
    while True:
        snap = await handle.query(ReferralWorkflow.status)
        rid = handle.id.removeprefix("referral-")
        if ok(snap) and (engine is None or _projected_version(engine, rid) >= snap.version):
            return snap
        if time.monotonic() > deadline:
            raise AssertionError(f"never {what}: {snap.stage} {snap.business_status}")
        await asyncio.sleep(0.2)


async def _history_events(handle: Handle) -> list[Any]:
    return list((await handle.fetch_history()).events)


async def _admitted(handle: Handle, update: str) -> int:
    """How many Updates of this name the workflow accepted (passed their validator)."""
    return sum(
        1
        for e in await _history_events(handle)
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED
        and e.workflow_execution_update_accepted_event_attributes.accepted_request.input.name
        == update
    )


async def _arrived(handle: Handle, update: str, before: int, sent: asyncio.Future[Any]) -> None:
    """Wait until a sent step is answered (refused at once) or waits inside the workflow."""
    deadline = time.monotonic() + 30
    while not sent.done() and await _admitted(handle, update) <= before:
        if time.monotonic() > deadline:
            raise AssertionError(f"{update} neither answered nor admitted")
        await asyncio.sleep(0.2)


async def _to_stage(
    j: Journey, handle_of: Callable[[], Handle], stage: Stage, engine: Any
) -> Handle:
    """Create the referral over the API, then take it to `stage` with the same Updates the
    API sends (straight to the workflow: the races are what goes over the API)."""
    await j.create()
    handle = handle_of()
    if stage is Stage.AWAITING_CONSENT:
        return handle
    await handle.execute_update(ReferralWorkflow.record_consent, f.consent())
    await _until(handle, lambda s: s.stage is Stage.OFFERED, "offered", engine)
    if stage is Stage.OFFERED:
        return handle
    if stage is Stage.ON_HOLD:
        await handle.execute_update(ReferralWorkflow.decline, f.decline(f.CGG))
        await _until(
            handle,
            lambda s: s.stage is Stage.OFFERED and s.offered_provider == FREE_CLINIC[0],
            "offered to the second provider",
        )
        await handle.execute_update(ReferralWorkflow.decline, f.decline(f.FREE_CLINIC))
        await _until(handle, lambda s: s.stage is Stage.ON_HOLD, "on hold", engine)
        return handle
    await handle.execute_update(ReferralWorkflow.accept, f.accept(f.CGG))
    if stage is Stage.IN_PROGRESS:
        await handle.execute_update(ReferralWorkflow.record_intake, f.intake(f.CGG))
    return handle


async def _held(gate: Gate, sent: Any, timer_race: bool = False) -> None:
    """Until the gate holds its side; a step answered without reaching it fails the race."""
    deadline = time.monotonic() + 90  # an offer-expiry side waits for its SLA
    while not gate.entered.is_set():
        if sent is not None and sent.done():
            resp = sent.result()
            failure = TooSlow if timer_race else AssertionError
            raise failure(f"answered {resp.status_code} before it was held: {resp.text}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{gate.activity} ({gate.match}) was never held")
        await asyncio.sleep(0.02)


async def _expire_consent_in(handle: Handle, seconds: float) -> datetime:
    """Amend the consent so that its validity ends `seconds` from now."""
    until = datetime.now(UTC) + timedelta(seconds=seconds)
    try:
        await handle.execute_update(ReferralWorkflow.record_consent, f.consent(valid_until=until))
    except WorkflowUpdateFailedError as exc:  # it landed after `until`: refused, rightly
        raise TooSlow("the amended consent had expired when it arrived") from exc
    return until


async def _sleep_until(moment: datetime) -> None:
    await asyncio.sleep(max(0.0, (moment - datetime.now(UTC)).total_seconds()))


def _post(race: Race, api: httpx.AsyncClient, rid: str, request: tuple[Any, str, Any]) -> Any:
    party, path, body = request
    return asyncio.ensure_future(
        api.post(f"/api/v1/referrals/{rid}/{path}", json=body, headers=race.minter.headers(*party))
    )


async def run_race(race: Race, case: Case, setups: asyncio.Semaphore, margin: int) -> None:
    api = race.short_offers[margin] if case.first == "offer_expiry" else race.api
    j = Journey(api, race.minter)

    def handle_of() -> Handle:
        return race.client.get_workflow_handle_for(ReferralWorkflow.run, workflow_id(j.id))

    async with setups:  # the races themselves mostly wait: only the setups are throttled
        handle = await _to_stage(j, handle_of, _stage_for(case.first, case.second), race.engine)
    rid = uuid.UUID(str(j.id))
    second_update = UPDATE_NAME[case.second]
    try:
        second_sent, first_sent, before = await _interleave(race, case, handle, api, margin)
    finally:
        race.gates.open_all(rid)  # a race that failed half-way leaves no activity held

    second = await second_sent
    first = await first_sent if first_sent is not None else None
    admitted = await _admitted(handle, second_update) > before
    assert not race.gates.timed_out(rid), "a gate let go by itself: the race was not controlled"
    await check(race, case, handle, rid, j, first, second, admitted)


async def _interleave(
    race: Race, case: Case, handle: Handle, api: httpx.AsyncClient, margin: int
) -> tuple[Any, Any, int]:
    """Hold one side inside its activity, let the other arrive, open the gate."""
    rid = uuid.UUID(handle.id.removeprefix("referral-"))
    second_update = UPDATE_NAME[case.second]
    first_sent: Any = None
    if case.held == case.first:
        gate = race.gates.hold(rid, *FIRST_GATE[case.first])
        if case.first == "consent_expiry":
            await _expire_consent_in(handle, CONSENT_LEFT_SHORT * margin)
        elif case.first in ("withdrawal", "cancel"):
            first_sent = _post(race, api, str(rid), _first_request(case.first))
        await _held(gate, first_sent)
        before = await _admitted(handle, second_update)
        second_sent = _post(race, api, str(rid), _second_request(case.second))
        await _arrived(handle, second_update, before, second_sent)
    else:
        expires: datetime | None = None
        if case.first == "consent_expiry":
            expires = await _expire_consent_in(handle, CONSENT_LEFT * margin)
        elif case.first == "offer_expiry":
            expires = (await handle.query(ReferralWorkflow.status)).offer_expires_at
        before = await _admitted(handle, second_update)
        gate = race.gates.hold(rid, *SECOND_GATE[case.second])
        second_sent = _post(race, api, str(rid), _second_request(case.second))
        await _held(gate, second_sent, timer_race=expires is not None)
        if expires is not None:
            if datetime.now(UTC) >= expires:
                raise TooSlow("the timer fired before the step was held")
            await _sleep_until(expires + timedelta(seconds=1))  # the timer fires meanwhile
        else:
            first_update = UPDATE_NAME[case.first]
            before_first = await _admitted(handle, first_update)
            first_sent = _post(race, api, str(rid), _first_request(case.first))
            await _arrived(handle, first_update, before_first, first_sent)
            if case.first == "withdrawal":
                # The step took the lock first, so the whole step goes first: its care
                # notes reach the store while the consent still stands. The withdrawal is
                # held in its own activity until the step has answered (the other order,
                # notes that reach the store after the withdrawal, is raced on its own in
                # test_notes_that_reach_the_store_after_a_withdrawal_are_refused).
                withdrawal = race.gates.hold(rid, *FIRST_GATE["withdrawal"])
                gate.open()
                await asyncio.wait([second_sent])
                withdrawal.open()
                return second_sent, first_sent, before
    gate.open()
    return second_sent, first_sent, before


# ---- the invariants ---------------------------------------------------------------------


def _facts(race: Race, rid: uuid.UUID) -> list[JusticeMessage]:
    with Session(race.engine) as s:
        return list(
            s.exec(
                select(JusticeMessage)
                .where(JusticeMessage.referral_id == rid)
                .order_by(col(JusticeMessage.created_at))
            ).all()
        )


def _consents(race: Race, rid: uuid.UUID) -> list[Consent]:
    with Session(race.engine) as s:
        return list(s.exec(select(Consent).where(Consent.referral_id == rid)).all())


def _notes(race: Race, rid: uuid.UUID) -> set[str]:
    with Session(race.engine) as s:
        personal = s.get_one(Referral, rid).personal
    return set(personal) & {"clinical.note", "welfare.note"}


def _stages(race: Race, rid: uuid.UUID) -> list[str]:
    with Session(race.engine) as s:
        return list(
            s.exec(
                select(StatusHistory.stage)
                .where(StatusHistory.referral_id == rid)
                .order_by(col(StatusHistory.version))
            ).all()
        )


def _refused(resp: httpx.Response) -> bool:
    return resp.status_code in (403, 404, 409)


async def check(
    race: Race,
    case: Case,
    handle: Handle,
    rid: uuid.UUID,
    j: Journey,
    first: httpx.Response | None,
    second: httpx.Response,
    admitted: bool,
) -> None:
    want = expected(case)
    if want.second == 200:
        assert second.status_code == 200, second.text
    elif want.second_admitted:
        # it passed its validator and waited for the lock: the workflow refused it there
        assert second.status_code == 409, second.text
    else:
        assert _refused(second), second.text
    assert admitted is want.second_admitted, f"admitted={admitted}"
    if first is not None:
        if want.first == 200:
            assert first.status_code == 200, first.text
        else:
            assert _refused(first), first.text

    snap: Snapshot
    if want.end in ("cancelled", "completed"):
        snap = await _until(handle, lambda s: s.stage is Stage.OUTCOME_REPORTED, "ended")
        assert snap.outcome is Stage(want.end), snap.outcome
    elif want.end == "accepted":
        await asyncio.sleep(1)
        snap = await handle.query(ReferralWorkflow.status)
        assert snap.stage is Stage.ACCEPTED and snap.accepted_provider == CGG[0], snap
    elif want.end == "rerouted":
        snap = await _until(
            handle, lambda s: CGG[0] in s.providers_tried, "re-routed after the offer expired"
        )
        assert snap.accepted_provider is None and snap.stage in (
            Stage.MATCHING,
            Stage.OFFERED,
            Stage.ON_HOLD,
        ), snap
    else:  # amended: the new validity wins over the old one's expiry
        await asyncio.sleep(1)
        snap = await handle.query(ReferralWorkflow.status)
        assert snap.stage is Stage.ACCEPTED, snap

    # an ended referral is never revived: no open stage follows an ended one
    stages = _stages(race, rid)
    open_values = {st.value for st in OPEN_STAGES}
    ended_at = next((i for i, st in enumerate(stages) if st not in open_values), len(stages))
    assert not [st for st in stages[ended_at:] if st in open_values], stages

    withdrawn = case.first == "withdrawal" and first is not None and first.status_code == 200
    facts = _facts(race, rid)
    names = [m.fact for m in facts]
    assert names.count("consent_withdrawn") == (1 if withdrawn else 0), names
    expired = case.first == "consent_expiry" and want.end == "cancelled"
    assert names.count("consent_expired") == (1 if expired else 0), names

    notes = _notes(race, rid)
    if case.second in ("progress", "close") and second.status_code == 200:
        assert "clinical.note" in notes, notes
    else:
        assert not notes, notes

    if withdrawn:
        consents = _consents(race, rid)
        assert not [c for c in consents if c.status == "active"], (
            "a consent outlived the withdrawal"
        )
        at = min(c.withdrawn_at for c in consents if c.withdrawn_at is not None)
        late = [
            (m.fact, m.created_at)
            for m in facts
            if m.fact not in PROCESS_FACTS and m.created_at > at
        ]
        assert not late, late
        # later steps: no care step, no note, no consent after a withdrawal that answered 200
        _, path, body = _second_request("progress")
        resp = await race.api.post(
            f"/api/v1/referrals/{rid}/{path}", json=body, headers=race.minter.headers(*CGG)
        )
        assert _refused(resp), resp.text
        resp = await race.api.post(
            f"/api/v1/referrals/{rid}/consent",
            json=consent_body(),
            headers=race.minter.headers(*OFFICE),
        )
        assert _refused(resp), resp.text
        assert _notes(race, rid) == notes

    if snap.stage is not Stage.OUTCOME_REPORTED:
        # a race that ended nothing leaves a live referral: it still answers and can end
        await handle.execute_update(ReferralWorkflow.cancel, CancelInput(actor=f.OFFICE))
        await _until(handle, lambda s: s.stage is Stage.OUTCOME_REPORTED, "ended after cancel")

    failed = [
        e.event_id
        for e in await _history_events(handle)
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED
    ]
    assert not failed, f"workflow task failed at events {failed}"


async def test_notes_that_reach_the_store_after_a_withdrawal_are_refused(
    race: Race, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other order of a progress report and a withdrawal: the workflow took the report
    first, but the withdrawal takes effect before the report's care notes reach the store.
    The API is held between the two (after the Update answered, before it stores), the
    withdrawal runs through, then the API goes on: the notes are refused (409, stored
    nowhere) and the withdrawal stands."""
    j = Journey(race.api, race.minter)

    def handle_of() -> Handle:
        return race.client.get_workflow_handle_for(ReferralWorkflow.run, workflow_id(j.id))

    handle = await _to_stage(j, handle_of, Stage.IN_PROGRESS, race.engine)
    rid = uuid.UUID(str(j.id))

    entered, release = threading.Event(), threading.Event()
    armed = [True]
    finish_with = Access.finish_with

    def held_finish_with(self: Access, write: Any) -> Any:
        if self.referral_id == rid and armed[0]:
            armed[0] = False
            entered.set()
            release.wait(25)
        return finish_with(self, write)

    monkeypatch.setattr(Access, "finish_with", held_finish_with)
    progress = _post(race, race.api, str(rid), _second_request("progress"))
    try:
        deadline = time.monotonic() + 30
        while not entered.is_set():
            assert not progress.done(), progress.result().text
            assert time.monotonic() < deadline, "the report never reached the store"
            await asyncio.sleep(0.02)
        assert _stages(race, rid)[-1] == "in_progress"  # the workflow took the report
        withdrawal = _post(race, race.api, str(rid), _first_request("withdrawal"))
        while not [c for c in _consents(race, rid) if c.withdrawn_at is not None]:
            assert not withdrawal.done(), withdrawal.result().text
            assert time.monotonic() < deadline + 30, "the withdrawal never took effect"
            await asyncio.sleep(0.05)
    finally:
        release.set()
    report, withdrawn = await progress, await withdrawal

    assert withdrawn.status_code == 200, withdrawn.text
    assert report.status_code == 409, report.text
    assert report.headers["content-type"] == "application/problem+json"
    assert "not recorded" in report.json()["detail"]
    assert not _notes(race, rid)
    snap = await _until(handle, lambda s: s.stage is Stage.OUTCOME_REPORTED, "ended")
    assert snap.outcome is Stage.CANCELLED, snap.outcome
    assert [m.fact for m in _facts(race, rid)].count("consent_withdrawn") == 1
