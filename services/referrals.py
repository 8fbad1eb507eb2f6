"""Referral records: creation (sealed, idempotent), tenancy-scoped listing, the policy
facts of a referral, and the per-category projection of what a caller may see."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime
from typing import Any, NamedTuple, TypeVar

from sqlalchemy import Select, bindparam, or_
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from services import care_team, policy, start_intents
from services import consent as consent_service
from services.case_content import FIELD_CATEGORY, MINIMAL_FIELDS, ReferralCreate, flatten
from services.crypto import PersonalDataVault, Pseudonymizer, ReferralPayloadKeys
from services.db import PreparedRead, read_rows, record_columns
from services.errors import Conflict, NotFound, Unprocessable
from services.lifecycle import (
    ComplianceFact,
    ConsentStatus,
    ReferralWorkflowInput,
    Stage,
    TargetGroup,
    Timings,
)
from services.models import (
    CareTeamAssignment,
    Consent,
    CooperationFramework,
    FrameworkParticipant,
    IdempotencyRecord,
    JusticeMessage,
    Organisation,
    Referral,
    ReferralLike,
    ReferralRecord,
    StatusHistory,
    utcnow,
)
from services.principal import Principal
from services.settings import Settings

# Stages a principal who may not see the exact stage sees only coarsely: toward anyone but
# the care team, whether the person is in care, and how that went, is a compliance fact
# (ARCHITECTURE.md).
_COARSE_STAGE = {
    Stage.ACCEPTED.value: "referred_to_care",
    Stage.IN_PROGRESS.value: "referred_to_care",
    Stage.COMPLETED.value: "ended",
    Stage.FAILED.value: "ended",
    Stage.NOT_STARTED.value: "ended",
}


def request_hash(body: ReferralCreate, key: bytes) -> str:
    """A keyed fingerprint of a create request (HMAC: the body is personal data), to tell a
    replay from a reused key."""
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hmac.new(key, b"create-request:" + canonical.encode(), hashlib.sha256).hexdigest()


# The reads behind every access, built once: a statement built per call costs more Python
# (coercion and cache key) than SQLite takes to answer it; a prebuilt one keeps its cache key.
_MEMBERS = PreparedRead(
    select(FrameworkParticipant.organisation_code).where(
        FrameworkParticipant.framework_id == bindparam("framework_id")
    )
)
_PROVIDER_SECTOR = PreparedRead(
    select(Organisation.sector).where(Organisation.code == bindparam("code"))
)


class HistoryRow(NamedTuple):
    """One version of a referral's status history, as the projection reads it."""

    referral_id: uuid.UUID
    version: int
    stage: str
    reason: str
    at: datetime


class ChannelMessage(NamedTuple):
    """One message of the channel to justice, as a view reads it."""

    key: str
    fact: str
    notice: str
    created_at: datetime
    received_at: datetime | None


_REFERRAL = PreparedRead(
    record_columns(Referral, ReferralRecord).where(col(Referral.id) == bindparam("referral_id"))
)

Q = TypeVar("Q", bound=Select[Any])


def _newest_consent(query: Q) -> Q:
    """`query` narrowed to the newest consent version of a referral: one rule for the
    stored consent (`current_consent`) and the terms every access decides on."""
    return (
        query.where(col(Consent.referral_id) == bindparam("referral_id"))
        .order_by(col(Consent.version).desc())
        .limit(1)
    )


_CURRENT_CONSENT = _newest_consent(select(Consent))
_CONSENT_TERMS = PreparedRead(_newest_consent(record_columns(Consent, consent_service.Terms)))
_HISTORY_OF_ONE = PreparedRead(
    record_columns(StatusHistory, HistoryRow)
    .where(col(StatusHistory.referral_id) == bindparam("referral_id"))
    .order_by(col(StatusHistory.version))
)
# an expanding IN: compiled per call, so it runs through SQLAlchemy (`PreparedRead`)
_HISTORY_OF_MANY = PreparedRead(
    record_columns(StatusHistory, HistoryRow)
    .where(col(StatusHistory.referral_id).in_(bindparam("referral_ids", expanding=True)))
    .order_by(col(StatusHistory.version))
)
_JUSTICE_MESSAGES = PreparedRead(
    record_columns(JusticeMessage, ChannelMessage)
    .where(col(JusticeMessage.referral_id) == bindparam("referral_id"))
    .order_by(col(JusticeMessage.created_at), col(JusticeMessage.key))
)


