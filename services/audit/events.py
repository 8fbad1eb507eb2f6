"""Audit entries of what no case access records: logins, logouts, failed authentications
and purges (IHE BALP). (What the office receives on the channel to justice is recorded with
the access that shows it: `Access.receive`.)

Each function writes one entry and returns when it is committed; the purge's entry is written
in the same transaction as the shredding (`services/retention.py`).
"""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from services.access import Gatekeeper, RequestContext
from services.audit.models import AuditDecision, AuditEvent, AuditEventType, AuditOutcome
from services.audit.purpose import PurposeOfUse
from services.principal import Principal

# The engine's own steps (retention, the channel) are recorded under this organisation.
ENGINE_ORGANISATION = "referral-engine"
# Nobody authenticated: the subject a failed authentication is recorded under (a subject
# named by a token that did not verify is not trusted, and may be anything).
UNAUTHENTICATED = "unauthenticated"


def _roles(principal: Principal) -> str:
    return ",".join(sorted(r.value for r in principal.roles))[:64] or "none"


def _event(
    gatekeeper: Gatekeeper,
    *,
    event_type: AuditEventType,
    subject: str,
    organisation: str,
    role: str,
    action: str,
    purpose: PurposeOfUse | str,
    ctx: RequestContext,
    outcome: AuditOutcome,
    referral_id: UUID | None = None,
    person_pseudonym: str | None = None,
    categories: Sequence[str] = (),
    decision: AuditDecision | None = None,
    policy_ids: Sequence[str] = (),
) -> AuditEvent:
    return AuditEvent(
        event_type=event_type,
        actor_subject=subject[:255],
        actor_organisation=organisation[:255],
        actor_role=role,
        action=action,
        referral_pseudonym=gatekeeper.pseudonym(referral_id),
        person_pseudonym=person_pseudonym,
        categories=tuple(categories) if outcome is AuditOutcome.SUCCESS else (),
        decision=decision,
        policy_ids=tuple(policy_ids),
        purpose_of_use=str(purpose),
        request_id=ctx.request_id,
        trace_id=ctx.trace_id,
        outcome=outcome,
        source_node=gatekeeper.source_node,
        client_address=ctx.client_address,
    )


def record_login(gatekeeper: Gatekeeper, *, principal: Principal, ctx: RequestContext) -> None:
    """A web login that succeeded (blocking)."""
    gatekeeper.audit.append(
        [
            _event(
                gatekeeper,
                event_type=AuditEventType.LOGIN,
                subject=principal.subject,
                organisation=principal.organisation,
                role=_roles(principal),
                action="session.login",
                purpose=PurposeOfUse.HSYSADMIN,
                ctx=ctx,
                outcome=AuditOutcome.SUCCESS,
            )
        ]
    )


def record_logout(
    gatekeeper: Gatekeeper, *, principal: Principal | None, ctx: RequestContext
) -> None:
    """A web logout; `principal` None: the session had already ended (blocking)."""
    gatekeeper.audit.append(
        [
            _event(
                gatekeeper,
                event_type=AuditEventType.LOGOUT,
                subject=principal.subject if principal is not None else UNAUTHENTICATED,
                organisation=principal.organisation if principal is not None else "unknown",
                role=_roles(principal) if principal is not None else "none",
                action="session.logout",
                purpose=PurposeOfUse.HSYSADMIN,
                ctx=ctx,
                outcome=AuditOutcome.SUCCESS,
            )
        ]
    )


def record_failed_authentication(
    gatekeeper: Gatekeeper, *, channel: str, ctx: RequestContext
) -> None:
    """A refused authentication (401): a bad, expired or missing token, or a web login the
    identity provider or the login's checks refused. `channel`: `api` or `web` (blocking)."""
    gatekeeper.audit.append(
        [
            _event(
                gatekeeper,
                event_type=AuditEventType.LOGIN,
                subject=UNAUTHENTICATED,
                organisation="unknown",
                role="none",
                action=f"authentication.{channel}",
                purpose=PurposeOfUse.HSYSADMIN,
                ctx=ctx,
                outcome=AuditOutcome.REFUSED,
            )
        ]
    )


def record_operator_export(
    gatekeeper: Gatekeeper, *, operator: str, action: str, outcome: AuditOutcome
) -> None:
    """An export made from the command line on the server (e.g. `referral audit export`), by
    the operating-system account `operator` (blocking)."""
    gatekeeper.audit.append(
        [
            _event(
                gatekeeper,
                event_type=AuditEventType.EXPORT,
                subject=f"os:{operator}",
                organisation=ENGINE_ORGANISATION,
                role="operator",
                action=action,
                purpose=PurposeOfUse.HOPERAT,
                ctx=RequestContext(),
                outcome=outcome,
                categories=("access_log",),
            )
        ]
    )


def record_pseudonym_rotation(
    gatekeeper: Gatekeeper, *, operator: str, action: str, outcome: AuditOutcome
) -> None:
    """A pseudonym-key rotation (`keys.pseudonym.rederive`: the live referrals' identities
    opened to re-derive their pseudonyms) or the retirement of a version
    (`keys.pseudonym.retire`), from the command line by `operator` (blocking). Names no
    referral, person or key."""
    gatekeeper.audit.append(
        [
            _event(
                gatekeeper,
                event_type=AuditEventType.UPDATE,
                subject=f"os:{operator}",
                organisation=ENGINE_ORGANISATION,
                role="operator",
                action=action,
                purpose=PurposeOfUse.RECORDMGT,
                ctx=RequestContext(),
                outcome=outcome,
                categories=("identity",) if action == "keys.pseudonym.rederive" else (),
            )
        ]
    )


def shred_event(
    gatekeeper: Gatekeeper,
    *,
    referral_id: UUID,
    person_tag: str | None,
    categories: Sequence[str],
    action: str = "referral.purge",
    subject: str = "system:retention",
    organisation: str = ENGINE_ORGANISATION,
) -> AuditEvent:
    """The entry of a shredding: a holding's sealed fields dropped, or (`referral.purge`) the
    referral's data key destroyed with the last of them (crypto-shredding), by the engine at
    the end of a retention period, on behalf of the holder (`organisation`). `person_tag`: the
    referral's person tag, taken before the purge destroyed the key it is computed with."""
    return _event(
        gatekeeper,
        event_type=AuditEventType.DELETE,
        subject=subject,
        organisation=organisation,
        role="system",
        action=action,
        purpose=PurposeOfUse.RECORDMGT,
        ctx=RequestContext(),
        outcome=AuditOutcome.SUCCESS,
        referral_id=referral_id,
        person_pseudonym=person_tag,
        categories=categories,
    )
