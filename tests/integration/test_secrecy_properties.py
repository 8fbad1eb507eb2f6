"""Shared professional secrecy, end to end, over random lifecycles and random callers.

Hypothesis draws a lifecycle (a random prefix of: create, consent with a random set of
purposes, the offered providers accepting or declining, intake, progress reports with
clinical and welfare notes, close with a random outcome, the prosecutor's decision; and
a consent withdrawal at a random point), drives it through the real API, Temporal and
database, and then has every caller call every GET endpoint of the API that concerns a
referral (discovered from the app's routes, so new ones are covered) and the list, and then
send every POST step about the referral (also discovered from the routes), with a valid
body. Steps that succeed move the test's own record of the case as the lifecycle says.

Callers: every role x organisation of `tests/tokens.SECTORS`, plus an organisation
outside the cooperation framework (`elsewhere-care`, unknown to the engine; `dpo-office`,
the auditors' office, is not a framework participant either), plus random extra callers
with two roles or a sector that does not match their organisation.

Properties, for every response:
- a justice principal (justice sector, or a prosecutor / justice assistant role) never
  receives clinical or welfare content: neither the note texts nor the keys;
- an auditor (auditor role, or audit sector) never receives case content;
- an organisation with no part in the case learns nothing of it: 404 on the referral,
  its id absent from every answer, including lists;
- clinical and welfare notes reach only the care team, with an active consent to
  care-team sharing that names the category;
- nothing else than 200, 403 or 404 for a GET, and also 409 (a refused step) for a POST;
- these hold for every field of every answer: the body, the headers, the timestamps;
- a caller who may not see the stage (the `compliance` category: the referring office
  with a consent to reporting that names it, or the care team with a consent naming it)
  sees neither the stage nor a status, outcome or report deadline; a step refused to it
  reads the same words whatever the hidden stage, and the same error answer for the same
  step and the same view across every example;
- a list row of the referral is, field by field, the caller's detail view of it;
- while the office may not see compliance, an intake or a progress report changes nothing
  in its view or list row (not even `updated_at`).

pytest-asyncio runs `@given` async tests (it drives each example on the session loop),
so each example is a real coroutine against the real stack.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck, example, given, note, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from services.errors import StepRefused
from services.principal import Role
from tests.integration.journey import (
    CLINICAL_NOTE,
    NOTE,
    OFFICE,
    PERSON,
    PHONE,
    WELFARE_NOTE,
    Journey,
    consent_body,
)
from tests.tokens import SECTORS, TokenMinter

OUTSIDER_ORG = "elsewhere-care"  # not registered, in no framework
ORG_SECTORS = {**SECTORS, OUTSIDER_ORG: "health"}
PROVIDERS = ["cgg-antwerpen", "free-clinic-antwerpen"]  # matching order for Antwerpen
REFERRER = OFFICE[0]
JUSTICE_ROLES = {"prosecutor", "justice_assistant"}
CARE_ROLES = {"intake_coordinator", "care_worker"}
PERSONAL = [PERSON["name"], PERSON["national_number"], PHONE, NOTE]
SECRET_NOTES = [CLINICAL_NOTE, WELFARE_NOTE]
ALL_PURPOSES = ["referral_to_care", "care_team_sharing", "progress_reporting_to_justice"]
ALL_CATEGORIES = consent_body()["categories"]


@dataclass(frozen=True)
class Caller:
    organisation: str
    roles: tuple[str, ...]
    sector: str

    @property
    def subject(self) -> str:
        return f"prop-{'-'.join(self.roles)}-{self.organisation}-{self.sector}"

    def headers(self, minter: TokenMinter) -> dict[str, str]:
        token = minter.mint(
            self.organisation,
            self.roles[0],
            sector=self.sector,
            subject=self.subject,
            realm_access={"roles": list(self.roles)},
        )
        return {"Authorization": f"Bearer {token}"}

    @property
    def justice(self) -> bool:
        return self.sector == "justice" or bool(JUSTICE_ROLES & set(self.roles))

    @property
    def auditor(self) -> bool:
        return self.sector == "audit" or "auditor" in self.roles


# Every role x organisation, each with its organisation's own sector.
EVERY_CALLER = [
    Caller(org, (role.value,), sector) for org, sector in ORG_SECTORS.items() for role in Role
]
extra_callers = st.builds(
    Caller,
    organisation=st.sampled_from(sorted(ORG_SECTORS)),
    roles=st.lists(
        st.sampled_from([r.value for r in Role]), min_size=2, max_size=2, unique=True
    ).map(tuple),
    sector=st.sampled_from(["justice", "health", "welfare", "audit"]),
)


# ---------------------------------------------------------------- the plans ---


@dataclass(frozen=True)
class Step:
    kind: str
    arg: Any = None


@st.composite
def plans(draw: st.DrawFn) -> list[Step]:
    """A random prefix of a lifecycle, with a withdrawal at a random point."""
    purposes = ["referral_to_care"] + draw(
        st.lists(
            st.sampled_from(["care_team_sharing", "progress_reporting_to_justice"]), unique=True
        )
    )
    categories = draw(
        st.sets(st.sampled_from(["clinical", "welfare", "compliance"])).map(
            lambda dropped: [c for c in ALL_CATEGORIES if c not in dropped]
        )
    )
    script = [Step("consent", (tuple(purposes), tuple(categories)))]
    for _provider in PROVIDERS:
        decision = draw(st.sampled_from(["accept", "decline"]))
        script.append(Step(decision))
        if decision == "accept":
            break
    if script[-1].kind == "accept":
        script.append(Step("intake", draw(st.booleans())))
        for _ in range(draw(st.integers(0, 2))):
            script.append(Step("progress", draw(st.sampled_from(["attending", "not_attending"]))))
        script.append(Step("close", draw(st.sampled_from(["completed", "failed", "not_started"]))))
        script.append(Step("decision", draw(st.sampled_from(["dismissed", "prosecute"]))))
    # how much of the lifecycle is lived: shrinks toward the whole of it (which touches most)
    plan = script[: len(script) - draw(st.integers(0, len(script)))]
    # withdraw while the referral is open: after the consent, before the close
    open_until = next((i for i, s in enumerate(plan) if s.kind == "close"), len(plan))
    withdraw: bool = draw(st.booleans())
    if plan and withdraw:
        at = draw(st.integers(1, max(1, open_until)))
        who = draw(st.sampled_from(["office", "care_team"]))
        plan = [*plan[:at], Step("withdraw", who)]
        if draw(st.booleans()):
            plan.append(Step("decision", "dismissed"))
    return plan


@dataclass
class CaseState:
    """What the test itself knows of the case (its own oracle, not the app's)."""

    id: str = ""
    offered: str | None = None
    accepted: str | None = None
    declined: list[str] = field(default_factory=list)
    purposes: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    withdrawn: bool = False
    ended: bool = False
    # care workers the intake coordinator assigned to the case (need to know)
    assigned: set[str] = field(default_factory=set)

    @property
    def parties(self) -> set[str]:
        parties = {REFERRER}
        if self.accepted is not None:
            parties.add(self.accepted)
        elif self.offered is not None:
            parties.add(self.offered)
        return parties

    def sees_stage(self, caller: Caller) -> bool:
        """Whether the exact stage reaches `caller`: the care team follows the case it runs,
        whatever the consent; anyone else only with the compliance category."""
        roles = set(caller.roles)
        if caller.auditor or "admin" in roles:
            return False
        if (
            caller.sector in ("health", "welfare")
            and CARE_ROLES & roles
            and caller.organisation == self.accepted
        ):
            return True
        if self.withdrawn:
            return False
        if "compliance" not in self.categories:
            return False
        if caller.sector == "justice" and JUSTICE_ROLES & roles:
            return (
                caller.organisation == REFERRER and "progress_reporting_to_justice" in self.purposes
            )
        return (
            caller.sector in ("health", "welfare")
            and bool(CARE_ROLES & roles)
            and caller.organisation == self.accepted
        )

    def may_see(self, caller: Caller, category: str) -> bool:
        """Whether `category` (clinical/welfare) may reach `caller` in this state."""
        return (
            caller.organisation == self.accepted
            and caller.sector in ("health", "welfare")
            and bool(CARE_ROLES & set(caller.roles))
            and ("intake_coordinator" in caller.roles or caller.subject in self.assigned)
            and not (caller.justice or caller.auditor or "admin" in caller.roles)
            and not self.withdrawn
            and "care_team_sharing" in self.purposes
            and category in self.categories
        )


async def run_plan(j: Journey, plan: list[Step]) -> CaseState:
    state = CaseState()
    await j.create()
    state.id = str(j.id)
    for step in plan:
        if currently_in_test_context():
            note(f"step {step}")
        care = (state.accepted or "", "intake_coordinator")
        # intake and progress are care facts: unless the office may see compliance, nothing
        # it is shown may move with them
        hidden = step.kind in ("intake", "progress") and not state.sees_stage(OFFICE_CALLER)
        before = await office_answers(j) if hidden else None
        if step.kind == "consent":
            purposes, categories = step.arg
            body = consent_body(purposes=list(purposes), categories=list(categories))
            await j.step(OFFICE, "consent", body)
            state.purposes, state.categories = purposes, categories
            state.offered = PROVIDERS[0]
            view = await j.wait_stage("offered")
            assert view["offered_provider"] == state.offered
        elif step.kind == "decline":
            assert state.offered is not None
            await j.step(
                (state.offered, "intake_coordinator"), "decline", {"reason": "no_capacity"}
            )
            state.declined.append(state.offered)
            rest = [p for p in PROVIDERS if p not in state.declined]
            state.offered = rest[0] if rest else None
            view = await j.wait_stage("offered" if rest else "on_hold")
            assert view["offered_provider"] == state.offered
        elif step.kind == "accept":
            assert state.offered is not None
            await j.step((state.offered, "intake_coordinator"), "accept")
            state.accepted = state.offered
        elif step.kind == "intake":
            await j.step(
                care,
                "intake",
                {"intake_date": datetime.now(UTC).isoformat(), "attended": step.arg},
            )
        elif step.kind == "progress":
            body = {
                "attendance": step.arg,
                "clinical_note": CLINICAL_NOTE,
                "welfare_note": WELFARE_NOTE,
            }
            await j.step((state.accepted or "", "care_worker"), "progress", body)
        elif step.kind == "close":
            await j.step(care, "close", {"outcome": step.arg, "clinical_note": CLINICAL_NOTE})
            state.ended = True
            await j.wait_stage("outcome_reported")
        elif step.kind == "withdraw":
            who = care if step.arg == "care_team" and state.accepted else OFFICE
            await j.step(who, "consent/withdraw")
            state.withdrawn = state.ended = True
            await j.wait_stage("outcome_reported")
        elif step.kind == "decision":
            await j.step(OFFICE, "decision", {"decision": step.arg})
        else:  # pragma: no cover - the plans only hold the kinds above
            raise AssertionError(step)
        if before is not None:
            assert await office_answers(j) == before, f"the office's answers moved on {step}"
    return state


OFFICE_CALLER = Caller(REFERRER, ("prosecutor",), "justice")


async def office_answers(j: Journey) -> tuple[dict[str, Any], dict[str, Any]]:
    """The office's view of the case and its list row, whole."""
    view = await j.view(OFFICE)
    listed = await j.call(OFFICE, "GET", "/api/v1/referrals?limit=100")
    row = next(r for r in listed["items"] if r["id"] == j.id)
    return view, row


# -------------------------------------------------------------- the checks ---


def referral_get_paths(app: FastAPI, referral_id: str) -> list[str]:
    """Every GET endpoint of the API about one referral (from the OpenAPI document), and the
    list endpoint."""
    paths = []
    for path, operations in app.openapi()["paths"].items():
        if "get" not in operations:
            continue
        params = re.findall(r"{([^}]+)}", path)
        if path == "/api/v1/referrals":
            paths.append(path + "?limit=100")
        elif params == ["referral_id"] or (
            len(params) == 1 and path.startswith("/api/v1/referrals/{")
        ):
            paths.append(path.replace("{" + params[0] + "}", referral_id))
    return sorted(paths)


def content_of(body: Any) -> dict[str, Any]:
    content = body.get("content") if isinstance(body, dict) else None
    return dict(content) if isinstance(content, dict) else {}


def views_in(body: Any, referral_id: str) -> list[dict[str, Any]]:
    """The referral as an answer shows it: the view itself, or its rows in a list."""
    if not isinstance(body, dict):
        return []
    if body.get("id") == referral_id:
        return [body]
    items = body.get("items")
    if isinstance(items, list):
        return [i for i in items if isinstance(i, dict) and i.get("id") == referral_id]
    return []


# What only the compliance category shows: the exact stages, and these fields.
HIDDEN_STAGES = {"accepted", "in_progress", "completed", "failed", "not_started"}
STAGE_FIELDS = ("status", "business_status", "outcome", "next_progress_report_due")
REFUSED = ("Step refused", "urn:referral:problem:step-refused")
# (caller, step, what the caller sees of the case) -> the error answers it got, across examples
ERROR_ANSWERS: dict[tuple[Any, ...], set[tuple[Any, ...]]] = {}


def check(state: CaseState, caller: Caller, method: str, path: str, resp: httpx.Response) -> None:
    where = f"{caller} {method} {path} -> {resp.status_code}"
    # every field of the answer: the body and every header
    text = resp.text + "\n" + "\n".join(f"{k}: {v}" for k, v in resp.headers.items())
    is_list = "?" in path
    allowed = (200, 403, 404) if method == "GET" else (200, 403, 404, 409)
    assert resp.status_code in allowed, f"{where}: {text[:300]}"
    body = resp.json() if resp.status_code == 200 else None
    content = content_of(body)

    if caller.organisation not in state.parties:
        assert state.id not in text, f"{where}: an outsider learns of the referral"
        if not is_list:
            assert resp.status_code == 404, f"{where}: an outsider must get 404"

    if caller.justice:
        for secret in SECRET_NOTES:
            assert secret not in text, f"{where}: care content reached justice"
        assert "clinical" not in content and "welfare" not in content, where

    if caller.auditor:
        assert content == {}, f"{where}: case content reached an auditor"
        for value in PERSONAL + SECRET_NOTES:
            assert value not in text, f"{where}: case content reached an auditor"

    for category, secret in (("clinical", CLINICAL_NOTE), ("welfare", WELFARE_NOTE)):
        if secret in text or category in content:
            assert state.may_see(caller, category), f"{where}: {category} reached {caller}"

    if resp.status_code == 409:
        problem = resp.json()
        assert (problem["title"], problem["type"]) == REFUSED, f"{where}: {text[:300]}"
    if not state.sees_stage(caller):
        for view in views_in(body, state.id):
            assert view["stage"] not in HIDDEN_STAGES, f"{where}: the stage reached {caller}"
            for name in STAGE_FIELDS:
                assert view.get(name) is None, f"{where}: {name} reached {caller}"
            assert "compliance" not in content_of(view), f"{where}: compliance reached {caller}"
        if resp.status_code == 409:
            assert resp.json()["detail"] == StepRefused.UNSEEN, f"{where}: {text[:300]}"


async def check_everyone(
    api: httpx.AsyncClient,
    app: FastAPI,
    minter: TokenMinter,
    state: CaseState,
    callers: list[Caller],
) -> None:
    paths = referral_get_paths(app, state.id)
    assert len(paths) >= 3, paths  # the view, the consents, the list (at least)
    limit = asyncio.Semaphore(8)
    answers: dict[tuple[Caller, str], httpx.Response] = {}

    async def one(caller: Caller, path: str) -> None:
        async with limit:
            resp = await api.get(path, headers=caller.headers(minter))
        check(state, caller, "GET", path, resp)
        answers[(caller, path)] = resp

    await asyncio.gather(*(one(c, p) for c in callers for p in paths))

    # a list row is the detail view, field by field
    view_path, list_path = f"/api/v1/referrals/{state.id}", "/api/v1/referrals?limit=100"
    seen: dict[Caller, tuple[Any, ...]] = {}
    for caller in callers:
        view, listed = answers[(caller, view_path)], answers[(caller, list_path)]
        rows = views_in(listed.json(), state.id) if listed.status_code == 200 else []
        if view.status_code != 200:
            assert not rows, f"{caller}: listed, but the view answers {view.status_code}"
            seen[caller] = (view.status_code,)
            continue
        body = view.json()
        if listed.status_code == 200:
            assert len(rows) == 1, f"{caller}: the view answers, the list has {len(rows)} rows"
            for key, value in rows[0].items():
                assert body.get(key) == value, (
                    f"{caller}: {key} list={value!r} view={body.get(key)!r}"
                )
        seen[caller] = (body["stage"], body["offered_provider"], body["accepted_provider"])
    await post_everything(api, app, minter, state, callers, seen)


def referral_post_steps(app: FastAPI) -> list[str]:
    """Every POST step about one referral (from the OpenAPI document)."""
    prefix = "/api/v1/referrals/{referral_id}/"
    return sorted(
        path.removeprefix(prefix)
        for path, operations in app.openapi()["paths"].items()
        if "post" in operations and path.startswith(prefix)
    )


# The order the steps are sent in: those that end the case or change its parties last.
STEP_ORDER = [
    "decision",
    "rematch",
    "intake",
    "progress",
    "consent",
    "accept",
    "decline",
    "close",
    "cancel",
    "consent/withdraw",
]


# Not lifecycle steps: who on the provider's side is on the case. Cedar lets only the
# accepted provider's intake coordinator change it (everyone else: 403, or 404 outside the
# case, whatever the stage); tests/integration/test_consent_careteam.py covers them.
CARE_TEAM_ROUTES = frozenset({"care-team", "care-team/{subject}/release"})


def step_body(state: CaseState, step: str) -> Any:
    """A valid body for `step`: what is refused is the step, never the request's form."""
    if step == "consent":
        if not state.purposes:  # no consent yet: record the person's refusal
            return {"given": False, "evidence_hash": "sha256:" + "cd" * 32}
        return consent_body(purposes=list(state.purposes), categories=list(state.categories))
    return {
        "decline": {"reason": "no_capacity"},
        "intake": {"intake_date": datetime.now(UTC).isoformat(), "attended": True},
        "progress": {
            "attendance": "attending",
            "clinical_note": CLINICAL_NOTE,
            "welfare_note": WELFARE_NOTE,
        },
        "close": {"outcome": "completed", "clinical_note": CLINICAL_NOTE},
        "decision": {"decision": "dismissed"},
    }.get(step)


async def after_success(j: Journey, state: CaseState, caller: Caller, step: str) -> None:
    """Move the test's record of the case as the lifecycle says a step moves it."""
    if step == "accept":
        assert caller.organisation == state.offered, f"{caller} accepted an offer to another"
        state.accepted = state.offered
    elif step == "decline":
        assert state.offered is not None and caller.organisation == state.offered
        state.declined.append(state.offered)
        rest = [p for p in PROVIDERS if p not in state.declined]
        state.offered = rest[0] if rest else None
        await j.wait_stage("offered" if rest else "on_hold")
    elif step == "rematch":
        state.declined.clear()
        state.offered = PROVIDERS[0]
        await j.wait_stage("offered")
    elif step == "consent/withdraw":
        was_open = not state.ended
        state.withdrawn = state.ended = True
        if was_open:  # after the end a withdrawal stops access but moves no stage
            await j.wait_stage("outcome_reported")
    elif step in ("close", "cancel") or (step == "consent" and not state.purposes):
        state.ended = True
        await j.wait_stage("outcome_reported")


# Steps that change who the parties are: sent by one caller after the other. Every other
# step goes out from all organisations at once, one caller of an organisation after another
# (only one organisation's steps can move the parties, and a success by another one only
# ends the case).
ONE_BY_ONE = {"accept", "decline", "rematch"}


async def send_step(
    api: httpx.AsyncClient,
    minter: TokenMinter,
    j: Journey,
    state: CaseState,
    step: str,
    group: list[Caller],
) -> list[tuple[Caller, httpx.Response]]:
    """`group` sends `step`, one caller after the other; each answer is checked."""
    sent = []
    for caller in group:
        resp = await api.post(
            f"/api/v1/referrals/{state.id}/{step}",
            json=step_body(state, step),
            headers=caller.headers(minter),
        )
        if resp.status_code == 200:
            await after_success(j, state, caller, step)
        check(state, caller, "POST", step, resp)
        sent.append((caller, resp))
    return sent


async def post_everything(
    api: httpx.AsyncClient,
    app: FastAPI,
    minter: TokenMinter,
    state: CaseState,
    callers: list[Caller],
    seen: dict[Caller, tuple[Any, ...]],
) -> None:
    """Every caller sends every POST step (a success moves the case, and the test's record)."""
    steps = [s for s in referral_post_steps(app) if s not in CARE_TEAM_ROUTES]
    assert set(steps) <= set(STEP_ORDER), steps  # a new step needs a body and an order here
    j = Journey(api, minter)
    j.id = state.id
    moved = False
    for step in [s for s in STEP_ORDER if s in steps]:
        if step in ONE_BY_ONE:
            sent = await send_step(api, minter, j, state, step, callers)
        else:
            by_org: dict[str, list[Caller]] = {}
            for caller in callers:
                by_org.setdefault(caller.organisation, []).append(caller)
            groups = await asyncio.gather(
                *(send_step(api, minter, j, state, step, group) for group in by_org.values())
            )
            sent = [answer for group in groups for answer in group]
        succeeded = any(resp.status_code == 200 for _, resp in sent)
        errors = [(caller, resp) for caller, resp in sent if resp.status_code != 200]
        moved = moved or succeeded
        if moved:
            continue
        # the same error answer for the same step and the same view, whatever the view hides
        for caller, resp in errors:
            if state.sees_stage(caller):
                continue
            problem = resp.json()
            answers = ERROR_ANSWERS.setdefault((caller, step, seen[caller]), set())
            answers.add((resp.status_code, problem["title"], problem["detail"], problem["type"]))
            assert len(answers) == 1, f"{caller} POST {step}: {answers} for one view"


# --------------------------------------------------------------- the test ---

FULL = [
    Step("consent", (tuple(ALL_PURPOSES), tuple(ALL_CATEGORIES))),
    Step("accept"),
    Step("intake", True),
    Step("progress", "attending"),
    Step("progress", "not_attending"),
    Step("close", "completed"),
    Step("decision", "dismissed"),
]
# People with two hats: a care worker who is also a prosecutor or an auditor, and so on.
TWO_HATS = [
    Caller("cgg-antwerpen", ("care_worker", "prosecutor"), "health"),
    Caller("cgg-antwerpen", ("intake_coordinator", "auditor"), "health"),
    Caller("free-clinic-antwerpen", ("care_worker", "justice_assistant"), "health"),
    Caller("parket-antwerpen", ("prosecutor", "care_worker"), "health"),
]


# OpenTelemetry's span-id generator draws from the global `random` in the app's and the
# worker's threads, concurrently with Hypothesis drawing a plan; Hypothesis then believes
# the strategies use `random` (they do not) and warns. Only that warning is silenced.
@pytest.mark.filterwarnings(
    "ignore:Do not use the `random` module inside strategies"
    ":hypothesis.errors.HypothesisDeprecationWarning"
)
@settings(
    max_examples=10,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(plan=plans(), extra=st.lists(extra_callers, max_size=4))
# Always lived, besides the random plans: the three lifecycles with the most at stake.
@example(plan=FULL, extra=TWO_HATS)
@example(plan=[*FULL[:5], Step("withdraw", "care_team"), Step("decision", "dismissed")], extra=[])
@example(
    plan=[FULL[0], Step("decline"), Step("accept"), *FULL[2:5], Step("close", "failed")],
    extra=TWO_HATS,
)
# Reporting to justice without the compliance category: the office sees neither care start
# nor its outcome, in the view, the list, the timestamps or the refusals.
@example(
    plan=[
        Step(
            "consent", (tuple(ALL_PURPOSES), tuple(c for c in ALL_CATEGORIES if c != "compliance"))
        ),
        *FULL[1:4],
        Step("close", "failed"),
    ],
    extra=[],
)
async def test_no_secret_crosses_the_lines(
    api: httpx.AsyncClient,
    app: FastAPI,
    minter: TokenMinter,
    plan: list[Step],
    extra: list[Caller],
) -> None:
    note(f"plan {[(s.kind, s.arg) for s in plan]}")
    state = await run_plan(Journey(api, minter), plan)
    note(f"state {state}")
    assert not (state.accepted and state.accepted in state.declined)
    await check_everyone(api, app, minter, state, EVERY_CALLER + extra)


async def test_the_property_sees_the_secrets_where_they_belong(
    api: httpx.AsyncClient, app: FastAPI, minter: TokenMinter
) -> None:
    """The checks are not vacuous: on one full lifecycle the care team does see its notes."""
    plan = [
        Step("consent", (tuple(ALL_PURPOSES), tuple(ALL_CATEGORIES))),
        Step("accept"),
        Step("intake", True),
        Step("progress", "attending"),
    ]
    j = Journey(api, minter)
    state = await run_plan(j, plan)
    worker = Caller("cgg-antwerpen", ("care_worker",), "health")
    # need to know: the care worker sees the notes once the intake coordinator assigned them
    view = await api.get(f"/api/v1/referrals/{state.id}", headers=worker.headers(minter))
    assert view.status_code == 200 and "clinical" not in view.json()["content"]
    await j.call(
        ("cgg-antwerpen", "intake_coordinator"),
        "POST",
        f"/api/v1/referrals/{state.id}/care-team",
        {"subject": worker.subject},
    )
    state.assigned.add(worker.subject)
    view = await api.get(f"/api/v1/referrals/{state.id}", headers=worker.headers(minter))
    assert view.status_code == 200
    assert view.json()["content"]["clinical"]["note"] == CLINICAL_NOTE
    assert view.json()["content"]["welfare"]["note"] == WELFARE_NOTE
    office = await api.get(f"/api/v1/referrals/{state.id}", headers=j.headers(OFFICE))
    assert office.status_code == 200 and office.json()["content"]["identity"]
    await check_everyone(api, app, minter, state, EVERY_CALLER)
