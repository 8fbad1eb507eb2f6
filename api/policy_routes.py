"""`GET /api/v1/policy/explain`: why the Cedar policies decide as they do, for auditors and admins.

The answer concerns a typical situation (one role and sector, one relation to a case, a
consent in one state), never a real case: it shows no case data. Asking is itself an
authorisation decision (`explain_policy`), taken by the gatekeeper and so audited.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel

from api.deps import ContextDep, PrincipalDep, RuntimeDep
from api.routes import purpose_of
from services import policy
from services.audit.models import AuditEventType
from services.errors import Forbidden, Unprocessable
from services.principal import Role, Sector

router = APIRouter(prefix="/api/v1/policy", tags=["policy"])


class Explanation(BaseModel):
    """ALLOW or DENY, and the ids of the policies that decided (none: denied by default)."""

    decision: Literal["ALLOW", "DENY"]
    policy_ids: list[str]


@router.get("/explain", response_model=Explanation)
async def explain_policy(
    runtime: RuntimeDep,
    principal: PrincipalDep,
    ctx: ContextDep,
    role: Annotated[Role, Query(description="Role of the person in the situation.")],
    sector: Annotated[Sector, Query(description="Their sector.")],
    relation: Annotated[
        policy.Relation, Query(description="Their organisation's relation to the case.")
    ],
    category: Annotated[
        policy.DataCategory | None, Query(description="A data category to disclose.")
    ] = None,
    action: Annotated[
        policy.Action | None, Query(description="A lifecycle or audit action.")
    ] = None,
    consent: Annotated[
        policy.ConsentState,
        Query(description="State of a consent covering every purpose and category."),
    ] = policy.ConsentState.ACTIVE,
) -> dict[str, object]:
    """Decide a typical situation with the live policies (auditors and administrators)."""

    def answer() -> dict[str, object]:
        with runtime.gatekeeper.access(
            principal=principal,
            event_type=AuditEventType.QUERY,
            action="policy.explain",
            purpose=purpose_of(principal),
            ctx=ctx,
        ) as access:
            allowed = access.decide(action=policy.Action.EXPLAIN_POLICY, case=None, consent=None)
            if not allowed.allowed:
                raise Forbidden("only auditors and administrators may ask the policies to explain")
            if (category is None) == (action is None):
                raise Unprocessable("give exactly one of category or action")
            if action is policy.Action.DISCLOSE:
                raise Unprocessable("to ask about a disclosure, give the category instead")
            subject = category.value if category is not None else str(action)
            decision = policy.explain(role, sector, relation, subject, consent)
            return {
                "decision": "ALLOW" if decision.allowed else "DENY",
                "policy_ids": list(decision.policy_ids),
            }

    return await run_in_threadpool(answer)
