"""The referral API under /api/v1: every route asks the policies and is audited."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Header, Path, Query, Response
from fastapi.concurrency import run_in_threadpool
from sqlmodel import Session
from temporalio.client import (
    Client,
    RPCTimeoutOrCancelledError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.service import RPCError, RPCStatusCode

from api.deps import Caller, CallerDep, ContextDep, PrincipalDep, RuntimeDep, TemporalDep
from api.errors import describe, problem_responses
from api.schemas import (
    CareTeamIn,
    CareTeamMember,
    CloseIn,
    ConsentIn,
    ConsentView,
    DecisionIn,
    DeclineIn,
    IntakeIn,
    ProgressIn,
    ReferralPage,
    ReferralSummary,
    ReferralView,
)
from services import care_team, idempotency, policy, referrals
from services import consent as consent_service
from services.access import Access, RequestContext
from services.audit import purpose
from services.audit.models import AuditEventType, AuditOutcome
from services.case_content import ReferralCreate
from services.crypto import Pseudonymizer
from services.db import session_scope
from services.errors import (
    Conflict,
    Forbidden,
    KeyInUse,
    NotFound,
    PreconditionRequired,
    StepRefused,
    Unavailable,
    Unprocessable,
)
from services.lifecycle import (
    AcceptInput,
    Actor,
    CancelInput,
    CloseInput,
    ConsentRecordInput,
    ConsentStatus,
    ConsentWithdrawInput,
    DecisionInput,
    DeclineInput,
    IntakeInput,
    ProgressInput,
    RematchInput,
    Snapshot,
    Stage,
)
from services.models import CareTeamAssignment, Referral, ReferralRecord, utcnow
from services.principal import Principal
from services.runtime import Runtime
from workflows.reconciler import start_referral
from workflows.referral import ReferralWorkflow, workflow_id

router = APIRouter(prefix="/api/v1", tags=["referrals"], responses=problem_responses(409))

ReferralId = Annotated[uuid.UUID, "the referral's id"]
IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", max_length=200, pattern=r"^[A-Za-z0-9._:-]{8,200}$"),
]

logger = logging.getLogger("api.routes")
# How long a retry that took over a dead try's claim waits for that try's update outcome.
UPDATE_TAKEN_WAIT = timedelta(seconds=10)
T = TypeVar("T")
_HIDDEN_RELATIONS = {policy.Relation.OUTSIDER, policy.Relation.FRAMEWORK_MEMBER}


def purpose_of(principal: Principal) -> str:
    """The purpose of use recorded with each access (an HL7 PurposeOfUse code or a local code
    for justice: services/audit/purpose.py), from the caller's sector."""
    return purpose.for_sector(principal.sector).value


def actor_of(principal: Principal) -> Actor:
    return Actor(
        subject=principal.subject,
        organisation=principal.organisation,
        roles=tuple(sorted(r.value for r in principal.roles)),
    )


def guard(
    session: Session,
    access: Access,
    referral_id: uuid.UUID,
    action: policy.Action,
    widening: policy.ConsentWidening | None = None,
) -> tuple[ReferralRecord, policy.CaseFacts, policy.ConsentFacts | None]:
    """Load a referral and authorise `action`; outsiders learn nothing (404, not 403).
    `widening`: what a consent version being recorded adds (record_consent only)."""
    access.referral_id = referral_id
    referral = referrals.find(session=session, referral_id=referral_id)
    if referral is None:
        access.decide(action=action, case=None, consent=None)
        raise NotFound("no such referral")
    case = referrals.case_facts(session=session, referral=referral)
    consent = referrals.consent_facts(session=session, referral_id=referral_id)
    asked = consent
    if widening is not None:
        asked = (consent or policy.NO_CONSENT).model_copy(update={"widening": widening})
    decision = access.decide(action=action, case=case, consent=asked)
    if not decision.allowed:
        if policy.relation_of(access.principal, case) in _HIDDEN_RELATIONS:
            raise NotFound("no such referral")
        raise Forbidden("you may not take this step on this referral")
    return referral, case, consent


def open_access(
    runtime: Runtime,
    principal: Principal,
    ctx: RequestContext,
    event_type: AuditEventType,
    action: str,
    referral_id: uuid.UUID | None = None,
) -> Access:
    """A new access of `principal`, recorded as one audit entry when it is finished."""
    return runtime.gatekeeper.open(
        principal=principal,
        event_type=event_type,
        action=action,
        purpose=purpose_of(principal),
        ctx=ctx,
        referral_id=referral_id,
    )


