"""The auditor's API (`/api/v1/audit`) and the person's access report.

Auditors see audit entries (metadata, never case content), signed tree heads, proofs and
a verification on demand; every one of these requests is itself a Cedar decision and is
written to the log it reads.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import PlainTextResponse, Response
from pydantic import AwareDatetime
from sqlmodel import Session

from api.deps import ContextDep, PrincipalDep, RuntimeDep
from api.routes import guard, purpose_of
from api.schemas import PersonAccessReportIn
from services import person_report, policy, subject_report
from services.access import Access, RequestContext
from services.audit import figures as audit_figures
from services.audit.figures import Bucket, Figure, Window
from services.audit.keys import public_keys_pem
from services.audit.models import AuditEventType
from services.audit.purpose import PurposeOfUse
from services.audit.purpose import system_of as purpose_system_of
from services.audit.witness import Cosignature, stored_cosignatures
from services.errors import Forbidden, Unprocessable
from services.models import utcnow
from services.principal import Principal
from services.runtime import Runtime

router = APIRouter(prefix="/api/v1/audit", tags=["audit"])
report_router = APIRouter(prefix="/api/v1", tags=["referrals"])


@contextmanager
def _auditor(
    runtime: Runtime, principal: Principal, ctx: RequestContext, action: policy.Action, what: str
) -> Iterator[Access]:
    """One audited access of the audit trail, refused unless the policies allow it."""
    with runtime.gatekeeper.access(
        principal=principal,
        event_type=AuditEventType.QUERY,
        action=f"audit.{what}",
        purpose=purpose_of(principal),
        ctx=ctx,
    ) as access:
        decision = access.decide(action=action, case=None, consent=None)
        if not decision.allowed:
            raise Forbidden("only auditors may use the audit trail")
        access.disclose(["access_log"])
        yield access


def _entry(e: Any) -> dict[str, Any]:
    return {
        "index": e.index,
        "recorded_at": e.recorded_at.isoformat(),
        "event_type": e.event_type,
        "actor_subject": e.actor_subject,
        "actor_organisation": e.actor_organisation,
        "actor_role": e.actor_role,
        "action": e.action,
        "referral_pseudonym": e.referral_pseudonym,
        "categories": list(e.categories),
        "decision": e.decision,
        "policy_ids": list(e.policy_ids),
        "purpose_of_use": e.purpose_of_use,
        # HL7 v3 PurposeOfUse, or the local code system of the justice purposes
        "purpose_of_use_system": purpose_system_of(e.purpose_of_use),
        "person_pseudonym": e.person_pseudonym,
        "source_node": e.source_node,
        "client_address": e.client_address,
        "request_id": e.request_id,
        "trace_id": e.trace_id,
        "outcome": e.outcome,
        "withheld": list(e.withheld or ()),
        "leaf_hash": e.leaf_hash,
    }


@router.get("/entries")
async def search_entries(
    runtime: RuntimeDep,
    principal: PrincipalDep,
    ctx: ContextDep,
    referral_pseudonym: Annotated[str | None, Query(pattern=r"^rp_[0-9a-f]{32}$")] = None,
    person_pseudonym: Annotated[str | None, Query(pattern=r"^pp_[0-9a-f]{32}$")] = None,
    actor: Annotated[str | None, Query(max_length=255)] = None,
    organisation: Annotated[str | None, Query(max_length=255)] = None,
    action: Annotated[str | None, Query(max_length=128)] = None,
    decision: Literal["permit", "deny"] | None = None,
    since: AwareDatetime | None = None,
    until: AwareDatetime | None = None,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> dict[str, Any]:
    """Search the audit trail (auditors)."""

    def run() -> dict[str, Any]:
        with _auditor(runtime, principal, ctx, policy.Action.SEARCH_AUDIT, "search"):
            with Session(runtime.engine) as session:
                rows = runtime.audit.search(
                    session,
                    referral_pseudonym=referral_pseudonym,
                    person_pseudonym=person_pseudonym,
                    actor=actor,
                    organisation=organisation,
                    action=action,
                    decision=decision,
                    since=since,
                    until=until,
                    offset=offset,
                    limit=limit,
                )
            return {"entries": [_entry(e) for e in rows], "offset": offset, "limit": limit}

    return await run_in_threadpool(run)


def _head(h: Any, cosignatures: list[Cosignature] | None = None) -> dict[str, Any]:
    return {
        "tree_size": h.tree_size,
        "root_hash": h.root_hash,
        "signed_at": h.signed_at.isoformat(),
        "key_id": h.key_id,
        "signature": h.signature,
        "cosignatures": [c.record() for c in cosignatures or []],
    }


@router.get("/tree-heads")
async def tree_heads(runtime: RuntimeDep, principal: PrincipalDep, ctx: ContextDep) -> list[Any]:
    """The signed tree heads published so far, with their witness cosignatures (auditors)."""

    def run() -> list[Any]:
        with _auditor(runtime, principal, ctx, policy.Action.SEARCH_AUDIT, "tree_heads"):
            with runtime.engine.connect() as conn:
                cosignatures = stored_cosignatures(conn)
            by_head: dict[tuple[int, str], list[Cosignature]] = {}
            for cosignature in cosignatures:
                by_head.setdefault((cosignature.tree_size, cosignature.log_key_id), []).append(
                    cosignature
                )
            return [
                _head(h, by_head.get((h.tree_size, h.key_id))) for h in runtime.audit.tree_heads()
            ]

    return await run_in_threadpool(run)


@router.post("/tree-heads")
async def sign_tree_head(
    runtime: RuntimeDep, principal: PrincipalDep, ctx: ContextDep
) -> dict[str, Any]:
    """Sign a tree head now, over every entry so far (auditors)."""

    def run() -> dict[str, Any]:
        with _auditor(runtime, principal, ctx, policy.Action.VERIFY_AUDIT, "sign_tree_head"):
            return _head(runtime.audit.sign_tree_head())

    return await run_in_threadpool(run)


@router.get("/entries/{index}/inclusion-proof")
async def inclusion_proof(
    index: Annotated[int, "leaf index"],
    runtime: RuntimeDep,
    principal: PrincipalDep,
    ctx: ContextDep,
    tree_size: Annotated[int | None, Query(ge=1)] = None,
) -> dict[str, Any]:
    """An RFC 6962 inclusion proof of one entry in a tree of `tree_size` (auditors)."""

    def run() -> dict[str, Any]:
        with _auditor(runtime, principal, ctx, policy.Action.SEARCH_AUDIT, "inclusion_proof"):
            try:
                return runtime.audit.inclusion_proof(index, tree_size).__dict__
            except ValueError as exc:
                raise Unprocessable(str(exc)) from None

    return await run_in_threadpool(run)


@router.get("/consistency-proof")
async def consistency_proof(
    runtime: RuntimeDep,
    principal: PrincipalDep,
    ctx: ContextDep,
    first: Annotated[int, Query(ge=1)],
    second: Annotated[int, Query(ge=1)],
) -> dict[str, Any]:
    """An RFC 6962 consistency proof between two tree sizes (auditors)."""

    def run() -> dict[str, Any]:
        with _auditor(runtime, principal, ctx, policy.Action.SEARCH_AUDIT, "consistency_proof"):
            try:
                return runtime.audit.consistency_proof(first, second).__dict__
            except ValueError as exc:
                raise Unprocessable(str(exc)) from None

    return await run_in_threadpool(run)


@router.post("/verify")
async def verify(runtime: RuntimeDep, principal: PrincipalDep, ctx: ContextDep) -> dict[str, Any]:
    """Verify the whole log now: every leaf, every signed head (auditors)."""

    def run() -> dict[str, Any]:
        with _auditor(runtime, principal, ctx, policy.Action.VERIFY_AUDIT, "verify"):
            return runtime.audit.verify().__dict__

    return await run_in_threadpool(run)


DEFAULT_WINDOW_DAYS = 30


def figure_window(since: date | None, until: date | None, bucket: Bucket) -> Window:
    """The window of the figures: local days, by default the last 30 up to today."""
    try:
        last = until or datetime.now(audit_figures.OFFICE_TIMEZONE).date()
        first = since or last - timedelta(days=DEFAULT_WINDOW_DAYS - 1)
        return Window(first, last, bucket)
    except OverflowError:
        raise Unprocessable("the window lies outside the calendar") from None
    except ValueError as exc:
        raise Unprocessable(str(exc)) from None


@router.get("/figures")
async def figures(
    runtime: RuntimeDep,
    principal: PrincipalDep,
    ctx: ContextDep,
    since: Annotated[
        date | None, Query(description="First local day (default: 30 days ago).")
    ] = None,
    until: Annotated[
        date | None, Query(description="Last local day, inclusive (default: today).")
    ] = None,
    bucket: Bucket = Bucket.DAY,
) -> dict[str, Any]:
    """Accesses per organisation, denials, accesses outside office hours and by users with no
    active role in the case, per day or week (auditors)."""
    window = figure_window(since, until, bucket)

    def run() -> dict[str, Any]:
        with _auditor(runtime, principal, ctx, policy.Action.SEARCH_AUDIT, "figures"):
            with runtime.engine.connect() as conn:
                cases = audit_figures.Cases(conn, runtime.gatekeeper.pseudonym)
                return audit_figures.figures(conn, window, cases)

    return await run_in_threadpool(run)


@router.get("/figures/{figure}/entries")
async def figure_entries(
    figure: Figure,
    runtime: RuntimeDep,
    principal: PrincipalDep,
    ctx: ContextDep,
    since: date | None = None,
    until: date | None = None,
    organisation: Annotated[str | None, Query(max_length=255)] = None,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> dict[str, Any]:
    """The entries behind one figure (one bar: its days and organisation), in log order."""
    window = figure_window(since, until, Bucket.DAY)

    def run() -> dict[str, Any]:
        with _auditor(runtime, principal, ctx, policy.Action.SEARCH_AUDIT, "figure_entries"):
            with runtime.engine.connect() as conn:
                cases = None
                if figure is Figure.NO_ACTIVE_ROLE:
                    cases = audit_figures.Cases(conn, runtime.gatekeeper.pseudonym)
                rows = audit_figures.entries(
                    conn,
                    figure,
                    window,
                    cases,
                    organisation=organisation,
                    offset=offset,
                    limit=limit,
                )
                found = [_entry(row) for row in rows]
            return {
                "figure": figure.value,
                "since": window.first.isoformat(),
                "until": window.last.isoformat(),
                "organisation": organisation,
                "entries": found,
                "offset": offset,
                "limit": limit,
            }

    return await run_in_threadpool(run)


@router.get("/public-key", response_class=PlainTextResponse)
async def public_key(runtime: RuntimeDep, principal: PrincipalDep, ctx: ContextDep) -> str:
    """The PEM keys that verify the signed tree heads, oldest first (auditors)."""

    def run() -> str:
        with _auditor(runtime, principal, ctx, policy.Action.VERIFY_AUDIT, "public_key"):
            return public_keys_pem(key.key() for key in runtime.audit_keys.chain())

    return await run_in_threadpool(run)


@router.post(
    "/person-access-report",
    response_class=Response,
    responses={200: {"content": {"application/pdf": {"schema": {"type": "string"}}}}},
)
def person_access_report(
    body: PersonAccessReportIn, runtime: RuntimeDep, principal: PrincipalDep, ctx: ContextDep
) -> Response:
    """The person's access report on request (GDPR art. 15), across all their referrals and
    with what went to justice, as a PDF letter (the data-protection officer; an export)."""
    pdf = person_access_report_pdf(runtime, principal, ctx, body)
    return Response(
        pdf,
        media_type="application/pdf",
        headers={"Content-Disposition": f'attachment; filename="access-report-{body.lang}.pdf"'},
    )


def person_access_report_pdf(
    runtime: Runtime, principal: Principal, ctx: RequestContext, body: PersonAccessReportIn
) -> bytes:
    """The letter's PDF, decided by Cedar and recorded as an export (blocking: the API and
    the auditor's page call it in a thread)."""
    with runtime.gatekeeper.access(
        principal=principal,
        event_type=AuditEventType.EXPORT,
        action="person.access_report",
        purpose=PurposeOfUse.PATRQT.value,
        ctx=ctx,
    ) as access:
        decision = access.decide(action=policy.Action.PERSON_ACCESS_REPORT, case=None, consent=None)
        if not decision.allowed:
            raise Forbidden("only the data-protection officer produces a person's access report")
        # the entry names no person: the report concerns no single referral (a person tag is
        # a referral's), and nothing at rest may link the person across referrals
        with Session(runtime.engine) as session:
            entries = person_report.entries_of_national_number(
                session=session,
                national_number=body.national_number,
                pseudonymizers=runtime.pseudonymizers(),
                gatekeeper=runtime.gatekeeper,
            )
            report = person_report.build(
                session=session, entries=entries, lang=body.lang, today=utcnow()
            )
        access.disclose(["access_log"])
        return person_report.render_pdf(report)


@report_router.get(
    "/referrals/{referral_id}/access-report",
    response_model=None,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def access_report(
    referral_id: uuid.UUID,
    runtime: RuntimeDep,
    principal: PrincipalDep,
    ctx: ContextDep,
    lang: Literal["nl", "fr", "de", "en"] = "nl",
    format: Literal["json", "text"] = "json",
) -> Response | dict[str, Any]:
    """The person's access report (GDPR art. 15), for the care worker to hand over."""

    def run() -> dict[str, Any]:
        with runtime.gatekeeper.access(
            principal=principal,
            event_type=AuditEventType.EXPORT,
            action="referral.access_report",
            purpose=purpose_of(principal),
            ctx=ctx,
            referral_id=referral_id,
        ) as access:
            with Session(runtime.engine) as session:
                guard(session, access, referral_id, policy.Action.ACCESS_REPORT)
                pseudonym = runtime.gatekeeper.pseudonym(referral_id)
                assert pseudonym is not None
                report = subject_report.build(
                    session=session, referral_pseudonym=pseudonym, lang=lang
                )
            access.disclose(["access_log"])
            return report

    report = await run_in_threadpool(run)
    if format == "text":
        return PlainTextResponse(subject_report.as_text(report))
    return report