def framework_members(*, session: Session, framework_id: uuid.UUID) -> frozenset[str]:
    return frozenset(read_rows(session, _MEMBERS, {"framework_id": framework_id}).scalars())


def draft_case(
    *, session: Session, principal: Principal, framework_id: uuid.UUID
) -> policy.CaseFacts:
    """The facts of a referral about to be created by `principal`'s office."""
    return policy.CaseFacts(
        referral_id="new",
        framework_id=str(framework_id),
        framework_members=framework_members(session=session, framework_id=framework_id),
        referring_office=principal.organisation,
    )


def case_facts(*, session: Session, referral: ReferralLike) -> policy.CaseFacts:
    """What the policies need to know about an existing referral."""
    members = framework_members(session=session, framework_id=referral.framework_id)
    provider_sector = None
    if referral.accepted_provider is not None:
        provider_sector = read_rows(
            session, _PROVIDER_SECTOR, {"code": referral.accepted_provider}
        ).scalar()
    return _facts(
        referral,
        members=members,
        provider_sector=provider_sector,
        assigned=care_team.assigned_subjects(session=session, referral=referral),
    )


def _facts(
    referral: ReferralLike,
    *,
    members: frozenset[str],
    provider_sector: str | None,
    assigned: frozenset[str],
) -> policy.CaseFacts:
    return policy.CaseFacts(
        referral_id=str(referral.id),
        framework_id=str(referral.framework_id),
        framework_members=members,
        referring_office=referral.referring_office,
        offered_provider=referral.offered_provider,
        accepted_provider=referral.accepted_provider,
        accepted_provider_sector=provider_sector,
        assigned_workers=assigned,
    )


def current_consent(*, session: Session, referral_id: uuid.UUID) -> Consent | None:
    return session.exec(_CURRENT_CONSENT, params={"referral_id": referral_id}).first()


def consent_facts(
    *, session: Session, referral_id: uuid.UUID, at: datetime | None = None
) -> policy.ConsentFacts | None:
    """The consent as it stands at `at` (now): expiry is evaluated here, at every access."""
    row = read_rows(session, _CONSENT_TERMS, {"referral_id": referral_id}).first()
    return facts_of(None if row is None else consent_service.Terms(*row), at=at)


def facts_of(
    consent: Consent | consent_service.Terms | None, *, at: datetime | None = None
) -> policy.ConsentFacts | None:
    """The policy facts of one consent version as it stands at `at` (now)."""
    if consent is None:
        return None
    return consent_service.facts(consent, at or utcnow())


def find(*, session: Session, referral_id: uuid.UUID) -> ReferralRecord | None:
    """A referral by id, or None (the read behind every access: one prebuilt statement,
    below the ORM; read-only)."""
    row = read_rows(session, _REFERRAL, {"referral_id": referral_id}).one_or_none()
    return None if row is None else ReferralRecord(*row)


def get(*, session: Session, referral_id: uuid.UUID) -> Referral:
    """A referral by id, or NotFound."""
    referral = session.get(Referral, referral_id)
    if referral is None:
        raise NotFound("no such referral")
    return referral


def active_framework(
    *, session: Session, framework_id: uuid.UUID, principal: Principal
) -> CooperationFramework:
    framework = session.get(CooperationFramework, framework_id)
    if framework is None or not framework.active:
        raise Unprocessable("no active cooperation framework with this id")
    if principal.organisation not in framework_members(session=session, framework_id=framework_id):
        raise Unprocessable("your organisation does not take part in this cooperation framework")
    return framework


def find_replay(
    *, session: Session, organisation: str, key: str, body_hashes: Sequence[str]
) -> Referral | None:
    """The referral an earlier request with this Idempotency-Key created, if any.
    `body_hashes`: the request's fingerprint under every live pseudonym key version, so a
    replay still matches after a rotation."""
    record = session.get(IdempotencyRecord, (organisation, key))
    if record is None:
        return None
    if record.request_hash not in body_hashes:
        raise Unprocessable("this Idempotency-Key was used with a different request")
    return session.get(Referral, record.referral_id)


