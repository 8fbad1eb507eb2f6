"""Idempotent side effects of the lifecycle: workflow start intents, offers, notifications,
the channel to justice."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from sqlmodel import Session

from services import policy
from services.access import Gatekeeper, RequestContext
from services.audit.models import AuditEventType, AuditOutcome
from services.audit.purpose import PurposeOfUse
from services.lifecycle import ComplianceFact, NotificationKind
from services.models import JusticeMessage, Notification, Offer, Referral, utcnow
from services.principal import Principal, Role, Sector
from services.referrals import PROCESS_FACTS, case_facts, consent_facts

# The purpose of use recorded with each decision and message on the channel.
CHANNEL_PURPOSE = PurposeOfUse.JUSTRPT.value

# Every message on the channel to justice carries this notice (shared professional secrecy).
NO_REDISCLOSURE_NOTICE = (
    "Compliance information shared under a cooperation framework with the person's consent. "
    "It may not be disclosed further or used for any other purpose."
)


def create_offer(
    *, session: Session, referral_id: UUID, attempt: int, provider: str, expires_at: datetime
) -> bool:
    """Record the offer of attempt N; a retry finds it and creates nothing."""
    if session.get(Offer, (referral_id, attempt)) is not None:
        return False
    session.add(
        Offer(referral_id=referral_id, attempt=attempt, provider=provider, expires_at=expires_at)
    )
    return True


def notify(
    *, session: Session, key: str, referral_id: UUID, recipient: str, kind: NotificationKind
) -> bool:
    """Queue a notification once per key (referral id + step)."""
    if session.get(Notification, key) is not None:
        return False
    session.add(Notification(key=key, referral_id=referral_id, recipient=recipient, kind=kind))
    return True


def channel_reader(recipient: str) -> Principal:
    """The referring office as the reader of the channel to justice: its prosecutors."""
    return Principal(
        subject=f"justice-channel:{recipient}",
        organisation=recipient,
        sector=Sector.JUSTICE,
        roles=frozenset({Role.PROSECUTOR}),
    )


@dataclass(frozen=True)
class JusticeSend:
    """What the channel did with one fact: the fact it sent (None: nothing), and Cedar's
    decision when the fact needed one."""

    reader: Principal
    sent: ComplianceFact | None
    decision: policy.Decision | None


def report_to_justice(
    *,
    session: Session,
    key: str,
    referral_id: UUID,
    recipient: str,
    fact: ComplianceFact,
    needs_reporting_consent: bool,
) -> JusticeSend | None:
    """Put one typed fact on the channel to the referring office, if it may flow now; None
    when it was sent before (a retry).

    Process facts (consent withdrawn, expired or not given, no provider, ended without
    reporting consent) always reach the office. Any other fact is compliance data: Cedar
    decides at send time, on the consent as it stands now (its purposes and categories),
    as for the office's view of the case. The outcome (`needs_reporting_consent=False`)
    that may not flow still tells the office that the referral ended, not how."""
    if session.get(JusticeMessage, key) is not None:
        return None
    reader = channel_reader(recipient)
    fact = ComplianceFact(fact)
    decision = None
    if fact.value not in PROCESS_FACTS:
        referral = session.get(Referral, referral_id)
        if referral is None:
            return JusticeSend(reader=reader, sent=None, decision=None)
        decision = policy.may_disclose(
            reader,
            policy.DataCategory.COMPLIANCE,
            case_facts(session=session, referral=referral),
            consent_facts(session=session, referral_id=referral_id, at=utcnow()),
        )
        if not decision.allowed:
            if needs_reporting_consent:
                return JusticeSend(reader=reader, sent=None, decision=decision)
            fact = ComplianceFact.ENDED_WITHOUT_REPORTING_CONSENT
    session.add(
        JusticeMessage(
            key=key,
            referral_id=referral_id,
            recipient=recipient,
            fact=fact.value,
            notice=NO_REDISCLOSURE_NOTICE,
        )
    )
    return JusticeSend(reader=reader, sent=fact, decision=decision)


def audit_send(
    *, gatekeeper: Gatekeeper, referral_id: UUID, send: JusticeSend, committed: bool
) -> None:
    """One entry per message on the channel (IHE BALP: privacy disclosure at the source):
    the decision that let it go or held it back, and what went."""
    access = gatekeeper.open(
        principal=send.reader,
        event_type=AuditEventType.DISCLOSURE_SOURCE,
        action="justice_channel.send",
        purpose=CHANNEL_PURPOSE,
        ctx=RequestContext(),
        referral_id=referral_id,
    )
    if send.decision is not None:
        access.decided(send.decision)
    if send.decision is not None and not send.decision.allowed:
        access.withheld.append(policy.DataCategory.COMPLIANCE.value)
    if send.sent is not None and committed:
        if send.sent.value not in PROCESS_FACTS:
            access.disclose([policy.DataCategory.COMPLIANCE.value])
        access.finish()
    else:
        access.finish(AuditOutcome.REFUSED)
