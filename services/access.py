"""Every access decision in one place: Cedar decides, the audit log records, allow or deny.

One access, one audit entry (IHE BALP): a request opens an `Access`, its decisions and
disclosures fill it, and `finish` writes one entry with the decision, the deciding policies,
the categories disclosed and withheld, and the outcome. The entry is committed before the
answer leaves; a refused or failed access is recorded too.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import TypeVar
from uuid import UUID

from sqlmodel import Session

from services import policy
from services.audit.log import AuditLog
from services.audit.models import (
    AuditDecision,
    AuditEvent,
    AuditEventType,
    AuditOutcome,
    pseudonymise_referral,
)
from services.errors import DomainError
from services.principal import Principal

T = TypeVar("T")


@dataclass(frozen=True)
class RequestContext:
    """Correlation ids of the request being served (no personal data)."""

    request_id: str | None = None
    trace_id: str | None = None


def outcome_of(error: BaseException | None) -> AuditOutcome:
    """The outcome of an access that ended with `error` (None: it succeeded)."""
    if error is None:
        return AuditOutcome.SUCCESS
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
            # nothing is disclosed by an access that did not succeed
            categories=tuple(self.disclosed) if outcome is AuditOutcome.SUCCESS else (),
            decision=self.decision,
            policy_ids=tuple(sorted(self.policy_ids)),
            purpose_of_use=self.purpose,
            request_id=self.ctx.request_id,
            trace_id=self.ctx.trace_id,
            outcome=outcome,
            withheld=tuple(self.withheld),
        )

    def finish(self, outcome: AuditOutcome = AuditOutcome.SUCCESS) -> None:
        """Write the access's one entry (blocking; committed when this returns)."""
        if self.finished:
            return
        self.gatekeeper.audit.append([self.event(outcome)])
        self.finished = True

    def finish_with(self, write: Callable[[Session], T]) -> T:
        """Store `write`'s state and this access's entry in one transaction (blocking)."""
        if self.finished:
            raise RuntimeError("this access has already been recorded")
        result = self.gatekeeper.audit.append_with(
            write, lambda _: [self.event(AuditOutcome.SUCCESS)]
        )
        self.finished = True
        return result

    def abandon(self, error: BaseException) -> None:
        """Record an access that ended with `error`, unless it was recorded already."""
        if not self.finished:
            self.finish(outcome_of(error))


class Gatekeeper:
    """Asks the policies and writes one audit entry per access, whatever the decision."""

    def __init__(self, *, audit: AuditLog, pseudonym_key: bytes) -> None:
        self.audit = audit
        self._pseudonym_key = pseudonym_key

    def pseudonym(self, referral_id: UUID | None) -> str | None:
        """The audit pseudonym of a referral (keyed HMAC), or None."""
        if referral_id is None:
            return None
        return pseudonymise_referral(referral_id, self._pseudonym_key)

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
        """`access` for a block that awaits; the entry is written off the event loop."""
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
            await asyncio.to_thread(record.abandon, error)
            raise
        await asyncio.to_thread(record.finish)