def create(
    *,
    session: Session,
    vault: PersonalDataVault,
    pseudonymizer: Pseudonymizer,
    principal: Principal,
    body: ReferralCreate,
    idempotency_key: str | None,
    body_hash: str,
    payload_keys: ReferralPayloadKeys | None = None,
) -> Referral:
    """Store a new referral (draft) with its personal fields sealed, its own Temporal
    payload key and the intent to start its workflow; flushed, the caller commits (with the
    audit entry)."""
    office = session.exec(
        select(Organisation).where(Organisation.code == principal.organisation)
    ).first()
    if office is None:
        raise Unprocessable("your organisation is not registered")
    referral_id = uuid.uuid4()
    referral = Referral(
        id=referral_id,
        framework_id=body.framework_id,
        referring_office=principal.organisation,
        created_by=principal.subject,
        district=body.district.value,
        target_group=body.referral_reason.target_group.value,
        language=body.language,
        stage=Stage.DRAFT.value,
        status="requested",
        business_status="draft",
        subject_pseudonym=pseudonymizer.national_number(body.identity.national_number),
        name_pseudonym=pseudonymizer.name_and_birth_date(
            body.identity.name, body.identity.birth_date
        ),
        pseudonym_key_id=pseudonymizer.key_id,
    )
    session.add(referral)
    session.flush()
    referral.personal = vault.seal_record(
        session=session, referral_id=referral_id, fields=flatten(body)
    )
    session.add(referral)
    if payload_keys is not None:
        # before the workflow starts: its first payload is already sealed with this key
        payload_keys.create(session=session, referral_id=referral_id)
    if idempotency_key is not None:
        session.add(
            IdempotencyRecord(
                organisation=principal.organisation,
                key=idempotency_key,
                request_hash=body_hash,
                referral_id=referral_id,
            )
        )
    start_intents.intend_start(session=session, referral_id=referral_id)
    try:
        session.flush()
    except IntegrityError:
        raise Conflict("a request with this Idempotency-Key is being processed") from None
    return referral


def workflow_input(
    *, session: Session, referral: Referral, settings: Settings
) -> ReferralWorkflowInput:
    """The workflow's input: ids, codes and durations only."""
    framework = session.get(CooperationFramework, referral.framework_id)
    assert framework is not None
    return ReferralWorkflowInput(
        referral_id=referral.id,
        framework_id=referral.framework_id,
        referring_office=referral.referring_office,
        district=referral.district,
        target_group=TargetGroup(referral.target_group),
        language=referral.language,
        timings=timings_of(framework=framework, settings=settings),
    )


def timings_of(*, framework: CooperationFramework, settings: Settings) -> Timings:
    """The durations a referral runs by: its framework's, else the engine's defaults."""

    def days(value: int | None, default: int) -> int:
        return value * 86400 if value is not None else default

    return Timings(
        consent_deadline=settings.consent_deadline_seconds,
        acceptance_sla=settings.acceptance_sla_seconds,
        acceptance_reminder=settings.acceptance_reminder_seconds,
        progress_report_interval=framework.reporting_cadence_days * 86400,
        decision_deadline=days(
            framework.decision_deadline_days, settings.decision_deadline_seconds
        ),
        retention=framework.retention_care_days * 86400,
        retention_justice=framework.retention_justice_days * 86400,
        intake_deadline=days(framework.intake_deadline_days, settings.intake_deadline_seconds),
        on_hold_limit=days(framework.on_hold_limit_days, settings.on_hold_limit_seconds),
        max_missed_reports=framework.max_missed_reports or settings.max_missed_reports,
        decision_second_reminder=settings.decision_second_reminder_seconds,
        decision_close=settings.decision_close_seconds,
    )


def visible_filter(principal: Principal) -> Any:
    """Tenancy: an office sees its referrals, a provider those offered to or accepted by it."""
    org = principal.organisation
    return or_(
        col(Referral.referring_office) == org,
        col(Referral.offered_provider) == org,
        col(Referral.accepted_provider) == org,
    )


def list_candidates(*, session: Session, principal: Principal) -> list[Referral]:
    """Every referral of the caller's organisation (tenancy), newest first. Which of them the
    caller may view, and so the page and the total, Cedar decides row by row."""
    rows = session.exec(
        select(Referral)
        .where(visible_filter(principal))
        .order_by(col(Referral.created_at).desc(), col(Referral.id))
    ).all()
    return list(rows)


