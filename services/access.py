"""Every access decision in one place: Cedar decides, the audit log records, allow or deny.

One access, one audit entry (IHE BALP): a request opens an `Access`, its decisions and
disclosures fill it, and `finish` writes one entry with the decision, the deciding policies,
the categories disclosed and withheld, and the outcome. The entry is committed before the
answer leaves; a refused or failed access is recorded too.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Protocol, TypeVar
from uuid import UUID

from sqlalchemy import Engine, update
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col

from services import policy
from services.audit.log import AuditLog
from services.audit.models import (
    AuditDecision,
    AuditEvent,
    AuditEventType,
    AuditOutcome,
    person_tag,
    pseudonymise_referral,
)
from services.audit.purpose import PurposeOfUse
from services.crypto.errors import DecryptionError
from services.crypto.payload_keys import ReferralPayloadKeys
from services.errors import DomainError
from services.models import JusticeMessage, utcnow
from services.principal import Principal

T = TypeVar("T")
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RequestContext:
    """Correlation ids of the request being served (no personal data)."""

    request_id: str | None = None
    trace_id: str | None = None
    # the client's network address (ATNA NetworkAccessPointID), None for the engine's steps
    client_address: str | None = None


def outcome_of(error: BaseException | None, decision: AuditDecision | None = None) -> AuditOutcome:
    """The outcome of an access that ended with `error` (None: it succeeded). A permitted
    access that then did not take effect (a 409 after the permit) failed: it was not refused."""
    if error is None:
        return AuditOutcome.SUCCESS
    if decision is AuditDecision.PERMIT:
        return AuditOutcome.FAILED
    if isinstance(error, DomainError) and error.status < 500:
        return AuditOutcome.REFUSED
    return AuditOutcome.FAILED


@dataclass
class Access:
    """One access being served: what was decided and disclosed, written once by `finish`."""

    gatekeeper: Gatekeeper
    principal: Principal
    event_type: AuditEventType
    action: str
    purpose: str
    ctx: RequestContext
    referral_id: UUID | None = None
    decision: AuditDecision | None = None
    policy_ids: set[str] = field(default_factory=set)
    disclosed: list[str] = field(default_factory=list)
    withheld: list[str] = field(default_factory=list)
    finished: bool = False
    # the person's tag (`person_tag`), found from the referral when the entry is written; an
    # access that concerns no single referral names no person
    person_pseudonym: str | None = None
    # messages of the channel to justice this access showed their recipient (keys), and the
    # categories they carry: the first showing is recorded as their receipt
    received: list[str] = field(default_factory=list)
    received_categories: list[str] = field(default_factory=list)

    def decide(
        self,
        *,
        action: policy.Action,
        case: policy.CaseFacts | None,
        consent: policy.ConsentFacts | None,
    ) -> policy.Decision:
        """Authorise `action`; the first decision is the access's, later ones add policies."""
        decision = policy.authorize(self.principal, action, case, consent)
        if self.decision is None:
            self.decision = AuditDecision.PERMIT if decision.allowed else AuditDecision.DENY
        self.policy_ids.update(decision.policy_ids)
        return decision

    def disclosures(
        self, *, case: policy.CaseFacts, consent: policy.ConsentFacts | None
    ) -> dict[policy.DataCategory, policy.Decision]:
        """Per-category disclosure decisions; the denied ones are recorded as withheld."""
        decisions = policy.disclosable_categories(self.principal, case, consent)
        for category, decision in decisions.items():
            self.policy_ids.update(decision.policy_ids)
            if not decision.allowed and category.value not in self.withheld:
                self.withheld.append(category.value)
        return decisions

    def decide_each(
        self,
        *,
        action: policy.Action,
        cases: Sequence[tuple[policy.CaseFacts, policy.ConsentFacts | None]],
    ) -> list[policy.Decision]:
        """`action` decided on each row of a list, as `decide` decides it on one referral;
        the rows' policies join this access's entry (the list is one access)."""
        decided = policy.authorize_each(self.principal, action, cases)
        for decision in decided:
            self.policy_ids.update(decision.policy_ids)
        return decided

    def disclosures_each(
        self, *, cases: Sequence[tuple[policy.CaseFacts, policy.ConsentFacts | None]]
    ) -> list[dict[policy.DataCategory, policy.Decision]]:
        """The disclosure decisions of each row of a list, as `disclosures` takes them for
        one referral; a category withheld on any row is recorded as withheld."""
        decided = policy.disclosable_categories_each(self.principal, cases)
        for row in decided:
            for category, decision in row.items():
                self.policy_ids.update(decision.policy_ids)
                if not decision.allowed and category.value not in self.withheld:
                    self.withheld.append(category.value)
        return decided

    def decided(self, decision: policy.Decision) -> None:
        """Adopt a decision taken elsewhere (e.g. at send time on the justice channel)."""
        if self.decision is None:
            self.decision = AuditDecision.PERMIT if decision.allowed else AuditDecision.DENY
        self.policy_ids.update(decision.policy_ids)

    def disclose(self, categories: Iterable[str]) -> None:
        """Record categories the answer (or the stored state) carries."""
        for category in categories:
            if category not in self.disclosed:
                self.disclosed.append(category)

    def receive(self, keys: Iterable[str], categories: Iterable[str]) -> None:
        """Record that the answer shows these messages of the channel to justice."""
        for key in keys:
            if key not in self.received:
                self.received.append(key)
        for category in categories:
            if category not in self.received_categories:
                self.received_categories.append(category)

    def receipt(self, messages: int) -> AuditEvent:
        """The entry of the first receipt of `messages` channel messages (IHE BALP: privacy
        disclosure at the recipient), beside the access's own entry."""
        return self.event(AuditOutcome.SUCCESS).model_copy(
            update={
                "event_type": AuditEventType.DISCLOSURE_RECIPIENT,
                "action": f"justice_channel.receive.{min(messages, 999)}",
                "categories": tuple(self.received_categories),
                "withheld": (),
                "purpose_of_use": PurposeOfUse.JUSTFUP.value,
            }
        )

    def _events(self, outcome: AuditOutcome, first_received: int) -> list[AuditEvent]:
        events = [self.event(outcome)]
        if outcome is AuditOutcome.SUCCESS and first_received:
            events.append(self.receipt(first_received))
        return events

    def _mark_received(self, session: Session) -> int:
        """Note the first receipt of the messages shown; how many were new (a concurrent
        reader that noted them first leaves none: one receipt per message)."""
        if not self.received:
            return 0
        marked = session.execute(
            update(JusticeMessage)
            .where(col(JusticeMessage.key).in_(self.received))
            .where(col(JusticeMessage.received_at).is_(None))
            .values(received_at=utcnow())
        )
        return int(getattr(marked, "rowcount", 0) or 0)

    def event(self, outcome: AuditOutcome) -> AuditEvent:
        """The one audit event of this access."""
        principal = self.principal
        return AuditEvent(
            event_type=self.event_type,
            actor_subject=principal.subject,
            actor_organisation=principal.organisation,
            actor_role=",".join(sorted(r.value for r in principal.roles))[:64] or "none",
            action=self.action,
            referral_pseudonym=self.gatekeeper.pseudonym(self.referral_id),
            person_pseudonym=self.person_pseudonym,
            # nothing is disclosed by an access that did not succeed
            categories=tuple(self.disclosed) if outcome is AuditOutcome.SUCCESS else (),
            decision=self.decision,
            policy_ids=tuple(sorted(self.policy_ids)),
            purpose_of_use=self.purpose,
            request_id=self.ctx.request_id,
            trace_id=self.ctx.trace_id,
            outcome=outcome,
            withheld=tuple(self.withheld),
            source_node=self.gatekeeper.source_node,
            client_address=self.ctx.client_address,
        )

    def finish(self, outcome: AuditOutcome = AuditOutcome.SUCCESS) -> None:
        """Write the access's one entry (blocking; committed when this returns)."""
        self.gatekeeper.finish_together([(self, outcome)])

    def finish_with(self, write: Callable[[Session], T]) -> T:
        """Store `write`'s state and this access's entry in one transaction (blocking)."""
        if self.finished:
            raise RuntimeError("this access has already been recorded")

        def write_and_mark(session: Session) -> tuple[T, int]:
            result = write(session)
            if self.person_pseudonym is None:
                # a referral this transaction creates is not yet visible to other connections
                self.person_pseudonym = self.gatekeeper.person_tag(self.referral_id, session)
            return result, self._mark_received(session)

        result, _ = self.gatekeeper.audit.append_with(
            write_and_mark, lambda done: self._events(AuditOutcome.SUCCESS, done[1])
        )
        self.finished = True
        return result

    def abandon(self, error: BaseException) -> None:
        """Record an access that ended with `error`, unless it was recorded already."""
        if not self.finished:
            self.finish(outcome_of(error, self.decision))


