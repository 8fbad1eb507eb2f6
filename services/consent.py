"""Consent of the person referred: record (a new version each time), withdraw (also after
the care ended), expire, list, and the facts the policies decide with."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from typing import NamedTuple
from uuid import UUID

from sqlmodel import Session, col, select

from services import policy
from services.errors import Conflict
from services.lifecycle import (
    ENDED_STAGES,
    ConsentRecordInput,
    ConsentStatus,
    SignedBy,
    SignerCapacity,
    SigningMethod,
    Stage,
)
from services.models import Consent, Referral, utcnow

EVIDENCE_PREFIX = "hmac-sha256:"


def evidence_fingerprint(key: bytes, *, referral_id: UUID, evidence_hash: str) -> str:
    """The stored fingerprint of the consent form: keyed and bound to the referral, so a
    form reference (a short, guessable number) cannot be found back by hashing candidates;
    the purge clears it."""
    message = b"consent-evidence:" + referral_id.bytes + evidence_hash.encode("utf-8")
    return EVIDENCE_PREFIX + hmac.new(key, message, hashlib.sha256).hexdigest()


def evidence_matches(
    keys: Sequence[bytes], *, referral_id: UUID, evidence_hash: str, stored: str
) -> bool:
    """Whether a consent form (its `evidence_hash`) is the one a stored fingerprint names,
    under any live pseudonym key version (`KeyRing.pseudonym_keys`): a fingerprint cannot be
    re-derived at a rotation, the form's reference is not kept."""
    return bool(stored) and any(
        hmac.compare_digest(
            evidence_fingerprint(key, referral_id=referral_id, evidence_hash=evidence_hash), stored
        )
        for key in keys
    )


def record(*, session: Session, referral_id: UUID, inp: ConsentRecordInput) -> Consent:
    """Store a consent (or refusal) as the next version; earlier versions are superseded."""
    existing = session.get(Consent, inp.consent_id)
    if existing is not None:
        return existing  # a retried activity: already stored
    previous = session.exec(
        select(Consent).where(Consent.referral_id == referral_id).order_by(col(Consent.version))
    ).all()
    for old in previous:
        if old.status == ConsentStatus.ACTIVE.value:
            old.status = ConsentStatus.SUPERSEDED.value
            session.add(old)
    consent = Consent(
        id=inp.consent_id,
        referral_id=referral_id,
        version=(previous[-1].version + 1) if previous else 1,
        given=inp.given,
        purposes=[p.value for p in inp.purposes],
        categories=list(inp.categories),
        recipients=list(inp.recipients),
        disclosers=list(inp.disclosers),
        status=ConsentStatus.ACTIVE.value if inp.given else ConsentStatus.REFUSED.value,
        recorded_by=inp.actor.subject,
        recorded_by_organisation=inp.actor.organisation,
        evidence_hash=inp.evidence_hash,
        valid_from=inp.recorded_at or utcnow(),
        valid_until=inp.valid_until,
        right_to_revoke_explained=inp.right_to_revoke_explained,
        signed_by=inp.signed_by.value if inp.signed_by else None,
        signer_capacity=inp.signer_capacity.value if inp.signer_capacity else None,
        signed_on=inp.signed_on,
        signing_method=inp.signing_method.value if inp.signing_method else None,
    )
    session.add(consent)
    return consent


def expire_lapsed(*, session: Session, referral_id: UUID, at: datetime) -> int:
    """Store `expired` on every active consent of the referral whose validity ended by `at`."""
    lapsed = session.exec(
        select(Consent).where(
            Consent.referral_id == referral_id,
            Consent.status == ConsentStatus.ACTIVE.value,
            col(Consent.valid_until).is_not(None),
            col(Consent.valid_until) <= at,
        )
    ).all()
    for consent in lapsed:
        consent.status = ConsentStatus.EXPIRED.value
        session.add(consent)
    return len(lapsed)


# A referral in one of these stages runs no care step any more: a withdrawal no longer
# needs the workflow (which has nothing left to stop), only the stored consent.
AFTER_CARE: frozenset[str] = frozenset(
    stage.value for stage in (*ENDED_STAGES, Stage.OUTCOME_REPORTED, Stage.CLOSED)
)


def withdraw_after_end(*, session: Session, referral: Referral, at: datetime) -> int:
    """Withdraw the consent of a referral whose care has ended; access stops at once.

    The policies read the consent at every disclosure, so the stored withdrawal is all it
    takes. Refused (409) while the referral is still open (the workflow withdraws then) or
    when no consent is active."""
    if referral.stage not in AFTER_CARE:
        raise Conflict("the referral is not in a stage where consent can be withdrawn")
    expire_lapsed(session=session, referral_id=referral.id, at=at)
    withdrawn = withdraw(session=session, referral_id=referral.id, withdrawn_at=at)
    if not withdrawn:
        raise Conflict("there is no active consent to withdraw")
    # nothing more toward justice either: the projection's flag follows the consent
    referral.reporting_consent = False
    session.add(referral)
    return withdrawn