def list_facts(
    *, session: Session, rows: Sequence[Referral]
) -> list[tuple[policy.CaseFacts, policy.ConsentFacts | None]]:
    """The policy facts of each listed referral, as `case_facts` and `consent_facts` give
    them for the detail view."""
    # the same facts as the detail view's (`case_facts`, `consent_facts`), loaded in a few
    # queries for the whole list rather than a few per row (as tests/unit prove)
    members: dict[uuid.UUID, frozenset[str]] = {}
    for framework_id in {row.framework_id for row in rows}:
        members[framework_id] = framework_members(session=session, framework_id=framework_id)
    consents: dict[uuid.UUID, Consent] = {}
    ids = [row.id for row in rows]
    for start in range(0, len(ids), 500):
        for consent in session.exec(
            select(Consent)
            .where(col(Consent.referral_id).in_(ids[start : start + 500]))
            .order_by(col(Consent.version))
        ).all():
            consents[consent.referral_id] = consent  # the highest version wins
    accepted = [row for row in rows if row.accepted_provider is not None]
    sectors: dict[str, str] = {}
    providers = sorted({row.accepted_provider for row in accepted if row.accepted_provider})
    for start in range(0, len(providers), 500):
        for code, sector in session.exec(
            select(Organisation.code, Organisation.sector).where(
                col(Organisation.code).in_(providers[start : start + 500])
            )
        ).all():
            sectors[code] = sector
    # care_team.assigned_subjects of each accepted row: the assignments in force of the
    # provider that accepted it
    assigned: dict[uuid.UUID, set[str]] = {row.id: set() for row in accepted}
    provider_of = {row.id: row.accepted_provider for row in accepted}
    accepted_ids = list(provider_of)
    for start in range(0, len(accepted_ids), 500):
        for referral_id, organisation, subject in session.exec(
            select(
                CareTeamAssignment.referral_id,
                CareTeamAssignment.organisation,
                CareTeamAssignment.subject,
            ).where(
                col(CareTeamAssignment.referral_id).in_(accepted_ids[start : start + 500]),
                col(CareTeamAssignment.released_at).is_(None),
            )
        ).all():
            if provider_of[referral_id] == organisation:
                assigned[referral_id].add(subject)
    at = utcnow()
    return [
        (
            _facts(
                row,
                members=members[row.framework_id],
                provider_sector=(
                    sectors.get(row.accepted_provider) if row.accepted_provider else None
                ),
                assigned=frozenset(assigned.get(row.id, ())),
            ),
            facts_of(consents.get(row.id), at=at),
        )
        for row in rows
    ]


def list_rows(
    *,
    session: Session,
    rows: Sequence[Referral],
    decisions: Sequence[Mapping[policy.DataCategory, policy.Decision]],
    stage_visible: Sequence[bool],
) -> list[dict[str, Any]]:
    """Each row projected with its own disclosure decisions and stage decision, by the
    detail view's projection."""
    history = status_history(session=session, referral_ids=[row.id for row in rows])
    return [
        process_view(row, decisions=decided, history=history[row.id], stage_visible=exact)
        for row, decided, exact in zip(rows, decisions, stage_visible, strict=True)
    ]


def store_care_notes(
    *,
    session: Session,
    vault: PersonalDataVault,
    referral: Referral,
    notes: dict[str, str],
) -> list[str]:
    """Seal the latest clinical/welfare notes into the record; returns their categories.

    Consent is checked again here, in the transaction that stores the notes, with the
    consent row locked: a withdrawal that took effect after the workflow took the report,
    but before this, leaves no note behind (and one still to come waits for this commit)."""
    if not notes:
        return []
    consents = session.exec(
        select(Consent)
        .where(Consent.referral_id == referral.id)
        .order_by(col(Consent.version).desc())
        .with_for_update()
    ).all()
    now = utcnow()
    current = next(iter(consents), None)
    if (
        current is None
        or current.status != ConsentStatus.ACTIVE.value
        or current.withdrawn_at is not None
        or (current.valid_until is not None and current.valid_until <= now)
    ):
        raise Conflict(
            "the person's consent ended before these care notes could be stored; "
            "the notes were not recorded"
        )
    sealed = vault.seal_record(session=session, referral_id=referral.id, fields=notes)
    referral.personal = {**referral.personal, **sealed}
    referral.updated_at = utcnow()
    session.add(referral)
    session.commit()
    return sorted({FIELD_CATEGORY[name] for name in notes})