class Gatekeeper:
    """Asks the policies and writes one audit entry per access, whatever the decision.

    `pseudonym_key`: the key ring's audit pseudonym key (`KeyRing.audit_pseudonym_key`),
    never the rotating pseudonym key: entries are immutable and must keep linking.
    `source_node`: this process's node id in every entry (ATNA AuditSourceID). `engine`: where
    the referrals' payload keys are read to tag the person an entry concerns (`person_tag`),
    the audit writer's own, so that recording an access never waits for a request connection;
    `payload_keys`: those keys (None, or no engine: entries name no person).
    """

    def __init__(
        self,
        *,
        audit: AuditLog,
        pseudonym_key: bytes,
        source_node: str | None = None,
        engine: Engine | None = None,
        payload_keys: ReferralPayloadKeys | None = None,
        batch_window_seconds: float = 0.0,
    ) -> None:
        self.audit = audit
        self._pseudonym_key = pseudonym_key
        self.source_node = source_node or socket.gethostname() or "unknown"
        self._engine = engine
        self._payload_keys = payload_keys
        # the entries of accesses served on the event loop (`AccessWriter`; the API swaps in
        # `services.access_process.ProcessAccessWriter`, REFERRAL_AUDIT_ACCESS_WRITER=process)
        self.writer: EntryWriter = AccessWriter(self, window_seconds=batch_window_seconds)

    def pseudonym(self, referral_id: UUID | None) -> str | None:
        """The audit pseudonym of a referral (keyed HMAC), or None."""
        if referral_id is None:
            return None
        return pseudonymise_referral(referral_id, self._pseudonym_key)

    def person_tag(self, referral_id: UUID | None, session: Session | None = None) -> str | None:
        """The person field of an entry about this referral: its tag under the referral's own
        payload key (`person_tag`), or None when there is no referral, no key (never made, or
        destroyed by the purge) or nowhere to read it. `session`: read in that transaction
        (one that creates the referral, or purges it before its key goes); else on the audit
        writer's pool, or from the payload keys' cache (blocking)."""
        keys = self._payload_keys
        if referral_id is None or keys is None:
            return None
        try:
            if session is not None:
                state = keys.state_in(session=session, referral_id=referral_id)
            elif self._engine is not None:
                state = keys.state(referral_id, engine=self._engine)
            else:
                return None
        except (SQLAlchemyError, DecryptionError) as error:
            # the entry is written all the same, naming the referral (the person is found
            # through it later); an access is never left unrecorded for want of its person
            logger.warning("person of a referral not tagged in its entry: %s", type(error).__name__)
            return None
        if state.key is None:
            return None
        return person_tag(referral_id, state.key)

    def finish_together(self, finished: Sequence[tuple[Access, AuditOutcome]]) -> None:
        """Write the entries of accesses not yet recorded (`Access.finish`: one), in ONE
        transaction of the audit writer (blocking; all committed, or none and it raises)."""
        pending = [(access, outcome) for access, outcome in finished if not access.finished]
        if not pending:
            return
        for access, _ in pending:
            if access.person_pseudonym is None:
                # before the audit writer's transaction, on the audit writer's own pool
                access.person_pseudonym = self.person_tag(access.referral_id)

        def events(first: Sequence[int]) -> list[AuditEvent]:
            return [
                event
                for (access, outcome), new in zip(pending, first, strict=True)
                for event in access._events(outcome, new)
            ]

        if any(access.received and outcome is AuditOutcome.SUCCESS for access, outcome in pending):
            # the first receipt of what the channel to justice showed, noted with the entries
            def mark_received(session: Session) -> list[int]:
                return [
                    access._mark_received(session) if outcome is AuditOutcome.SUCCESS else 0
                    for access, outcome in pending
                ]

            self.audit.append_with(mark_received, events)
        else:
            # nothing to note: the log's group commit joins these with other threads' entries
            self.audit.record(events([0] * len(pending)))
        for access, _ in pending:
            access.finished = True

    def close(self) -> None:
        """Stop the event loop's writer (what it holds is written first)."""
        self.writer.close()

    def open(
        self,
        *,
        principal: Principal,
        event_type: AuditEventType,
        action: str,
        purpose: str,
        ctx: RequestContext,
        referral_id: UUID | None = None,
    ) -> Access:
        """A new access; its owner must `finish` (or `abandon`) it before answering."""
        return Access(
            gatekeeper=self,
            principal=principal,
            event_type=event_type,
            action=action,
            purpose=purpose,
            ctx=ctx,
            referral_id=referral_id,
        )

    @contextmanager
    def access(
        self,
        *,
        principal: Principal,
        event_type: AuditEventType,
        action: str,
        purpose: str,
        ctx: RequestContext,
        referral_id: UUID | None = None,
    ) -> Iterator[Access]:
        """An access recorded when the block ends: success, refused (4xx) or failed."""
        record = self.open(
            principal=principal,
            event_type=event_type,
            action=action,
            purpose=purpose,
            ctx=ctx,
            referral_id=referral_id,
        )
        try:
            yield record
        except BaseException as error:
            record.abandon(error)
            raise
        record.finish()

    @asynccontextmanager
    async def access_async(
        self,
        *,
        principal: Principal,
        event_type: AuditEventType,
        action: str,
        purpose: str,
        ctx: RequestContext,
        referral_id: UUID | None = None,
    ) -> AsyncIterator[Access]:
        """`access` for a block that awaits; the entry is written off the event loop, by the
        access writer, and committed before the block's result is returned."""
        record = self.open(
            principal=principal,
            event_type=event_type,
            action=action,
            purpose=purpose,
            ctx=ctx,
            referral_id=referral_id,
        )
        try:
            yield record
        except BaseException as error:
            await self.writer.finish(record, outcome_of(error, record.decision))
            raise
        await self.writer.finish(record)


