"""Activities of the referral workflow: thin, idempotent, calling `services/`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session
from temporalio import activity

from services import consent, matching, outbox, projection, retention, unlinking
from services.access import Gatekeeper
from services.crypto.payload_keys import ReferralPayloadKeys
from services.db import session_scope
from services.lifecycle import (
    ComplianceReportInput,
    ComplianceReportResult,
    ConsentStoreInput,
    ConsentWithdrawStoreInput,
    EmptyResult,
    FindProvidersInput,
    FindProvidersResult,
    NotifyInput,
    NotifyResult,
    OfferInput,
    OfferResult,
    PurgeInput,
    ShredInput,
    TransitionInput,
    TransitionResult,
)
from services.retention import Shredder

__all__ = ["ReferralActivities", "Shredder"]


class ReferralActivities:
    """The referral workflow's I/O; one instance per worker, sharing the engine.

    The shredder (the vault) and the gatekeeper are required: a purge destroys the
    referral's data key and every shredding is an audit entry, so a worker that could purge
    without either would leave the data, or leave no trace."""

    def __init__(
        self,
        *,
        engine: Engine,
        shredder: Shredder,
        gatekeeper: Gatekeeper,
        payload_keys: ReferralPayloadKeys | None = None,
    ) -> None:
        self._engine = engine
        self._shredder = shredder
        # the per-referral Temporal payload keys the purge destroys
        self._payload_keys = payload_keys
        # records the justice channel's decisions and messages, and every shredding
        self._gatekeeper = gatekeeper

    def _idempotent(self, work: Callable[[Session], bool]) -> bool:
        # A concurrent retry may win the insert race; the unique key then makes ours a no-op.
        try:
            with session_scope(self._engine) as session:
                return work(session)
        except IntegrityError:
            return False

    @activity.defn
    def record_transition(self, inp: TransitionInput) -> TransitionResult:
        applied = self._idempotent(
            lambda s: projection.apply_snapshot(session=s, snapshot=inp.snapshot, reason=inp.reason)
        )
        return TransitionResult(applied=bool(applied))

    @activity.defn
    def find_providers(self, inp: FindProvidersInput) -> FindProvidersResult:
        with session_scope(self._engine) as session:
            found = matching.candidate_providers(
                session=session,
                framework_id=inp.framework_id,
                district=inp.district,
                target_group=inp.target_group.value,
                language=inp.language,
                exclude=inp.exclude,
            )
        return FindProvidersResult(providers=tuple(found))

    @activity.defn
    def create_offer(self, inp: OfferInput) -> OfferResult:
        created = self._idempotent(
            lambda s: outbox.create_offer(
                session=s,
                referral_id=inp.referral_id,
                attempt=inp.attempt,
                provider=inp.provider,
                expires_at=inp.expires_at,
            )
        )
        return OfferResult(created=bool(created))

    @activity.defn
    def notify(self, inp: NotifyInput) -> NotifyResult:
        created = self._idempotent(
            lambda s: outbox.notify(
                session=s,
                key=inp.key,
                referral_id=inp.referral_id,
                recipient=inp.recipient,
                kind=inp.kind,
            )
        )
        return NotifyResult(created=bool(created))

    @activity.defn
    def report_to_justice(self, inp: ComplianceReportInput) -> ComplianceReportResult:
        sends: list[outbox.JusticeSend] = []

        def send(session: Session) -> bool:
            sent = outbox.report_to_justice(
                session=session,
                key=inp.key,
                referral_id=inp.referral_id,
                recipient=inp.recipient,
                fact=inp.fact,
                needs_reporting_consent=inp.needs_reporting_consent,
            )
            if sent is None:
                return False  # sent before: decided and recorded then
            sends.append(sent)
            return sent.sent is not None

        created = self._idempotent(send)
        if sends:
            # after the commit: a message is recorded as disclosed only once it exists
            outbox.audit_send(
                gatekeeper=self._gatekeeper,
                referral_id=inp.referral_id,
                send=sends[0],
                committed=created,
            )
        return ComplianceReportResult(created=bool(created))

    @activity.defn
    def store_consent(self, inp: ConsentStoreInput) -> EmptyResult:
        def store(session: Session) -> bool:
            consent.record(session=session, referral_id=inp.referral_id, inp=inp.record)
            return True

        self._idempotent(store)
        return EmptyResult()

    @activity.defn
    def withdraw_consent(self, inp: ConsentWithdrawStoreInput) -> EmptyResult:
        with session_scope(self._engine) as session:
            consent.withdraw(
                session=session, referral_id=inp.referral_id, withdrawn_at=inp.withdrawn_at
            )
        return EmptyResult()

    @activity.defn
    def shred(self, inp: ShredInput) -> EmptyResult:
        """One retention clock ended before the other: shred what that holding keeps."""
        retention.shred(
            gatekeeper=self._gatekeeper, referral_id=inp.referral_id, holding=inp.holding
        )
        return EmptyResult()

    @activity.defn
    def purge(self, inp: PurgeInput) -> EmptyResult:
        """Crypto-shred the referral: drop what the holdings keep, destroy its data key and
        remove what could link it back to the person (services.unlinking)."""
        purged = retention.purge(
            gatekeeper=self._gatekeeper,
            shredder=self._shredder,
            referral_id=inp.referral_id,
            holdings=inp.holdings,
            payload_keys=self._payload_keys,
        )
        if purged:
            unlinking.settle(self._engine)
        return EmptyResult()

    def all(self) -> list[Callable[..., Any]]:
        """Every activity, for worker registration."""
        return [
            self.record_transition,
            self.find_providers,
            self.create_offer,
            self.notify,
            self.report_to_justice,
            self.store_consent,
            self.withdraw_consent,
            self.shred,
            self.purge,
        ]