def _iso(value: datetime | date | None) -> str | None:
    return value.isoformat() if value is not None else None


def allowed_categories(decisions: Mapping[policy.DataCategory, policy.Decision]) -> frozenset[str]:
    """The names of the categories the decisions let flow."""
    return frozenset(cat.value for cat, d in decisions.items() if d.allowed)


def may_see_stage(
    decisions: Mapping[policy.DataCategory, policy.Decision], follows: policy.Decision
) -> bool:
    """Whether the exact stage may reach the caller: the care team follows the case it runs
    (`follows`: the `view_stage` decision), whatever the consent; toward anyone else the
    stage is a compliance fact."""
    return follows.allowed or policy.DataCategory.COMPLIANCE.value in allowed_categories(decisions)


# Transitions that keep the stage and change only what is visible to every party of the
# case (the consent versions are listed to all of them).
_VISIBLE_REASONS = frozenset({"consent_amended"})


def seen_updated_at(
    *,
    referral: ReferralLike,
    history: Sequence[HistoryRow],
    allowed: frozenset[str],
    stage_visible: bool,
) -> datetime:
    """When what the caller may see last changed. A caller who may not see the exact stage
    sees accepted and in_progress alike; were `updated_at` to move on intake or a progress
    report, it would tell them care started. Care notes move it only for those who may read
    them (`store_care_notes` stamps the record, not the status history)."""
    if {"clinical", "welfare"} & allowed:
        return referral.updated_at
    compliance = stage_visible
    seen_at = referral.created_at
    previous: str | None = None
    for row in sorted(history, key=lambda r: r.version):
        seen = row.stage if compliance else _COARSE_STAGE.get(row.stage, row.stage)
        if (
            compliance
            or seen != previous
            or row.stage not in _COARSE_STAGE
            or row.reason in _VISIBLE_REASONS
        ):
            seen_at = row.at
        previous = seen
    return seen_at


def status_history(
    *, session: Session, referral_ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, list[HistoryRow]]:
    """The status history of each referral (one row per version), in one query."""
    ids = list(referral_ids)
    out: dict[uuid.UUID, list[HistoryRow]] = {i: [] for i in ids}
    if not ids:
        return out
    if len(ids) == 1:
        rows = read_rows(session, _HISTORY_OF_ONE, {"referral_id": ids[0]})
    else:
        rows = read_rows(session, _HISTORY_OF_MANY, {"referral_ids": ids})
    for row in rows:
        history = HistoryRow(*row)
        out[history.referral_id].append(history)
    return out


def process_view(
    referral: ReferralLike,
    *,
    decisions: Mapping[policy.DataCategory, policy.Decision],
    history: Sequence[HistoryRow],
    stage_visible: bool,
) -> dict[str, Any]:
    """The process state as the caller's decisions let it see it (`stage_visible`:
    `may_see_stage`): the one projection behind both the list rows and the detail view."""
    allowed = allowed_categories(decisions)
    view: dict[str, Any] = {
        "id": str(referral.id),
        "framework_id": str(referral.framework_id),
        "referring_office": referral.referring_office,
        "district": referral.district,
        "language": referral.language,
        "offered_provider": referral.offered_provider,
        "accepted_provider": referral.accepted_provider,
        "consent_deadline": _iso(referral.consent_deadline),
        "offer_expires_at": _iso(referral.offer_expires_at),
        "decision_due": _iso(referral.decision_due),
        "decision": referral.decision,
        "created_at": _iso(referral.created_at),
        "updated_at": _iso(
            seen_updated_at(
                referral=referral, history=history, allowed=allowed, stage_visible=stage_visible
            )
        ),
        "purged": referral.purged_at is not None,
    }
    if stage_visible:
        view.update(
            {
                "stage": referral.stage,
                "status": referral.status,
                "business_status": referral.business_status,
                "outcome": referral.outcome,
                "next_progress_report_due": _iso(referral.next_progress_report_due),
            }
        )
    else:
        view["stage"] = _COARSE_STAGE.get(referral.stage, referral.stage)
    return view