class EntryWriter(Protocol):
    """Writes the entry of an access served on the event loop; returns once committed."""

    async def finish(
        self, access: Access, outcome: AuditOutcome = AuditOutcome.SUCCESS
    ) -> None: ...

    def close(self, timeout: float = 10.0) -> None: ...


@dataclass
class _Finished:
    access: Access
    outcome: AuditOutcome
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[None]
    queued_at: float = field(default_factory=time.monotonic)


# How many turns of the event loop a batch waits for under load (`AccessWriter`).
LOOP_TURNS = 2


def _loop_turned(loop: asyncio.AbstractEventLoop, deadline: float) -> bool:
    """Whether `loop` ran what was ready on it before `deadline` (monotonic): a callback
    posted behind that work ran. An idle loop turns at once; a busy one once the requests
    it was serving have had their turn (and queued their entries)."""
    turned = threading.Event()
    try:
        loop.call_soon_threadsafe(turned.set)
    except RuntimeError:
        return False  # that loop is closed
    return turned.wait(max(0.0, deadline - time.monotonic()))


def _settle(futures: Sequence[asyncio.Future[None]], error: BaseException | None) -> None:
    for future in futures:
        if future.done():  # its request was cancelled meanwhile
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)


class AccessWriter:
    """One thread that writes the entries of the accesses the event loop serves.

    `Gatekeeper.access_async` finishes its accesses here. `finish` queues an access and
    waits, without a thread of its own, until its entry is committed: no disclosure leaves
    before its entry. The thread writes whatever is queued in one transaction
    (`Gatekeeper.finish_together`, at most `max_batch` accesses) and wakes every waiter of
    the batch with one call into their loop. A thread per waiting request, as the group
    commit of `AuditLog` has, would be woken one by one, each taking the interpreter's lock
    from the loop that serves the reads. The thread starts with the first access, so a
    process that never serves one never starts it.

    Under load a batch waits for its company: when accesses were queued while the previous
    batch was being written, the next one also takes the entries of the requests the event
    loop serves in its next turns (`LOOP_TURNS`, at most `window_seconds` after the batch's
    first entry), so that one transaction and one fsync carry several entries rather than
    one or two, and the loop's own connection, whose page cache SQLite empties after every
    commit by another connection, reads from a warm cache more often. An idle loop turns at
    once, so a batch waits only as long as the loop is busy; a lone reader never waits.
    """

    def __init__(
        self,
        gatekeeper: Gatekeeper,
        *,
        max_batch: int = 256,
        window_seconds: float = 0.0,
    ) -> None:
        self._gatekeeper = gatekeeper
        self._max_batch = max_batch
        self._window = window_seconds
        # accesses were queued while the last batch was being written: others are coming
        self._busy = False
        self._queue: queue.SimpleQueue[_Finished | None] = queue.SimpleQueue()
        self._start_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    async def finish(self, access: Access, outcome: AuditOutcome = AuditOutcome.SUCCESS) -> None:
        """Write `access`'s entry with `outcome`; returns once it is committed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._ensure_started()
        self._queue.put(_Finished(access, outcome, loop, future))
        await future

    def _ensure_started(self) -> None:
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="access-writer", daemon=True)
                self._thread.start()

    def _next_batch(self) -> list[_Finished] | None:
        first = self._queue.get()
        if first is None:
            return None
        batch = [first]
        stopping = self._take_queued(batch)
        if self._busy and self._window > 0:
            deadline = first.queued_at + self._window
            for _ in range(LOOP_TURNS):
                if stopping or len(batch) >= self._max_batch:
                    break
                turned = _loop_turned(first.loop, deadline)
                stopping = self._take_queued(batch)
                if not turned:
                    break
        return batch

    def _take_queued(self, batch: list[_Finished]) -> bool:
        """Move what is queued into `batch`; True once the stop sentinel is met."""
        while len(batch) < self._max_batch:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return False
            if item is None:
                self._queue.put(None)  # stop after this batch
                return True
            batch.append(item)
        return False

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            error: BaseException | None = None
            try:
                self._gatekeeper.finish_together([(f.access, f.outcome) for f in batch])
            except BaseException as exc:  # noqa: BLE001 - every waiter learns of it
                logger.warning(
                    "entries of %d accesses not written: %s", len(batch), type(exc).__name__
                )
                error = exc
            by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
            for finished in batch:
                by_loop.setdefault(finished.loop, []).append(finished.future)
            for loop, futures in by_loop.items():
                try:
                    loop.call_soon_threadsafe(_settle, futures, error)
                except RuntimeError:
                    pass  # that loop is closed: nobody waits any more
            self._busy = not self._queue.empty()

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, then stop the thread (it starts again on the next access)."""
        with self._start_lock:
            thread, self._thread = self._thread, None
        if thread is not None and thread.is_alive():
            self._queue.put(None)
            thread.join(timeout)