def project(
    runtime: Runtime, access: Access, referral_id: uuid.UUID, session: Session | None = None
) -> dict[str, Any]:
    """The referral projected for the access's principal; its disclosures fill `access`."""
    if session is None:
        # the request's connection goes back to the pool before the audit entry is written
        with Session(runtime.engine) as own:
            return project(runtime, access, referral_id, own)
    referral, case, consent = guard(session, access, referral_id, policy.Action.VIEW_REFERRAL)
    decisions = access.disclosures(case=case, consent=consent)
    follows = access.decide(action=policy.Action.VIEW_STAGE, case=case, consent=consent)
    # the channel to justice is read once: for the view and for what its recipient received
    messages = (
        referrals.justice_messages(session=session, referral_id=referral_id)
        if access.principal.organisation == referral.referring_office
        else None
    )
    view, disclosed = referrals.case_view(
        session=session,
        vault=runtime.vault,
        viewer=access.principal,
        referral=referral,
        decisions=decisions,
        consent=consent,
        stage_visible=referrals.may_see_stage(decisions, follows),
        messages=messages,
    )
    access.disclose(disclosed)
    if messages is not None:
        # what the channel to justice carried reaches its recipient with this view
        compliance = policy.DataCategory.COMPLIANCE.value in disclosed
        access.receive(
            referrals.unreceived_messages_shown(messages, compliance=compliance),
            [policy.DataCategory.COMPLIANCE.value] if compliance else [],
        )
    return view


def reading(principal: Principal, ctx: RequestContext, referral_id: uuid.UUID) -> dict[str, Any]:
    """The access of reading one referral, as its entry records it: the same whether a
    thread (`view_of`) or the event loop (`get_referral`) serves the read."""
    return {
        "principal": principal,
        "event_type": AuditEventType.READ,
        "action": "referral.read",
        "purpose": purpose_of(principal),
        "ctx": ctx,
        "referral_id": referral_id,
    }


def view_of(
    runtime: Runtime, principal: Principal, ctx: RequestContext, referral_id: uuid.UUID
) -> dict[str, Any]:
    """The referral projected for `principal`: one access, its entry committed first."""
    with runtime.gatekeeper.access(**reading(principal, ctx, referral_id)) as access:
        return project(runtime, access, referral_id)


def refusal(
    runtime: Runtime, access: Access, referral_id: uuid.UUID, exc: Exception
) -> StepRefused | None:
    """The refusal of a step as the caller may read it, None if `exc` is no refusal.

    Why a step is refused names the stage ("not allowed in stage in_progress"). Only a caller
    who may see the stage (decided as for the detail view, within this step's access) reads
    why; every other caller reads the same words whatever the hidden stage."""
    described = describe(exc)
    if described is None or described[0] != StepRefused.status:
        return None
    with Session(runtime.engine) as session:
        referral = referrals.get(session=session, referral_id=referral_id)
        case = referrals.case_facts(session=session, referral=referral)
        consent = referrals.consent_facts(session=session, referral_id=referral_id)
        decisions = access.disclosures(case=case, consent=consent)
        follows = access.decide(action=policy.Action.VIEW_STAGE, case=case, consent=consent)
    if referrals.may_see_stage(decisions, follows):
        return StepRefused(described[2])
    return StepRefused(StepRefused.UNSEEN)


class StepPending(Unavailable):
    """The workflow did not answer a step in time; it may still take it. A keyed claim is
    kept, so a retry with the same Idempotency-Key finishes the step or repeats its answer
    (after `idempotency.STALE_CLAIM`) rather than deciding it again on the state it made."""


async def _in_time(runtime: Runtime, update: Awaitable[T]) -> T:
    """`update` (a workflow update), or 503 when it takes longer than the settings allow."""
    try:
        return await asyncio.wait_for(update, runtime.settings.workflow_update_timeout_seconds)
    except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError):
        raise StepPending(
            "the referral's process did not answer in time; try again with the same Idempotency-Key"
        ) from None


def _handle(temporal: Client, referral_id: uuid.UUID) -> WorkflowHandle[ReferralWorkflow, Snapshot]:
    return temporal.get_workflow_handle_for(ReferralWorkflow.run, workflow_id(referral_id))