# Facts about the referral process itself (not about care): the referring office always
# learns them, whatever the reporting consent, e.g. "ended: consent withdrawn".
PROCESS_FACTS = frozenset(
    {
        ComplianceFact.CONSENT_WITHDRAWN.value,
        ComplianceFact.CONSENT_EXPIRED.value,
        ComplianceFact.CONSENT_NOT_GIVEN.value,
        ComplianceFact.NO_PROVIDER_AVAILABLE.value,
        ComplianceFact.ENDED_WITHOUT_REPORTING_CONSENT.value,
    }
)


def justice_messages(*, session: Session, referral_id: uuid.UUID) -> list[ChannelMessage]:
    """Every message of the channel to justice about one referral, oldest first (one read,
    from which a view takes what its caller may see)."""
    rows = read_rows(session, _JUSTICE_MESSAGES, {"referral_id": referral_id})
    return [ChannelMessage(*row) for row in rows]


def process_facts(messages: Sequence[ChannelMessage]) -> list[dict[str, Any]]:
    """The process facts sent to the referring office on the justice channel."""
    return [
        {"fact": m.fact, "at": _iso(m.created_at), "notice": m.notice}
        for m in messages
        if m.fact in PROCESS_FACTS
    ]


def unreceived_messages_shown(messages: Sequence[ChannelMessage], *, compliance: bool) -> list[str]:
    """Keys of the channel messages the referring office's view shows (every fact with the
    compliance category, else the process facts only, see `case_view`) that the read found
    not yet received. A received message stays received, so only these can be a first
    receipt: a view that shows none notes none, and its entry joins the log's group commit
    rather than taking a transaction of its own."""
    return [
        m.key for m in messages if (compliance or m.fact in PROCESS_FACTS) and m.received_at is None
    ]


def withheld_reason(decision: policy.Decision, consent: policy.ConsentFacts | None) -> str:
    """Why a category is withheld, as a code (never the content)."""
    if decision.policy_ids:
        return "forbidden_by_policy"
    if consent is None or consent.status is not policy.ConsentState.ACTIVE:
        return "no_active_consent"
    return "not_permitted"


def case_view(
    *,
    session: Session,
    vault: PersonalDataVault,
    viewer: Principal,
    referral: ReferralLike,
    decisions: dict[policy.DataCategory, policy.Decision],
    consent: policy.ConsentFacts | None,
    stage_visible: bool,
    messages: Sequence[ChannelMessage] | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """The referral projected per data category, and the categories actually disclosed.
    `messages`: the referral's justice channel (`justice_messages`), if already read."""
    allowed = {cat.value: d for cat, d in decisions.items() if d.allowed}
    history = status_history(session=session, referral_ids=[referral.id])[referral.id]
    view = process_view(referral, decisions=decisions, history=history, stage_visible=stage_visible)
    content: dict[str, dict[str, Any]] = {}
    wanted = {
        name: token
        for name, token in referral.personal.items()
        if FIELD_CATEGORY.get(name) in allowed
        and (
            allowed[FIELD_CATEGORY[name]].projection != "minimal"
            or name.split(".", 1)[1] in MINIMAL_FIELDS.get(FIELD_CATEGORY[name], set())
        )
    }
    opened = (
        vault.open_record(session=session, referral_id=referral.id, fields=wanted) if wanted else {}
    )
    for name, value in opened.items():
        category, field = name.split(".", 1)
        content.setdefault(FIELD_CATEGORY[name], {})[field] = value
    disclosed = sorted(content)
    to_office = viewer.organisation == referral.referring_office
    if messages is None:
        needed = "compliance" in allowed or to_office
        messages = justice_messages(session=session, referral_id=referral.id) if needed else []
    if "compliance" in allowed:
        content["compliance"] = {
            "facts": [{"fact": m.fact, "at": _iso(m.created_at)} for m in messages],
            "notice": messages[0].notice if messages else None,
        }
        disclosed.append("compliance")
    if to_office and "compliance" not in allowed:
        view["process_facts"] = process_facts(messages)
    view["content"] = content
    view["withheld"] = [
        {"category": cat.value, "reason": withheld_reason(d, consent)}
        for cat, d in decisions.items()
        if not d.allowed and cat is not policy.DataCategory.ACCESS_LOG
    ]
    return view, sorted(set(disclosed))
