"""The role UIs under `/ui`: server-rendered pages (Jinja2, HTMX as an enhancement only).

Every page and form calls the same functions as the JSON API (`api.routes`,
`api.auditor`, `api.policy_routes`), so every access takes its Cedar decision through
`services/access.py` and is audited exactly as over the API; the UI adds no access rule
of its own. Forms follow Post/Redirect/Get; a refused step renders an error page with the
API's status code (4xx) and changes nothing.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any, Literal, get_args

from fastapi import APIRouter, Form, Path, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, ValidationError
from sqlmodel import Session, col, select
from temporalio.client import WorkflowUpdateFailedError
from temporalio.service import RPCError

from api import auditor, policy_routes, routes
from api.deps import get_temporal
from api.errors import describe
from api.schemas import (
    CareTeamIn,
    Category,
    CloseIn,
    ConsentIn,
    DecisionIn,
    DeclineIn,
    IntakeIn,
    PersonAccessReportIn,
    ProgressIn,
)
from api.web.i18n import LANGUAGE_COOKIE, LANGUAGES
from api.web.labels import N_, refusal_text
from api.web.session import CSRF_FIELD, Web, WebDep, back_from, redirect
from api.web_auth import safe_next
from services import policy
from services.case_content import OffenceCategory, ReferralCreate
from services.errors import DomainError
from services.lifecycle import (
    OPEN_STAGES,
    AcceptInput,
    AttendanceStatus,
    CancelInput,
    ConsentPurpose,
    DeclineReason,
    Outcome,
    ProsecutorDecision,
    RematchInput,
    SignedBy,
    SignerCapacity,
    SigningMethod,
    TargetGroup,
)
from services.models import CooperationFramework, FrameworkParticipant, Organisation
from services.principal import Role, Sector
from workflows.referral import ReferralWorkflow

router = APIRouter(prefix="/ui", include_in_schema=False)

ReferralPath = Annotated[uuid.UUID, Path()]
# Where each area starts; the platform's operators (admin) start at the policies' explanation.
AREA_HOMES = {
    "justice": "/ui/justice",
    "care": "/ui/care",
    "audit": "/ui/audit",
    "platform": "/ui/audit/explain",
}
CARE_STAGES_OFFER = {"offered"}
CARE_STAGES_ACTIVE = {"accepted", "in_progress"}
# Open stages as any viewer may see them (the office's coarse `referred_to_care` included).
OPEN_STAGE_NAMES = {stage.value for stage in OPEN_STAGES} | {"referred_to_care"}
CONSENT_CATEGORIES = list(get_args(Category))
# After the care ended, a withdrawal still stops the care team's access (no workflow step).
AFTER_CARE_STAGES = {"completed", "failed", "not_started", "outcome_reported", "closed", "ended"}
# Flash messages after a step, by step name.
DONE = {
    "created": N_("The referral was created. Record the person's consent next."),
    "consent": N_("The consent was recorded."),
    "withdrawn": N_("The consent was withdrawn; the referral ends."),
    "cancelled": N_("The referral was cancelled."),
    "rematched": N_("Matching was started again."),
    "accepted": N_("You accepted the referral."),
    "declined": N_("You declined the referral."),
    "intake": N_("The intake was recorded."),
    "progress": N_("The progress report was recorded."),
    "closed": N_("The trajectory was closed."),
    "decided": N_("The decision was recorded."),
    "assigned": N_("The care worker was assigned to the case."),
    "released": N_("The care worker was released from the case."),
    "signed": N_("A new tree head was signed."),
}
STATUS_TITLES = {
    400: N_("The request was not understood"),
    401: N_("Please log in"),
    403: N_("You may not do this"),
    404: N_("Not found"),
    409: N_("This step is not possible now"),
    413: N_("The form is too large"),
    422: N_("Some fields need attention"),
    503: N_("A service is unavailable; please try again in a moment"),
}


def _error(web: Web, status: int, detail: str | None) -> HTMLResponse:
    return web.render(
        "error.html",
        status,
        title=STATUS_TITLES.get(status, N_("Something went wrong")),
        message=None,
        # the API's words are English: the page says them in the user's language
        detail=refusal_text(web._, detail),
        back=back_from(web.request.url.path),
    )


async def _attempt(web: Web, call: Callable[[], Awaitable[Any]]) -> tuple[Any, HTMLResponse | None]:
    """Run one API function; a refusal becomes an error page with the API's 4xx status."""
    try:
        return await call(), None
    except (DomainError, WorkflowUpdateFailedError, RPCError) as exc:
        described = describe(exc)
        assert described is not None
        status, _title, detail, _slug = described
        return None, _error(web, status, detail)