def withdraw(*, session: Session, referral_id: UUID, withdrawn_at: datetime) -> int:
    """Withdraw every active consent of the referral at `withdrawn_at`; returns how many."""
    active = session.exec(
        select(Consent).where(
            Consent.referral_id == referral_id, Consent.status == ConsentStatus.ACTIVE.value
        )
    ).all()
    for consent in active:
        consent.status = ConsentStatus.WITHDRAWN.value
        consent.withdrawn_at = withdrawn_at
        session.add(consent)
    return len(active)


def list_for(*, session: Session, referral_id: UUID, at: datetime | None = None) -> list[Consent]:
    """Every consent version of a referral, oldest first; with `at`, a consent whose
    validity ended by then is stored as `expired` first."""
    if at is not None:
        expire_lapsed(session=session, referral_id=referral_id, at=at)
    return list(
        session.exec(
            select(Consent).where(Consent.referral_id == referral_id).order_by(col(Consent.version))
        ).all()
    )


class Terms(NamedTuple):
    """What the policies read of a stored consent version, read without the rest of it
    (the access every party polls: `services.referrals.consent_facts`)."""

    status: str
    withdrawn_at: datetime | None
    valid_until: datetime | None
    purposes: list[str]
    categories: list[str]
    recipients: list[str]
    disclosers: list[str]


def state_at(consent: Consent | Terms | None, at: datetime) -> policy.ConsentState:
    """The state of a stored consent at `at`: expiry is evaluated here, at every access."""
    if consent is None:
        return policy.ConsentState.NONE
    if consent.status == ConsentStatus.WITHDRAWN.value or (
        consent.withdrawn_at is not None and consent.withdrawn_at <= at
    ):
        return policy.ConsentState.WITHDRAWN
    if consent.status == ConsentStatus.REFUSED.value:
        return policy.ConsentState.REFUSED
    if consent.status == ConsentStatus.EXPIRED.value or (
        consent.valid_until is not None and consent.valid_until <= at
    ):
        return policy.ConsentState.EXPIRED
    return policy.ConsentState.ACTIVE


def facts(consent: Consent | Terms, at: datetime) -> policy.ConsentFacts:
    """What the policies need to know of a stored consent at `at`."""
    return policy.ConsentFacts(
        status=state_at(consent, at),
        purposes=frozenset(consent.purposes),
        categories=frozenset(consent.categories),
        recipients=frozenset(consent.recipients),
        disclosers=frozenset(consent.disclosers),
    )


def widening(
    *,
    current: Consent | None,
    at: datetime,
    purposes: Iterable[str],
    categories: Iterable[str],
    recipients: Iterable[str],
    disclosers: Iterable[str],
    valid_until: datetime | None,
) -> policy.ConsentWidening:
    """What a proposed version adds to the consent as it stands at `at` (all of it when no
    consent is active)."""
    if current is None or state_at(current, at) is not policy.ConsentState.ACTIVE:
        return policy.ConsentWidening(
            purposes=frozenset(purposes),
            categories=frozenset(categories),
            recipients=frozenset(recipients),
            disclosers=frozenset(disclosers),
            extends_validity=True,
        )
    longer = current.valid_until is not None and (
        valid_until is None or valid_until > current.valid_until
    )
    return policy.ConsentWidening(
        purposes=frozenset(purposes) - set(current.purposes),
        categories=frozenset(categories) - set(current.categories),
        recipients=frozenset(recipients) - set(current.recipients),
        disclosers=frozenset(disclosers) - set(current.disclosers),
        extends_validity=longer,
    )


def check_form(
    *,
    given: bool,
    purposes: list[str],
    categories: list[str],
    recipients: list[str],
    disclosers: list[str],
    right_to_revoke_explained: bool,
    valid_until: datetime | None,
    now: datetime,
    signed_by: SignedBy | None = None,
    signer_capacity: SignerCapacity | None = None,
    signed_on: date | None = None,
    signing_method: SigningMethod | None = None,
) -> list[str]:
    """The parts a consent in valid form lacks (empty when it is complete)."""
    if not given:
        return []
    missing = []
    if "referral_to_care" not in purposes:
        missing.append("purpose referral_to_care")
    if not categories:
        missing.append("data categories")
    if not recipients:
        missing.append("recipients")
    if not disclosers:
        missing.append("who may disclose")
    if not right_to_revoke_explained:
        missing.append("the right to revoke, explained")
    if valid_until is None:
        missing.append("expiry")
    elif valid_until <= now:
        missing.append("an expiry in the future")
    if signed_by is None or signer_capacity is None:
        missing.append("who signed, and in which capacity")
    elif (signed_by is SignedBy.PERSON) != (signer_capacity is SignerCapacity.SELF):
        missing.append("a capacity that fits who signed (the person signs as self)")
    if signed_on is None:
        missing.append("the signing date")
    elif signed_on > now.date():
        missing.append("a signing date that is not in the future")
    elif valid_until is not None and signed_on > valid_until.date():
        missing.append("a signing date before the expiry")
    if signing_method is None:
        missing.append("how it was signed")
    return missing
