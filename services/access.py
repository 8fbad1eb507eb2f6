"""Every access decision in one place: Cedar decides, the audit log records, allow or deny."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from uuid import UUID

from services import policy
from services.audit.log import AuditLog
from services.audit.models import AuditDecision, AuditEvent, AuditEventType, pseudonymise_referral
from services.principal import Principal


@dataclass(frozen=True)
class RequestContext:
    """Correlation ids of the request being served (no personal data)."""

    request_id: str | None = None
    trace_id: str | None = None


class Gatekeeper:
    """Asks the policies and writes every decision and access to the audit log."""

    def __init__(self, *, audit: AuditLog, pseudonym_key: bytes) -> None:
        self.audit = audit
        self._pseudonym_key = pseudonym_key

    def pseudonym(self, referral_id: UUID | None) -> str | None:
        """The audit pseudonym of a referral (keyed HMAC), or None."""
        if referral_id is None:
            return None
        return pseudonymise_referral(referral_id, self._pseudonym_key)

    def decide(
        self,
        *,
        principal: Principal,
        action: policy.Action,
        case: policy.CaseFacts | None,
        consent: policy.ConsentFacts | None,
        purpose: str,
        ctx: RequestContext,
        referral_id: UUID | None = None,
    ) -> policy.Decision:
        """Authorise one action and record the decision, whatever it is."""
        decision = policy.authorize(principal, action, case, consent)
        self._append(
            principal=principal,
            event_type=(
                AuditEventType.AUTHORIZATION_PERMIT
                if decision.allowed
                else AuditEventType.AUTHORIZATION_DENY
            ),
            action=action.value,
            referral_id=referral_id,
            categories=(),
            decision=AuditDecision.PERMIT if decision.allowed else AuditDecision.DENY,
            policy_ids=decision.policy_ids,
            purpose=purpose,
            ctx=ctx,
        )
        return decision

    def disclosures(
        self,
        *,
        principal: Principal,
        case: policy.CaseFacts,
        consent: policy.ConsentFacts | None,
        purpose: str,
        ctx: RequestContext,
        referral_id: UUID,
    ) -> dict[policy.DataCategory, policy.Decision]:
        """Per-category disclosure decisions, recorded as one permit and one deny entry."""
        decisions = policy.disclosable_categories(principal, case, consent)
        allowed = [c for c, d in decisions.items() if d.allowed]
        denied = [c for c, d in decisions.items() if not d.allowed]
        for granted, cats in ((True, allowed), (False, denied)):
            if not cats:
                continue
            ids = sorted({pid for c in cats for pid in decisions[c].policy_ids})
            self._append(
                principal=principal,
                event_type=(
                    AuditEventType.AUTHORIZATION_PERMIT
                    if granted
                    else AuditEventType.AUTHORIZATION_DENY
                ),
                action="disclose",
                referral_id=referral_id,
                categories=[c.value for c in cats],
                decision=AuditDecision.PERMIT if granted else AuditDecision.DENY,
                policy_ids=ids,
                purpose=purpose,
                ctx=ctx,
            )
        return decisions

    def list_authorizations(
        self,
        *,
        principal: Principal,
        action: policy.Action,
        cases: Sequence[tuple[policy.CaseFacts, policy.ConsentFacts | None]],
        purpose: str,
        ctx: RequestContext,
    ) -> list[policy.Decision]:
        """`action` decided on each row of a list, as `decide` decides it on one referral,
        recorded as one permit and one deny entry for the whole list."""
        decided = [policy.authorize(principal, action, case, consent) for case, consent in cases]
        for granted in (True, False):
            rows = [d for d in decided if d.allowed is granted]
            if not rows:
                continue
            self._append(
                principal=principal,
                event_type=(
                    AuditEventType.AUTHORIZATION_PERMIT
                    if granted
                    else AuditEventType.AUTHORIZATION_DENY
                ),
                action=action.value,
                referral_id=None,
                categories=(),
                decision=AuditDecision.PERMIT if granted else AuditDecision.DENY,
                policy_ids=sorted({pid for d in rows for pid in d.policy_ids}),
                purpose=purpose,
                ctx=ctx,
            )
        return decided

    def list_disclosures(
        self,
        *,
        principal: Principal,
        cases: Sequence[tuple[policy.CaseFacts, policy.ConsentFacts | None]],
        purpose: str,
        ctx: RequestContext,
    ) -> list[dict[policy.DataCategory, policy.Decision]]:
        """The disclosure decisions of each row of a list, as `disclosures` takes them for one
        referral, recorded as one permit and one deny entry for the whole page (not one per
        row: the list itself is one query entry)."""
        decided = [
            policy.disclosable_categories(principal, case, consent) for case, consent in cases
        ]
        for granted in (True, False):
            cats = sorted(
                {c.value for row in decided for c, d in row.items() if d.allowed is granted}
            )
            if not cats:
                continue
            ids = sorted(
                {
                    pid
                    for row in decided
                    for d in row.values()
                    if d.allowed is granted
                    for pid in d.policy_ids
                }
            )
            self._append(
                principal=principal,
                event_type=(
                    AuditEventType.AUTHORIZATION_PERMIT
                    if granted
                    else AuditEventType.AUTHORIZATION_DENY
                ),
                action="disclose",
                referral_id=None,
                categories=cats,
                decision=AuditDecision.PERMIT if granted else AuditDecision.DENY,
                policy_ids=ids,
                purpose=purpose,
                ctx=ctx,
            )
        return decided

    def decided(
        self,
        *,
        principal: Principal,
        action: str,
        decision: policy.Decision,
        categories: Iterable[str],
        purpose: str,
        ctx: RequestContext,
        referral_id: UUID | None = None,
    ) -> None:
        """Record a decision taken outside a request (e.g. at send time on the justice
        channel), with the policies that decided it."""
        self._append(
            principal=principal,
            event_type=(
                AuditEventType.AUTHORIZATION_PERMIT
                if decision.allowed
                else AuditEventType.AUTHORIZATION_DENY
            ),
            action=action,
            referral_id=referral_id,
            categories=categories,
            decision=AuditDecision.PERMIT if decision.allowed else AuditDecision.DENY,
            policy_ids=decision.policy_ids,
            purpose=purpose,
            ctx=ctx,
        )

    def record(
        self,
        *,
        principal: Principal,
        event_type: AuditEventType,
        action: str,
        purpose: str,
        ctx: RequestContext,
        referral_id: UUID | None = None,
        categories: Iterable[str] = (),
    ) -> None:
        """Record an access that happened (create, read, query, update, disclosure)."""
        self._append(
            principal=principal,
            event_type=event_type,
            action=action,
            referral_id=referral_id,
            categories=categories,
            decision=None,
            policy_ids=(),
            purpose=purpose,
            ctx=ctx,
        )

    def _append(
        self,
        *,
        principal: Principal,
        event_type: AuditEventType,
        action: str,
        referral_id: UUID | None,
        categories: Iterable[str],
        decision: AuditDecision | None,
        policy_ids: Iterable[str],
        purpose: str,
        ctx: RequestContext,
    ) -> None:
        self.audit.append(
            [
                AuditEvent(
                    event_type=event_type,
                    actor_subject=principal.subject,
                    actor_organisation=principal.organisation,
                    actor_role=",".join(sorted(r.value for r in principal.roles))[:64] or "none",
                    action=action,
                    referral_pseudonym=self.pseudonym(referral_id),
                    categories=tuple(categories),
                    decision=decision,
                    policy_ids=tuple(policy_ids),
                    purpose_of_use=purpose,
                    request_id=ctx.request_id,
                    trace_id=ctx.trace_id,
                )
            ]
        )