def _invalid(web: Web, exc: ValidationError) -> HTMLResponse:
    fields = sorted({".".join(str(p) for p in e["loc"]) for e in exc.errors()})
    return _error(web, 422, "check: " + ", ".join(fields))


# ---- language, entry ----------------------------------------------------------------


@router.get("/language/{lang}")
async def choose_language(lang: str, next: str = "/ui/") -> Response:
    """Remember the chosen language (a preference cookie) and go back."""
    response = redirect(safe_next(next))
    if lang in LANGUAGES:
        response.set_cookie(
            LANGUAGE_COOKIE, lang, max_age=365 * 86400, httponly=True, samesite="lax", path="/"
        )
    return response


@router.get("/")
async def home(web: WebDep) -> Response:
    """Each role's home; someone with no UI role sees what they may do (nothing)."""
    areas = web.areas
    if len(areas) >= 1:
        return redirect(AREA_HOMES[areas[0]])
    return web.render("no_area.html", 403)


# ---- prosecutor's office -------------------------------------------------------------


async def _list(web: Web, limit: int = 100) -> list[dict[str, Any]]:
    page = await routes.list_referrals(
        web.request.app.state.runtime, web.principal, web.ctx, offset=0, limit=limit
    )
    items: list[dict[str, Any]] = page["items"]
    return items


def _outside_area(web: Web, area: str) -> HTMLResponse | None:
    """A page of another role's area is not offered: 403 with the 'no work area' page (the
    API still decides every access; this only keeps each role to its own pages)."""
    if area in web.areas:
        return None
    return web.render("no_area.html", 403)


@router.get("/justice")
async def justice_home(web: WebDep, done: str | None = None) -> Response:
    """The office's referrals with stage, deadlines and outcome."""
    if (refused := _outside_area(web, "justice")) is not None:
        return refused
    items, error = await _attempt(web, lambda: _list(web))
    if error is not None:
        return error
    return web.render("justice_home.html", items=items, done=DONE.get(done or ""))


def _frameworks(web: Web) -> list[CooperationFramework]:
    runtime = web.request.app.state.runtime
    with Session(runtime.engine) as session:
        return list(
            session.exec(
                select(CooperationFramework)
                .join(
                    FrameworkParticipant,
                    col(FrameworkParticipant.framework_id) == col(CooperationFramework.id),
                )
                .where(FrameworkParticipant.organisation_code == web.principal.organisation)
                .where(col(CooperationFramework.active).is_(True))
                .order_by(col(CooperationFramework.name))
            ).all()
        )


def _district(web: Web) -> str:
    runtime = web.request.app.state.runtime
    with Session(runtime.engine) as session:
        org = session.exec(
            select(Organisation).where(Organisation.code == web.principal.organisation)
        ).first()
    return org.district if org is not None else ""


async def _referral_form(
    web: Web, values: dict[str, str] | None = None, errors: set[str] | None = None
) -> HTMLResponse:
    frameworks = await run_in_threadpool(_frameworks, web)
    district = await run_in_threadpool(_district, web)
    values = values or {"district": district, "language": web.lang}
    return web.render(
        "referral_new.html",
        422 if errors else 200,
        frameworks=frameworks,
        values=values,
        errors=sorted(errors or ()),
        offences=list(OffenceCategory),
        target_groups=list(TargetGroup),
        # one key per form: sending the same form twice creates one referral
        idempotency_key=values.get("idempotency_key") or str(uuid.uuid4()),
        today=date.today().isoformat(),
    )