class _KeyedHandle(WorkflowHandle[ReferralWorkflow, Snapshot]):
    """A workflow handle whose updates carry the step's idempotent update id: Temporal runs
    an update with a known id once and answers its first result again."""

    def __init__(self, client: Client, referral_id: uuid.UUID, update_id: str) -> None:
        super().__init__(client, workflow_id(referral_id), result_type=Snapshot)
        self._update_id = update_id

    async def execute_update(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("id", self._update_id)
        return await super().execute_update(*args, **kwargs)


async def step(
    *,
    runtime: Runtime,
    temporal: Client,
    principal: Principal,
    ctx: RequestContext,
    referral_id: uuid.UUID,
    action: policy.Action,
    run_update: Callable[[WorkflowHandle[ReferralWorkflow, Snapshot], Actor], Any],
    after: Callable[[Session, Referral], list[str]] | None = None,
    idempotency_key: str | None = None,
    body: Any = None,
    widening: policy.ConsentWidening | None = None,
) -> dict[str, Any]:
    """Authorise, ask the workflow (its validator may refuse: 409), answer the view; one
    audit entry, committed with the step's stored state and its stored answer. With an
    Idempotency-Key, a retry repeats the first answer and the workflow takes the step once."""
    keyed = idempotency_key is not None
    org = principal.organisation
    if keyed:
        assert idempotency_key is not None
        # under every live pseudonym key version, current first: a retry after a rotation
        # still matches the fingerprint stored under the version before
        secrets_ = [key for _, key in runtime.keyring.pseudonym_keys()]
        prints = [
            idempotency.fingerprint(key, purpose=f"{action.value}:{referral_id}", body=body)
            for key in secrets_
        ]
        claimed = await run_in_threadpool(
            _claim, runtime, org, idempotency_key, prints, referral_id, action.value
        )
        if claimed.replay_status is not None:
            # the step was taken: answer as the first time, the view read afresh (and audited)
            replay = open_access(
                runtime, principal, ctx, AuditEventType.READ, f"referral.{action.value}.replay"
            )
            return await run_in_threadpool(_answer, runtime, replay, referral_id, None)
    access = open_access(
        runtime, principal, ctx, AuditEventType.UPDATE, f"referral.{action.value}", referral_id
    )
    # Whether the step may have reached the workflow without its outcome being known here.
    # Then the claim stays when this request fails: a retry waits for the lease and takes it
    # over, asking Temporal for the update's outcome, instead of deciding the step afresh on
    # a state the step itself may have changed (an accepted offer cannot be accepted).
    in_doubt = False
    try:
        handle = _handle(temporal, referral_id)
        taken = False
        if keyed:
            # the version the first try used: a retry is the same update to the workflow
            update_id = idempotency.update_id(
                secrets_[claimed.matched],
                organisation=org,
                idempotency_key=str(idempotency_key),
            )
            handle = _KeyedHandle(temporal, referral_id, update_id)
            if claimed.takeover:
                in_doubt = True
                taken = await _update_taken(handle, update_id)
                in_doubt = False
        if taken:
            # The first try was decided, reached the workflow and took effect, then died
            # before answering. Deciding the step again on the state it created would refuse
            # it (an accepted offer cannot be accepted): the retry finishes the first try,
            # as the caller's view of the case.
            await run_in_threadpool(
                _authorise, runtime, access, referral_id, policy.Action.VIEW_REFERRAL
            )
        else:
            await run_in_threadpool(_authorise, runtime, access, referral_id, action, widening)
            in_doubt = keyed
            try:
                await _in_time(runtime, run_update(handle, actor_of(principal)))
            except (WorkflowUpdateFailedError, RPCError, Conflict) as exc:
                refused = await run_in_threadpool(refusal, runtime, access, referral_id, exc)
                if refused is None:
                    raise  # e.g. Temporal unavailable: the update may or may not have arrived
                in_doubt = False  # the workflow refused it: nothing was taken
                raise refused from None
        in_doubt = keyed  # taken, but not answered until the answer is stored

        # Without stored state the view is read from the request pool before the entry is
        # written; with care notes it is read in the audit writer's transaction, so it shows
        # them. Either way the audit writer never waits for a request's connection.
        view = None
        if after is None:
            view = await run_in_threadpool(_view_or_gone, runtime, access, referral_id, None)

        def store(session: Session) -> dict[str, Any]:
            if keyed:
                idempotency.answered(
                    session=session, organisation=org, key=str(idempotency_key), status_code=200
                )
            if after is None:
                assert view is not None
                return view
            referral = referrals.get(session=session, referral_id=referral_id)
            access.disclose(after(session, referral))
            return _view_or_gone(runtime, access, referral_id, session)

        return await run_in_threadpool(access.finish_with, store)
    except BaseException as error:
        await run_in_threadpool(access.abandon, error)
        if keyed and not in_doubt:
            await run_in_threadpool(_release, runtime, org, str(idempotency_key))
        raise


async def _update_taken(handle: WorkflowHandle[ReferralWorkflow, Snapshot], update_id: str) -> bool:
    """Whether the workflow already completed the update `update_id` successfully; False if
    it never reached the workflow or was refused (the step is decided again). An update still
    running raises KeyInUse: deciding it again now would meet the state it is making."""
    try:
        # The RPC's own deadline, not asyncio.wait_for: cancelling the poll turns into
        # WorkflowUpdateRPCTimeoutOrCancelledError, which wait_for passes on as is.
        await handle.get_update_handle(update_id).result(rpc_timeout=UPDATE_TAKEN_WAIT)
    except RPCTimeoutOrCancelledError:
        logger.info("a taken-over step is still running in its workflow")
        raise KeyInUse(idempotency.IN_USE) from None
    except RPCError as exc:
        if exc.status is not RPCStatusCode.NOT_FOUND:
            raise  # Temporal unavailable: the outcome is unknown, try again later
        return False  # the first try never reached the workflow
    except WorkflowUpdateFailedError:
        return False  # the workflow refused the first try: decide the step again
    return True


def _claim(
    runtime: Runtime,
    org: str,
    key: str,
    prints: list[str],
    referral_id: uuid.UUID,
    action: str,
) -> idempotency.Claim:
    with Session(runtime.engine) as session:
        return idempotency.claim(
            session=session,
            organisation=org,
            key=key,
            fingerprints=prints,
            referral_id=referral_id,
            action=action,
            ttl_seconds=runtime.settings.idempotency_ttl_seconds,
        )


def _release(runtime: Runtime, org: str, key: str) -> None:
    with Session(runtime.engine) as session:
        idempotency.release(session=session, organisation=org, key=key)


def _authorise(
    runtime: Runtime,
    access: Access,
    referral_id: uuid.UUID,
    action: policy.Action,
    widening: policy.ConsentWidening | None = None,
) -> None:
    with Session(runtime.engine) as session:
        guard(session, access, referral_id, action, widening)


def _view_or_gone(
    runtime: Runtime, access: Access, referral_id: uuid.UUID, session: Session | None
) -> dict[str, Any]:
    try:
        return project(runtime, access, referral_id, session)
    except NotFound:
        # e.g. a provider that just declined: the step happened, the case is no longer its own
        return {"id": str(referral_id), "stage": "no_longer_visible"}


def _answer(
    runtime: Runtime, access: Access, referral_id: uuid.UUID, session: Session | None
) -> dict[str, Any]:
    try:
        view = _view_or_gone(runtime, access, referral_id, session)
    except BaseException as error:
        access.abandon(error)
        raise
    access.finish()
    return view


# ---- create, list, read ----------------------------------------------------------------

_STORED_CATEGORIES = ("identity", "contact", "judicial_context", "referral_reason")


@router.post(
    "/referrals", status_code=201, response_model=ReferralView, responses=problem_responses(428)
)
async def create_referral(
    body: ReferralCreate,
    response: Response,
    runtime: RuntimeDep,
    temporal: TemporalDep,
    principal: PrincipalDep,
    ctx: ContextDep,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, Any]:
    """Create and submit a referral (prosecutor's office). The Idempotency-Key is required:
    a retry with it returns the same referral, never a second one for the same person."""
    access = open_access(runtime, principal, ctx, AuditEventType.CREATE, "referral.create")
    # the current pseudonym key makes the pseudonyms and the stored fingerprint; a replay
    # matches the fingerprint under any live version (made before a rotation)
    pseudonym_keys = runtime.keyring.pseudonym_keys()
    pseudonymizer = Pseudonymizer(pseudonym_keys[0][1], pseudonym_keys[0][0])
    body_hashes = [referrals.request_hash(body, key) for _, key in pseudonym_keys]

    def store(session: Session) -> tuple[Referral, bool, Any]:
        # the referral, its start intent and this access's audit entry: one transaction
        case = referrals.draft_case(
            session=session, principal=principal, framework_id=body.framework_id
        )
        decision = access.decide(action=policy.Action.CREATE_REFERRAL, case=case, consent=None)
        if not decision.allowed:
            raise Forbidden("you may not create referrals under this framework")
        referrals.active_framework(
            session=session, framework_id=body.framework_id, principal=principal
        )
        if idempotency_key is None:
            # decided and audited first; then a retry could never make a second referral
            raise PreconditionRequired("an Idempotency-Key header is required to create a referral")
        referral = referrals.find_replay(
            session=session,
            organisation=principal.organisation,
            key=str(idempotency_key),
            body_hashes=body_hashes,
        )
        replayed = referral is not None
        if referral is None:
            referral = referrals.create(
                session=session,
                vault=runtime.vault,
                pseudonymizer=pseudonymizer,
                principal=principal,
                body=body,
                idempotency_key=idempotency_key,
                body_hash=body_hashes[0],
                payload_keys=runtime.payload_keys,
            )
            access.disclose(_STORED_CATEGORIES)
        access.referral_id = referral.id
        wf_input = referrals.workflow_input(
            session=session, referral=referral, settings=runtime.settings
        )
        return referral, replayed, wf_input

    try:
        referral, replayed, wf_input = await run_in_threadpool(access.finish_with, store)
    except BaseException as error:
        await run_in_threadpool(access.abandon, error)
        raise
    if referral.stage == "draft":
        # also on a replay: the reconciler starts it too, whichever comes first
        await start_referral(
            client=temporal,
            engine=runtime.engine,
            task_queue=runtime.settings.temporal_task_queue,
            inp=wf_input,
        )
        # answers stay consistent: wait until the workflow has projected the submission
        await _in_time(
            runtime, _handle(temporal, referral.id).execute_update(ReferralWorkflow.submitted)
        )
    if replayed:
        response.status_code = 200
        response.headers["Idempotent-Replayed"] = "true"
    return await run_in_threadpool(_answer_created, runtime, access, referral.id)


def _answer_created(runtime: Runtime, access: Access, referral_id: uuid.UUID) -> dict[str, Any]:
    """The created referral's view; a category the create's entry does not name (none in
    practice) gets an entry of its own before it leaves."""
    recorded = set(access.disclosed)
    view = project(runtime, access, referral_id)
    if not set(access.disclosed) <= recorded:
        runtime.gatekeeper.audit.append([access.event(AuditOutcome.SUCCESS)])
    return view


@router.get("/referrals", response_model=ReferralPage)
async def list_referrals(
    runtime: RuntimeDep,
    principal: PrincipalDep,
    ctx: ContextDep,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> dict[str, Any]:
    """The caller's organisation's referrals, newest first, paged."""

    def load() -> dict[str, Any]:
        with runtime.gatekeeper.access(
            principal=principal,
            event_type=AuditEventType.QUERY,
            action="referral.list",
            purpose=purpose_of(principal),
            ctx=ctx,
        ) as access:
            decision = access.decide(action=policy.Action.LIST_REFERRALS, case=None, consent=None)
            if not decision.allowed:
                raise Forbidden("you may not list referrals")
            with Session(runtime.engine) as session:
                rows = referrals.list_candidates(session=session, principal=principal)
                facts = referrals.list_facts(session=session, rows=rows)
                # the rows the caller may view (the detail view's decision), and what of each:
                # the detail view's disclosure decisions and projection, so a row never says
                # more
                views = access.decide_each(action=policy.Action.VIEW_REFERRAL, cases=facts)
                viewable = [
                    (row, fact)
                    for row, fact, v in zip(rows, facts, views, strict=True)
                    if v.allowed
                ]
                total = len(viewable)
                page = viewable[offset : offset + limit]
                decisions = access.disclosures_each(cases=[fact for _, fact in page])
                follows = access.decide_each(
                    action=policy.Action.VIEW_STAGE, cases=[fact for _, fact in page]
                )
                items = [
                    ReferralSummary.model_validate(row).model_dump()
                    for row in referrals.list_rows(
                        session=session,
                        rows=[row for row, _ in page],
                        decisions=decisions,
                        stage_visible=[
                            referrals.may_see_stage(decided, follow)
                            for decided, follow in zip(decisions, follows, strict=True)
                        ],
                    )
                ]
            return {"items": items, "total": total, "offset": offset, "limit": limit}

    return await run_in_threadpool(load)


def read_referral(
    runtime: Runtime, caller: Caller, ctx: RequestContext, referral_id: uuid.UUID
) -> dict[str, Any]:
    """`view_of` for a caller whose token is checked first, in the same thread (the route
    every party polls: one thread-pool hop a read, not two)."""
    return view_of(runtime, caller.authenticate(), ctx, referral_id)


@router.get("/referrals/{referral_id}", response_model=ReferralView)
async def get_referral(
    referral_id: uuid.UUID, runtime: RuntimeDep, caller: CallerDep, ctx: ContextDep
) -> dict[str, Any]:
    """One referral, projected per data category for the caller."""
    principal = None if runtime.loop_engine is None else caller.authenticate_cached()
    if runtime.loop_engine is None or principal is None:
        return await run_in_threadpool(read_referral, runtime, caller, ctx, referral_id)
    # The route every party polls, on the embedded database: read and projected on the event
    # loop (`event_loop_engine` says why); its entry is written by the access writer's thread
    # with those of the reads that arrived meanwhile, in one transaction, and committed
    # before the view leaves.
    async with runtime.gatekeeper.access_async(**reading(principal, ctx, referral_id)) as access:
        with Session(runtime.loop_engine) as session:
            view = project(runtime, access, referral_id, session)
    return view


# ---- consent ---------------------------------------------------------------------------


@router.post("/referrals/{referral_id}/consent", response_model=ReferralView)
async def record_consent(
    referral_id: uuid.UUID,
    body: ConsentIn,
    runtime: RuntimeDep,
    temporal: TemporalDep,
    principal: PrincipalDep,
    ctx: ContextDep,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, Any]:
    """Record the person's consent (or refusal); a new version each time."""
    missing = consent_service.check_form(
        given=body.given,
        purposes=[p.value for p in body.purposes],
        categories=list(body.categories),
        recipients=list(body.recipients),
        disclosers=list(body.disclosers),
        right_to_revoke_explained=body.right_to_revoke_explained,
        valid_until=body.valid_until,
        now=utcnow(),
        signed_by=body.signed_by,
        signer_capacity=body.signer_capacity,
        signed_on=body.signed_on,
        signing_method=body.signing_method,
    )
    if missing:
        raise Unprocessable("the consent lacks: " + ", ".join(missing))
    # Who may record this version depends on what it adds to the consent as it stands:
    # the policies decide with it (lifecycle.cedar).
    widening = await run_in_threadpool(_widening_of, runtime, referral_id, body)

    async def run(handle: WorkflowHandle[ReferralWorkflow, Snapshot], actor: Actor) -> Any:
        return await handle.execute_update(
            ReferralWorkflow.record_consent,
            ConsentRecordInput(
                actor=actor,
                consent_id=uuid.uuid4(),
                given=body.given,
                purposes=tuple(body.purposes),
                categories=tuple(body.categories),
                recipients=tuple(body.recipients),
                disclosers=tuple(body.disclosers),
                valid_until=body.valid_until,
                evidence_hash=consent_service.evidence_fingerprint(
                    runtime.keyring.pseudonym_key(),
                    referral_id=referral_id,
                    evidence_hash=body.evidence_hash,
                ),
                recorded_at=utcnow(),
                right_to_revoke_explained=body.right_to_revoke_explained,
                signed_by=body.signed_by,
                signer_capacity=body.signer_capacity,
                signed_on=body.signed_on,
                signing_method=body.signing_method,
            ),
        )

    return await step(
        runtime=runtime,
        temporal=temporal,
        principal=principal,
        ctx=ctx,
        referral_id=referral_id,
        action=policy.Action.RECORD_CONSENT,
        run_update=run,
        idempotency_key=idempotency_key,
        body=body.model_dump(mode="json"),
        widening=widening,
    )


def _widening_of(
    runtime: Runtime, referral_id: uuid.UUID, body: ConsentIn
) -> policy.ConsentWidening:
    with Session(runtime.engine) as session:
        return consent_service.widening(
            current=referrals.current_consent(session=session, referral_id=referral_id),
            at=utcnow(),
            purposes=[p.value for p in body.purposes],
            categories=list(body.categories),
            recipients=list(body.recipients),
            disclosers=list(body.disclosers),
            valid_until=body.valid_until,
        )


@router.post("/referrals/{referral_id}/consent/withdraw", response_model=ReferralView)
async def withdraw_consent(
    referral_id: uuid.UUID,
    runtime: RuntimeDep,
    temporal: TemporalDep,
    principal: PrincipalDep,
    ctx: ContextDep,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, Any]:
    """Withdraw consent: effective at once. An open referral is cancelled by its workflow;
    after the care ended, the stored consent is withdrawn and the care team's access to
    the case's content stops at the next request."""

    async def run(handle: WorkflowHandle[ReferralWorkflow, Snapshot], actor: Actor) -> Any:
        return await handle.execute_update(
            ReferralWorkflow.withdraw_consent,
            # No timestamp from here: the workflow stamps the withdrawal when it takes effect,
            # under the case's lock, so no fact it let through before is dated after it.
            ConsentWithdrawInput(actor=actor),
        )

    if await run_in_threadpool(_after_care, runtime, referral_id):
        return await run_in_threadpool(_withdraw_after_care, runtime, principal, ctx, referral_id)
    try:
        view = await step(
            runtime=runtime,
            temporal=temporal,
            principal=principal,
            ctx=ctx,
            referral_id=referral_id,
            action=policy.Action.WITHDRAW_CONSENT,
            run_update=run,
            idempotency_key=idempotency_key,
        )
    except (WorkflowUpdateFailedError, StepRefused):
        # the care ended while this request was on its way: withdraw without the workflow
        if await run_in_threadpool(_after_care, runtime, referral_id):
            return await run_in_threadpool(
                _withdraw_after_care, runtime, principal, ctx, referral_id
            )
        raise
    if await run_in_threadpool(_after_care, runtime, referral_id, active_consent=True):
        # the workflow had ended the care when the withdrawal reached it and stored nothing:
        # the withdrawal still holds, without the workflow
        return await run_in_threadpool(_withdraw_after_care, runtime, principal, ctx, referral_id)
    return view


def _after_care(runtime: Runtime, referral_id: uuid.UUID, *, active_consent: bool = False) -> bool:
    """Whether the referral's care has ended (and, if asked, a consent is still active)."""
    with Session(runtime.engine) as session:
        referral = session.get(Referral, referral_id)
        if referral is None or referral.stage not in consent_service.AFTER_CARE:
            return False
        if not active_consent:
            return True
        current = referrals.current_consent(session=session, referral_id=referral_id)
        return current is not None and current.status == ConsentStatus.ACTIVE.value


def _withdraw_after_care(
    runtime: Runtime, principal: Principal, ctx: RequestContext, referral_id: uuid.UUID
) -> dict[str, Any]:
    """A withdrawal after the care ended: decided by the policies, stored, audited (one
    entry, committed with the withdrawal)."""
    access = open_access(
        runtime,
        principal,
        ctx,
        AuditEventType.UPDATE,
        f"referral.{policy.Action.WITHDRAW_CONSENT.value}",
        referral_id,
    )
    try:
        with Session(runtime.engine) as session:
            guard(session, access, referral_id, policy.Action.WITHDRAW_CONSENT)

        def store(session: Session) -> None:
            referral = referrals.get(session=session, referral_id=referral_id)
            consent_service.withdraw_after_end(session=session, referral=referral, at=utcnow())

        try:
            access.finish_with(store)
        except Conflict as exc:
            # refused as any step is: the reason only to a caller who may see the stage
            refused = refusal(runtime, access, referral_id, exc)
            if refused is None:
                raise
            raise refused from None
    except BaseException as error:
        access.abandon(error)
        raise
    try:
        return view_of(runtime, principal, ctx, referral_id)
    except NotFound:
        return {"id": str(referral_id), "stage": "no_longer_visible"}


@router.get("/referrals/{referral_id}/consents", response_model=list[ConsentView])
async def list_consents(
    referral_id: uuid.UUID, runtime: RuntimeDep, principal: PrincipalDep, ctx: ContextDep
) -> list[dict[str, Any]]:
    """Every consent version of a referral (no personal content)."""

    def load() -> list[dict[str, Any]]:
        with runtime.gatekeeper.access(
            principal=principal,
            event_type=AuditEventType.READ,
            action="consent.list",
            purpose=purpose_of(principal),
            ctx=ctx,
            referral_id=referral_id,
        ) as access:
            with session_scope(runtime.engine) as session:
                guard(session, access, referral_id, policy.Action.VIEW_REFERRAL)
                # a consent whose validity ended is stored as expired, then shown so
                rows = consent_service.list_for(
                    session=session, referral_id=referral_id, at=utcnow()
                )
                return [
                    ConsentView.model_validate({**r.model_dump(), "id": str(r.id)}).model_dump()
                    for r in rows
                ]

    return await run_in_threadpool(load)


# ---- care team (need to know) -----------------------------------------------------------


def _members(rows: list[CareTeamAssignment]) -> list[dict[str, Any]]:
    return [
        CareTeamMember(
            subject=r.subject, assigned_by=r.assigned_by, assigned_at=r.assigned_at
        ).model_dump()
        for r in rows
    ]


def _change_care_team(
    runtime: Runtime,
    principal: Principal,
    ctx: RequestContext,
    referral_id: uuid.UUID,
    action: policy.Action,
    subject: str | None,
) -> list[dict[str, Any]]:
    """Decide `action` (assign, release, or with no subject: see the team), apply, audit
    (one entry, committed with the change)."""
    changing = subject is not None
    with runtime.gatekeeper.access(
        principal=principal,
        event_type=AuditEventType.UPDATE if changing else AuditEventType.READ,
        action=f"referral.{action.value}" if changing else "care_team.list",
        purpose=purpose_of(principal),
        ctx=ctx,
        referral_id=referral_id,
    ) as access:
        with Session(runtime.engine) as session:
            guard(session, access, referral_id, action)
        if not changing:
            with Session(runtime.engine) as session:
                referral = referrals.get(session=session, referral_id=referral_id)
                return _members(care_team.current(session=session, referral=referral))

        def store(session: Session) -> list[dict[str, Any]]:
            referral = referrals.get(session=session, referral_id=referral_id)
            assert subject is not None
            if action is policy.Action.ASSIGN_CARE_WORKER:
                care_team.assign(
                    session=session,
                    referral=referral,
                    subject=subject,
                    by=principal.subject,
                    at=utcnow(),
                )
            else:
                care_team.release(
                    session=session,
                    referral=referral,
                    subject=subject,
                    by=principal.subject,
                    at=utcnow(),
                )
            session.flush()
            return _members(care_team.current(session=session, referral=referral))

        return access.finish_with(store)


@router.get("/referrals/{referral_id}/care-team", response_model=list[CareTeamMember])
def list_care_team(
    referral_id: uuid.UUID, runtime: RuntimeDep, principal: PrincipalDep, ctx: ContextDep
) -> list[dict[str, Any]]:
    """Who is assigned to the case: for the intake coordinator who assigns them."""
    return _change_care_team(
        runtime, principal, ctx, referral_id, policy.Action.ASSIGN_CARE_WORKER, None
    )


@router.post("/referrals/{referral_id}/care-team", response_model=list[CareTeamMember])
def assign_care_worker(
    referral_id: uuid.UUID,
    body: CareTeamIn,
    runtime: RuntimeDep,
    principal: PrincipalDep,
    ctx: ContextDep,
) -> list[dict[str, Any]]:
    """Assign a care worker (by subject id) to the case: they now see its content."""
    return _change_care_team(
        runtime, principal, ctx, referral_id, policy.Action.ASSIGN_CARE_WORKER, body.subject
    )


@router.post(
    "/referrals/{referral_id}/care-team/{subject}/release",
    response_model=list[CareTeamMember],
)
def release_care_worker(
    referral_id: uuid.UUID,
    subject: Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:|-]{0,199}$")],
    runtime: RuntimeDep,
    principal: PrincipalDep,
    ctx: ContextDep,
) -> list[dict[str, Any]]:
    """Release a care worker from the case: their access to its content stops at once."""
    return _change_care_team(
        runtime, principal, ctx, referral_id, policy.Action.RELEASE_CARE_WORKER, subject
    )


# ---- lifecycle steps --------------------------------------------------------------------


def _simple_step(
    path: str, action: policy.Action, update: Any, make: Callable[[Actor], Any], doc: str
) -> None:
    async def endpoint(
        referral_id: uuid.UUID,
        runtime: RuntimeDep,
        temporal: TemporalDep,
        principal: PrincipalDep,
        ctx: ContextDep,
        idempotency_key: IdempotencyKey = None,
    ) -> dict[str, Any]:
        async def run(handle: WorkflowHandle[ReferralWorkflow, Snapshot], actor: Actor) -> Any:
            return await handle.execute_update(update, make(actor))

        return await step(
            runtime=runtime,
            temporal=temporal,
            principal=principal,
            ctx=ctx,
            referral_id=referral_id,
            action=action,
            run_update=run,
            idempotency_key=idempotency_key,
        )

    endpoint.__doc__ = doc
    router.add_api_route(
        f"/referrals/{{referral_id}}/{path}",
        endpoint,
        methods=["POST"],
        response_model=ReferralView,
        name=action.value,
    )


_simple_step(
    "accept",
    policy.Action.ACCEPT,
    ReferralWorkflow.accept,
    lambda actor: AcceptInput(actor=actor),
    "Accept the offer (intake coordinator of the offered provider).",
)
_simple_step(
    "cancel",
    policy.Action.CANCEL,
    ReferralWorkflow.cancel,
    lambda actor: CancelInput(actor=actor),
    "Cancel the referral in any open stage, also during care (referring office).",
)
_simple_step(
    "rematch",
    policy.Action.REMATCH,
    ReferralWorkflow.rematch,
    lambda actor: RematchInput(actor=actor),
    "Try matching again after no provider was left (referring office).",
)


@router.post("/referrals/{referral_id}/decline", response_model=ReferralView)
async def decline(
    referral_id: uuid.UUID,
    body: DeclineIn,
    runtime: RuntimeDep,
    temporal: TemporalDep,
    principal: PrincipalDep,
    ctx: ContextDep,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, Any]:
    """Decline the offer with a reason code; the referral goes to the next provider."""

    async def run(handle: WorkflowHandle[ReferralWorkflow, Snapshot], actor: Actor) -> Any:
        return await handle.execute_update(
            ReferralWorkflow.decline, DeclineInput(actor=actor, reason=body.reason)
        )

    return await step(
        runtime=runtime,
        temporal=temporal,
        principal=principal,
        ctx=ctx,
        referral_id=referral_id,
        action=policy.Action.DECLINE,
        run_update=run,
        idempotency_key=idempotency_key,
        body=body.model_dump(mode="json"),
    )


@router.post("/referrals/{referral_id}/intake", response_model=ReferralView)
async def record_intake(
    referral_id: uuid.UUID,
    body: IntakeIn,
    runtime: RuntimeDep,
    temporal: TemporalDep,
    principal: PrincipalDep,
    ctx: ContextDep,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, Any]:
    """Record the intake (accepted provider); the trajectory is in progress."""

    async def run(handle: WorkflowHandle[ReferralWorkflow, Snapshot], actor: Actor) -> Any:
        return await handle.execute_update(
            ReferralWorkflow.record_intake,
            IntakeInput(actor=actor, intake_date=body.intake_date, attended=body.attended),
        )

    return await step(
        runtime=runtime,
        temporal=temporal,
        principal=principal,
        ctx=ctx,
        referral_id=referral_id,
        action=policy.Action.RECORD_INTAKE,
        run_update=run,
        idempotency_key=idempotency_key,
        body=body.model_dump(mode="json"),
    )


def _notes_saver(
    runtime: Runtime, clinical: str | None, welfare: str | None
) -> Callable[[Session, Referral], list[str]]:
    notes = {k: v for k, v in (("clinical.note", clinical), ("welfare.note", welfare)) if v}

    def save(session: Session, referral: Referral) -> list[str]:
        return referrals.store_care_notes(
            session=session, vault=runtime.vault, referral=referral, notes=notes
        )

    return save


@router.post("/referrals/{referral_id}/progress", response_model=ReferralView)
async def report_progress(
    referral_id: uuid.UUID,
    body: ProgressIn,
    runtime: RuntimeDep,
    temporal: TemporalDep,
    principal: PrincipalDep,
    ctx: ContextDep,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, Any]:
    """A progress report: attendance (a compliance fact) and care notes (never to justice)."""

    async def run(handle: WorkflowHandle[ReferralWorkflow, Snapshot], actor: Actor) -> Any:
        snapshot = await handle.execute_update(
            ReferralWorkflow.report_progress,
            ProgressInput(actor=actor, attendance=body.attendance, reported_at=utcnow()),
        )
        if snapshot.stage is not Stage.IN_PROGRESS:
            # the trajectory ended (e.g. consent withdrawn) while this report waited: no care
            # notes may be stored after the consent that allowed them has ended
            raise Conflict("the trajectory ended before this report; nothing was recorded")
        return snapshot

    return await step(
        runtime=runtime,
        temporal=temporal,
        principal=principal,
        ctx=ctx,
        referral_id=referral_id,
        action=policy.Action.REPORT_PROGRESS,
        run_update=run,
        idempotency_key=idempotency_key,
        body=body.model_dump(mode="json"),
        after=_notes_saver(runtime, body.clinical_note, body.welfare_note),
    )


@router.post("/referrals/{referral_id}/close", response_model=ReferralView)
async def close(
    referral_id: uuid.UUID,
    body: CloseIn,
    runtime: RuntimeDep,
    temporal: TemporalDep,
    principal: PrincipalDep,
    ctx: ContextDep,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, Any]:
    """Close the trajectory with an outcome; justice gets only the compliance fact."""

    async def run(handle: WorkflowHandle[ReferralWorkflow, Snapshot], actor: Actor) -> Any:
        snapshot = await handle.execute_update(
            ReferralWorkflow.close, CloseInput(actor=actor, outcome=body.outcome)
        )
        if snapshot.stage is not Stage(body.outcome.value):
            raise Conflict("the trajectory ended before this close; nothing was recorded")
        return snapshot

    return await step(
        runtime=runtime,
        temporal=temporal,
        principal=principal,
        ctx=ctx,
        referral_id=referral_id,
        action=policy.Action.CLOSE,
        run_update=run,
        idempotency_key=idempotency_key,
        body=body.model_dump(mode="json"),
        after=_notes_saver(runtime, body.clinical_note, None),
    )


@router.post("/referrals/{referral_id}/decision", response_model=ReferralView)
async def decide(
    referral_id: uuid.UUID,
    body: DecisionIn,
    runtime: RuntimeDep,
    temporal: TemporalDep,
    principal: PrincipalDep,
    ctx: ContextDep,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, Any]:
    """The prosecutor's decision after the outcome; the referral is closed."""

    async def run(handle: WorkflowHandle[ReferralWorkflow, Snapshot], actor: Actor) -> Any:
        return await handle.execute_update(
            ReferralWorkflow.decide, DecisionInput(actor=actor, decision=body.decision)
        )

    return await step(
        runtime=runtime,
        temporal=temporal,
        principal=principal,
        ctx=ctx,
        referral_id=referral_id,
        action=policy.Action.DECIDE,
        run_update=run,
        idempotency_key=idempotency_key,
        body=body.model_dump(mode="json"),
    )