@router.get("/referrals/new")
async def new_referral(web: WebDep) -> Response:
    """The new-referral form (prosecutor's office)."""
    if (refused := _outside_area(web, "justice")) is not None:
        return refused
    return await _referral_form(web)


@router.post("/referrals")
async def create_referral(
    web: WebDep,
    framework_id: Annotated[str, Form(max_length=64)],
    district: Annotated[str, Form(max_length=64)],
    language: Annotated[str, Form(max_length=8)],
    name: Annotated[str, Form(max_length=200)],
    birth_date: Annotated[str, Form(max_length=32)],
    national_number: Annotated[str, Form(max_length=32)],
    offence_category: Annotated[str, Form(max_length=64)],
    notice_number: Annotated[str, Form(max_length=64)],
    target_group: Annotated[str, Form(max_length=64)],
    substance_or_behaviour: Annotated[str, Form(max_length=200)],
    idempotency_key: Annotated[str, Form(pattern=r"^[A-Za-z0-9._:-]{8,200}$")],
    phone: Annotated[str, Form(max_length=64)] = "",
    address: Annotated[str, Form(max_length=200)] = "",
    deadline: Annotated[str, Form(max_length=32)] = "",
    note: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """Create and submit the referral, then go to its page for the consent step."""
    try:
        body = ReferralCreate.model_validate(
            {
                "framework_id": framework_id,
                "district": district,
                "language": language,
                "identity": {
                    "name": name,
                    "birth_date": birth_date,
                    "national_number": national_number,
                },
                "contact": {"phone": phone or None, "address": address or None},
                "judicial_context": {
                    "offence_category": offence_category,
                    "notice_number": notice_number,
                    "deadline": deadline or None,
                },
                "referral_reason": {
                    "target_group": target_group,
                    "substance_or_behaviour": substance_or_behaviour,
                    "note": note or None,
                },
            }
        )
    except ValidationError as exc:
        # the form again, filled in as sent, the fields to correct named
        sent = {k: v for k, v in (await web.request.form()).items() if isinstance(v, str)}
        sent.pop(CSRF_FIELD, None)
        wrong = {str(e["loc"][-1]) for e in exc.errors() if e["loc"]}
        return await _referral_form(web, sent, wrong or {"form"})
    runtime = web.request.app.state.runtime
    temporal = await get_temporal(web.request)
    scratch = Response()
    view, error = await _attempt(
        web,
        lambda: routes.create_referral(
            body, scratch, runtime, temporal, web.principal, web.ctx, idempotency_key
        ),
    )
    if error is not None:
        return error
    return redirect(f"/ui/referrals/{view['id']}?done=created")


# ---- one referral ------------------------------------------------------------------


@router.get("/referrals/{referral_id}")
async def referral_page(
    referral_id: ReferralPath, web: WebDep, done: str | None = None
) -> Response:
    """One referral, showing only what the user may see (the API's projection)."""
    runtime = web.request.app.state.runtime
    view, error = await _attempt(
        web, lambda: run_in_threadpool(routes.view_of, runtime, web.principal, web.ctx, referral_id)
    )
    if error is not None:
        return error
    mine = web.principal.organisation
    justice = web.principal.sector is Sector.JUSTICE and view.get("referring_office") == mine
    care_offer = view.get("offered_provider") == mine and view["stage"] in CARE_STAGES_OFFER
    care_team = view.get("accepted_provider") == mine
    return web.render(
        "referral.html",
        view=view,
        done=DONE.get(done or ""),
        justice=justice,
        prosecutor=justice and web.principal.has_any(Role.PROSECUTOR),
        care_offer=care_offer
        and web.principal.has_any(Role.INTAKE_COORDINATOR)
        and web.principal.sector is not Sector.JUSTICE,
        care_team=care_team and web.principal.sector is not Sector.JUSTICE,
        purposes=list(ConsentPurpose),
        categories=CONSENT_CATEGORIES,
        decline_reasons=list(DeclineReason),
        attendance=list(AttendanceStatus),
        outcomes=list(Outcome),
        decisions=list(ProsecutorDecision),
        today=date.today().isoformat(),
        default_valid_until=(date.today() + timedelta(days=365)).isoformat(),
        providers=await run_in_threadpool(_providers, web, view.get("framework_id"))
        if justice
        else [],
        signers=list(SignedBy),
        capacities=list(SignerCapacity),
        methods=list(SigningMethod),
        coordinator=care_team
        and web.principal.has_any(Role.INTAKE_COORDINATOR)
        and web.principal.sector is not Sector.JUSTICE,
        after_care=view["stage"] in AFTER_CARE_STAGES,
    )


def _providers(web: Web, framework_id: str | None) -> list[str]:
    """The care providers of the referral's framework, to name as recipients or disclosers."""
    if framework_id is None:
        return []
    with Session(web.request.app.state.runtime.engine) as session:
        rows = session.exec(
            select(Organisation.code)
            .join(
                FrameworkParticipant,
                col(FrameworkParticipant.organisation_code) == col(Organisation.code),
            )
            .where(
                FrameworkParticipant.framework_id == uuid.UUID(framework_id),
                col(Organisation.sector).in_([Sector.HEALTH.value, Sector.WELFARE.value]),
            )
            .order_by(col(Organisation.code))
        ).all()
    return list(rows)


async def _step(web: Web, referral_id: uuid.UUID, done: str, call: Any) -> Response:
    runtime = web.request.app.state.runtime
    temporal = await get_temporal(web.request)
    view, error = await _attempt(web, lambda: call(runtime, temporal))
    if error is not None:
        return error
    if view.get("stage") == "no_longer_visible":
        return redirect(f"/ui/{web.areas[0] if web.areas else ''}?done={done}")
    return redirect(f"/ui/referrals/{referral_id}?done={done}")


@router.post("/referrals/{referral_id}/consent")
async def record_consent(
    referral_id: ReferralPath,
    web: WebDep,
    evidence_reference: Annotated[str, Form(min_length=1, max_length=200)],
    given: Annotated[Literal["yes", "no"], Form()] = "yes",
    purposes: Annotated[list[str] | None, Form(max_length=3)] = None,
    categories: Annotated[list[str] | None, Form(max_length=7)] = None,
    right_to_revoke_explained: Annotated[bool, Form()] = False,
    valid_until: Annotated[str, Form(max_length=32)] = "",
    recipients: Annotated[list[str] | None, Form(max_length=20)] = None,
    disclosers: Annotated[list[str] | None, Form(max_length=20)] = None,
    signed_by: Annotated[str, Form(max_length=32)] = "",
    signer_capacity: Annotated[str, Form(max_length=32)] = "",
    signed_on: Annotated[str, Form(max_length=32)] = "",
    signing_method: Annotated[str, Form(max_length=32)] = "",
) -> Response:
    """Record the person's consent or refusal (the signed form stays in the paper file: its
    reference is kept as a SHA-256 fingerprint, never in clear)."""
    try:
        until = (
            datetime.combine(date.fromisoformat(valid_until), time(23, 59), tzinfo=UTC)
            if valid_until
            else None
        )
        body = ConsentIn.model_validate(
            {
                "given": given == "yes",
                "purposes": purposes or [],
                "categories": categories or [],
                # who may receive and who may pass on the data: organisations or sectors
                "recipients": recipients or [],
                "disclosers": disclosers or [],
                "right_to_revoke_explained": right_to_revoke_explained,
                "valid_until": until,
                "signed_by": signed_by or None,
                "signer_capacity": signer_capacity or None,
                "signed_on": signed_on or None,
                "signing_method": signing_method or None,
                "evidence_hash": "sha256:"
                + hashlib.sha256(evidence_reference.strip().encode()).hexdigest(),
            }
        )
    except (ValidationError, ValueError) as exc:
        if isinstance(exc, ValidationError):
            return _invalid(web, exc)
        return _error(web, 422, "check: valid_until")
    return await _step(
        web,
        referral_id,
        "consent",
        lambda rt, tc: routes.record_consent(referral_id, body, rt, tc, web.principal, web.ctx),
    )


@router.post("/referrals/{referral_id}/withdraw")
async def withdraw_consent(referral_id: ReferralPath, web: WebDep) -> Response:
    return await _step(
        web,
        referral_id,
        "withdrawn",
        lambda rt, tc: routes.withdraw_consent(referral_id, rt, tc, web.principal, web.ctx),
    )


@router.get("/referrals/{referral_id}/consents")
async def consents(referral_id: ReferralPath, web: WebDep) -> Response:
    """Every version of the person's consent: status, scope, who signed and how."""
    runtime = web.request.app.state.runtime
    rows, error = await _attempt(
        web, lambda: routes.list_consents(referral_id, runtime, web.principal, web.ctx)
    )
    if error is not None:
        return error
    return web.render("consents.html", consents=rows, referral_id=referral_id)


@router.get("/referrals/{referral_id}/care-team")
async def care_team_page(
    referral_id: ReferralPath, web: WebDep, done: str | None = None
) -> Response:
    """The intake coordinator's view of who is assigned to the case (need to know)."""
    runtime = web.request.app.state.runtime
    members, error = await _attempt(
        web,
        lambda: run_in_threadpool(
            routes.list_care_team, referral_id, runtime, web.principal, web.ctx
        ),
    )
    if error is not None:
        return error
    return web.render(
        "care_team.html", members=members, referral_id=referral_id, done=DONE.get(done or "")
    )


async def _care_team_change(web: Web, referral_id: uuid.UUID, subject: str, done: str) -> Response:
    runtime = web.request.app.state.runtime
    try:
        body = CareTeamIn.model_validate({"subject": subject.strip()})
    except ValidationError as exc:
        return _invalid(web, exc)

    def change() -> list[dict[str, Any]]:
        if done == "assigned":
            return routes.assign_care_worker(referral_id, body, runtime, web.principal, web.ctx)
        return routes.release_care_worker(
            referral_id, body.subject, runtime, web.principal, web.ctx
        )

    _, error = await _attempt(web, lambda: run_in_threadpool(change))
    if error is not None:
        return error
    return redirect(f"/ui/referrals/{referral_id}/care-team?done={done}")


@router.post("/referrals/{referral_id}/care-team")
async def assign_care_worker(
    referral_id: ReferralPath, web: WebDep, subject: Annotated[str, Form(max_length=200)]
) -> Response:
    return await _care_team_change(web, referral_id, subject, "assigned")


@router.post("/referrals/{referral_id}/care-team/release")
async def release_care_worker(
    referral_id: ReferralPath, web: WebDep, subject: Annotated[str, Form(max_length=200)]
) -> Response:
    return await _care_team_change(web, referral_id, subject, "released")


def _simple(action: policy.Action, update: Any, make: Any) -> Any:
    def call(runtime: Any, temporal: Any, referral_id: uuid.UUID, web: Web) -> Any:
        async def run(handle: Any, actor: Any) -> Any:
            return await handle.execute_update(update, make(actor))

        return routes.step(
            runtime=runtime,
            temporal=temporal,
            principal=web.principal,
            ctx=web.ctx,
            referral_id=referral_id,
            action=action,
            run_update=run,
        )

    return call


_ACCEPT = _simple(policy.Action.ACCEPT, ReferralWorkflow.accept, lambda a: AcceptInput(actor=a))
_CANCEL = _simple(policy.Action.CANCEL, ReferralWorkflow.cancel, lambda a: CancelInput(actor=a))
_REMATCH = _simple(policy.Action.REMATCH, ReferralWorkflow.rematch, lambda a: RematchInput(actor=a))


@router.post("/referrals/{referral_id}/accept")
async def accept(referral_id: ReferralPath, web: WebDep) -> Response:
    return await _step(
        web, referral_id, "accepted", lambda rt, tc: _ACCEPT(rt, tc, referral_id, web)
    )


@router.post("/referrals/{referral_id}/cancel")
async def cancel(referral_id: ReferralPath, web: WebDep) -> Response:
    return await _step(
        web, referral_id, "cancelled", lambda rt, tc: _CANCEL(rt, tc, referral_id, web)
    )


@router.post("/referrals/{referral_id}/rematch")
async def rematch(referral_id: ReferralPath, web: WebDep) -> Response:
    return await _step(
        web, referral_id, "rematched", lambda rt, tc: _REMATCH(rt, tc, referral_id, web)
    )


async def _form_step(
    web: Web,
    referral_id: uuid.UUID,
    done: str,
    model: type[BaseModel],
    data: dict[str, Any],
    api: Callable[..., Awaitable[Any]],
) -> Response:
    """Validate a step's form as the API's body, then take the step through the API function."""
    try:
        body = model.model_validate(data)
    except ValidationError as exc:
        return _invalid(web, exc)
    return await _step(
        web,
        referral_id,
        done,
        lambda rt, tc: api(referral_id, body, rt, tc, web.principal, web.ctx),
    )


def _text(value: str) -> str | None:
    return value.strip() or None


@router.post("/referrals/{referral_id}/decline")
async def decline(
    referral_id: ReferralPath, web: WebDep, reason: Annotated[str, Form(max_length=64)]
) -> Response:
    data = {"reason": reason}
    return await _form_step(web, referral_id, "declined", DeclineIn, data, routes.decline)


@router.post("/referrals/{referral_id}/intake")
async def intake(
    referral_id: ReferralPath,
    web: WebDep,
    intake_date: Annotated[str, Form(max_length=10)],
    attended: Annotated[Literal["yes", "no"], Form()] = "yes",
) -> Response:
    # a day from the date field, taken as noon UTC (no time of day is asked)
    data = {"intake_date": f"{intake_date}T12:00:00+00:00", "attended": attended == "yes"}
    return await _form_step(web, referral_id, "intake", IntakeIn, data, routes.record_intake)


@router.post("/referrals/{referral_id}/progress")
async def progress(
    referral_id: ReferralPath,
    web: WebDep,
    attendance: Annotated[str, Form(max_length=32)],
    clinical_note: Annotated[str, Form(max_length=2000)] = "",
    welfare_note: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    data = {
        "attendance": attendance,
        "clinical_note": _text(clinical_note),
        "welfare_note": _text(welfare_note),
    }
    return await _form_step(web, referral_id, "progress", ProgressIn, data, routes.report_progress)


@router.post("/referrals/{referral_id}/close")
async def close(
    referral_id: ReferralPath,
    web: WebDep,
    outcome: Annotated[str, Form(max_length=32)],
    clinical_note: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    data = {"outcome": outcome, "clinical_note": _text(clinical_note)}
    return await _form_step(web, referral_id, "closed", CloseIn, data, routes.close)


@router.post("/referrals/{referral_id}/decision")
async def decision(
    referral_id: ReferralPath, web: WebDep, decision: Annotated[str, Form(max_length=32)]
) -> Response:
    data = {"decision": decision}
    return await _form_step(web, referral_id, "decided", DecisionIn, data, routes.decide)


@router.get("/referrals/{referral_id}/access-report")
async def access_report(
    referral_id: ReferralPath,
    web: WebDep,
    report_lang: Annotated[Literal["nl", "fr", "de", "en"] | None, Query(alias="in")] = None,
) -> Response:
    """The person's access report, printable, in the person's language."""
    runtime = web.request.app.state.runtime
    language: Literal["nl", "fr", "de", "en"] = report_lang or _as_report_lang(web.lang)
    report, error = await _attempt(
        web,
        lambda: auditor.access_report(
            referral_id, runtime, web.principal, web.ctx, lang=language, format="json"
        ),
    )
    if error is not None:
        return error
    return web.render(
        "access_report.html", report=report, referral_id=referral_id, report_lang=language
    )


def _as_report_lang(lang: str) -> Literal["nl", "fr", "de", "en"]:
    return {"fr": "fr", "de": "de", "en": "en"}.get(lang, "nl")  # type: ignore[return-value]


# ---- care provider -----------------------------------------------------------------


@router.get("/care")
async def care_home(web: WebDep, done: str | None = None) -> Response:
    """The provider's inbox of offers (with the time left to answer) and its active cases."""
    if (refused := _outside_area(web, "care")) is not None:
        return refused
    items, error = await _attempt(web, lambda: _list(web))
    if error is not None:
        return error
    mine = web.principal.organisation
    offers = [
        i for i in items if i.get("offered_provider") == mine and i["stage"] in CARE_STAGES_OFFER
    ]
    active = [
        i for i in items if i.get("accepted_provider") == mine and i["stage"] in CARE_STAGES_ACTIVE
    ]
    # only what has ended: a referral still open elsewhere in its lifecycle is not "ended"
    ended = [
        i
        for i in items
        if i not in offers and i not in active and i["stage"] not in OPEN_STAGE_NAMES
    ]
    return web.render(
        "care_home.html", offers=offers, active=active, ended=ended, done=DONE.get(done or "")
    )


# ---- auditor -----------------------------------------------------------------------


def _moment(text: str) -> datetime | None:
    if not text:
        return None
    day = date.fromisoformat(text)
    return datetime.combine(day, time(0, 0), tzinfo=UTC)


@router.get("/audit")
async def audit_home(
    web: WebDep,
    done: str | None = None,
    pseudonym: Annotated[str, Query(max_length=64)] = "",
    actor: Annotated[str, Query(max_length=255)] = "",
    organisation: Annotated[str, Query(max_length=255)] = "",
    action: Annotated[str, Query(max_length=128)] = "",
    outcome: Annotated[Literal["", "permit", "deny"], Query()] = "",
    since: Annotated[str, Query(max_length=10)] = "",
    until: Annotated[str, Query(max_length=10)] = "",
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> Response:
    """Access-log search with filters, the signed tree heads and 'verify now'."""
    runtime = web.request.app.state.runtime
    try:
        start, end = _moment(since), _moment(until)
    except ValueError:
        return _error(web, 422, "check: since, until")
    if end is not None:
        end += timedelta(days=1)  # the whole last day
    filters = {
        "pseudonym": pseudonym,
        "actor": actor,
        "organisation": organisation,
        "action": action,
        "outcome": outcome,
        "since": since,
        "until": until,
    }
    searched = any(filters.values()) or offset > 0 or "search" in web.request.query_params

    async def load() -> tuple[dict[str, Any] | None, list[Any]]:
        found = None
        if searched:
            found = await auditor.search_entries(
                runtime,
                web.principal,
                web.ctx,
                referral_pseudonym=pseudonym or None,
                actor=actor or None,
                organisation=organisation or None,
                action=action or None,
                decision=outcome or None,
                since=start,
                until=end,
                offset=offset,
                limit=50,
            )
        heads = await auditor.tree_heads(runtime, web.principal, web.ctx)
        return found, heads

    loaded, error = await _attempt(web, load)
    if error is not None:
        return error
    found, heads = loaded
    if web.request.headers.get("hx-request") == "true" and found is not None:
        return web.render("audit_results.html", found=found, filters=filters)
    return web.render(
        "audit_home.html",
        found=found,
        heads=list(reversed(heads))[:10],
        filters=filters,
        done=DONE.get(done or ""),
        verification=None,
    )


@router.get("/audit/timeline/{pseudonym}")
async def audit_timeline(
    web: WebDep, pseudonym: Annotated[str, Path(pattern=r"^rp_[0-9a-f]{32}$")]
) -> Response:
    """Every access to one referral, in order (pseudonymous: no case content)."""
    runtime = web.request.app.state.runtime
    found, error = await _attempt(
        web,
        lambda: auditor.search_entries(
            runtime,
            web.principal,
            web.ctx,
            referral_pseudonym=pseudonym,
            actor=None,
            organisation=None,
            action=None,
            decision=None,
            since=None,
            until=None,
            offset=0,
            limit=500,
        ),
    )
    if error is not None:
        return error
    return web.render("audit_timeline.html", found=found, pseudonym=pseudonym)


@router.post("/audit/verify")
async def audit_verify(web: WebDep) -> Response:
    """Verify the whole log now and show the result."""
    runtime = web.request.app.state.runtime
    result, error = await _attempt(web, lambda: auditor.verify(runtime, web.principal, web.ctx))
    if error is not None:
        return error
    if web.request.headers.get("hx-request") == "true":
        return web.render("audit_verification.html", verification=result)
    heads, error = await _attempt(web, lambda: auditor.tree_heads(runtime, web.principal, web.ctx))
    if error is not None:
        return error
    return web.render(
        "audit_home.html",
        found=None,
        heads=list(reversed(heads))[:10],
        filters={},
        done=None,
        verification=result,
    )


@router.post("/audit/tree-heads")
async def audit_sign(web: WebDep) -> Response:
    runtime = web.request.app.state.runtime
    _, error = await _attempt(web, lambda: auditor.sign_tree_head(runtime, web.principal, web.ctx))
    if error is not None:
        return error
    return redirect("/ui/audit?done=signed")


@router.post("/audit/person-report")
async def audit_person_report(
    web: WebDep,
    national_number: Annotated[str, Form(max_length=32)],
    lang: Annotated[str, Form(max_length=8)] = "nl",
) -> Response:
    """The person's access report on request, as the PDF letter the API makes (the DPO)."""
    runtime = web.request.app.state.runtime
    try:
        body = PersonAccessReportIn(national_number=national_number, lang=lang)
    except ValidationError as exc:
        return _invalid(web, exc)
    pdf, error = await _attempt(
        web,
        lambda: run_in_threadpool(
            auditor.person_access_report_pdf, runtime, web.principal, web.ctx, body
        ),
    )
    if error is not None:
        return error
    return Response(
        pdf,
        media_type="application/pdf",
        headers={"Content-Disposition": f'attachment; filename="access-report-{body.lang}.pdf"'},
    )


@router.get("/audit/explain")
async def audit_explain(
    web: WebDep,
    role: Annotated[str, Query(max_length=32)] = "",
    sector: Annotated[str, Query(max_length=32)] = "",
    relation: Annotated[str, Query(max_length=32)] = "",
    subject: Annotated[str, Query(max_length=64)] = "",
    consent: Annotated[str, Query(max_length=32)] = "active",
) -> Response:
    """Ask the live policies about a typical situation."""
    runtime = web.request.app.state.runtime
    answer = None
    if role and sector and relation and subject:
        try:
            args: dict[str, Any] = {
                "role": Role(role),
                "sector": Sector(sector),
                "relation": policy.Relation(relation),
                "consent": policy.ConsentState(consent),
                "category": None,
                "action": None,
            }
            if subject in {c.value for c in policy.DataCategory}:
                args["category"] = policy.DataCategory(subject)
            else:
                args["action"] = policy.Action(subject)
        except ValueError:
            return _error(web, 422, "check: role, sector, relation, subject, consent")
        answer, error = await _attempt(
            web,
            lambda: policy_routes.explain_policy(runtime, web.principal, web.ctx, **args),
        )
        if error is not None:
            return error
    return web.render(
        "audit_explain.html",
        answer=answer,
        chosen={
            "role": role,
            "sector": sector,
            "relation": relation,
            "subject": subject,
            "consent": consent,
        },
        roles=[r.value for r in Role],
        sectors=[s.value for s in Sector],
        relations=[r.value for r in policy.Relation],
        subjects=[c.value for c in policy.DataCategory]
        + [a.value for a in policy.Action if a is not policy.Action.DISCLOSE],
        consents=[c.value for c in policy.ConsentState],
    )
