"""Authorization and disclosure decisions, answered by the Cedar policies in `policies/`.

Routes and activities never decide access themselves: they describe the situation
(`Principal`, `CaseFacts`, `ConsentFacts`) and ask `authorize` or
`disclosable_categories`. The policy set is parsed and validated against the schema
once, when this module is imported; an invalid policy set stops the process.
Anything the engine cannot evaluate cleanly (unknown action, evaluation error,
missing entity, malformed request) is denied.
"""

from __future__ import annotations

import json
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Final, Generic, Literal, TypeVar

import cedarpy
from pydantic import BaseModel, ConfigDict

from services.principal import Principal, Role, Sector

POLICY_DIR: Final = Path(__file__).resolve().parent.parent / "policies"
SCHEMA_FILE: Final = "schema.cedarschema"
NAMESPACE: Final = "Referral"


class PolicyConfigurationError(RuntimeError):
    """The policy files are missing, unparsable, or do not validate against the schema."""


class DataCategory(StrEnum):
    IDENTITY = "identity"
    CONTACT = "contact"
    JUDICIAL_CONTEXT = "judicial_context"
    REFERRAL_REASON = "referral_reason"
    CLINICAL = "clinical"
    WELFARE = "welfare"
    COMPLIANCE = "compliance"
    ACCESS_LOG = "access_log"


class Action(StrEnum):
    CREATE_REFERRAL = "create_referral"
    VIEW_REFERRAL = "view_referral"
    # the exact stage, status and report due of a referral (the care team's own process)
    VIEW_STAGE = "view_stage"
    LIST_REFERRALS = "list_referrals"
    RECORD_CONSENT = "record_consent"
    WITHDRAW_CONSENT = "withdraw_consent"
    ACCEPT = "accept"
    DECLINE = "decline"
    RECORD_INTAKE = "record_intake"
    REPORT_PROGRESS = "report_progress"
    CLOSE = "close"
    DECIDE = "decide"
    CANCEL = "cancel"
    REMATCH = "rematch"
    SEARCH_AUDIT = "search_audit"
    VERIFY_AUDIT = "verify_audit"
    EXPLAIN_POLICY = "explain_policy"
    DECODE_PAYLOADS = "decode_payloads"
    ACCESS_REPORT = "access_report"
    ASSIGN_CARE_WORKER = "assign_care_worker"
    RELEASE_CARE_WORKER = "release_care_worker"
    DISCLOSE = "disclose"
    PERSON_ACCESS_REPORT = "person_access_report"


# Actions about the engine as a whole: their resource is the Registry, not a case.
REGISTRY_ACTIONS: Final = frozenset(
    {
        Action.LIST_REFERRALS,
        Action.SEARCH_AUDIT,
        Action.VERIFY_AUDIT,
        Action.EXPLAIN_POLICY,
        Action.DECODE_PAYLOADS,
        Action.PERSON_ACCESS_REPORT,
    }
)
CASE_ACTIONS: Final = frozenset(Action) - REGISTRY_ACTIONS - {Action.DISCLOSE}


class Relation(StrEnum):
    """How the principal's organisation stands to one case."""

    REFERRER = "referrer"
    OFFERED_PROVIDER = "offered_provider"
    CARE_TEAM = "care_team"
    FRAMEWORK_MEMBER = "framework_member"
    OUTSIDER = "outsider"


class ConsentState(StrEnum):
    NONE = "none"
    ACTIVE = "active"
    WITHDRAWN = "withdrawn"
    EXPIRED = "expired"
    REFUSED = "refused"


class ConsentPurpose(StrEnum):
    REFERRAL_TO_CARE = "referral_to_care"
    PROGRESS_REPORTING_TO_JUSTICE = "progress_reporting_to_justice"
    CARE_TEAM_SHARING = "care_team_sharing"


class CaseFacts(BaseModel):
    """What the policies need to know about one referral (organisation codes, no PII)."""

    model_config = ConfigDict(frozen=True)

    referral_id: str
    framework_id: str
    framework_members: frozenset[str]
    referring_office: str
    offered_provider: str | None = None
    accepted_provider: str | None = None
    # the sector (health or welfare) of the accepted provider, when the engine knows it
    accepted_provider_sector: str | None = None
    # the IdP subject ids of the care workers the provider's intake coordinator assigned
    # to this case (need to know); never names
    assigned_workers: frozenset[str] = frozenset()


class ConsentWidening(BaseModel):
    """What a proposed consent version adds to the consent as it stands (empty: nothing)."""

    model_config = ConfigDict(frozen=True)

    purposes: frozenset[str] = frozenset()
    categories: frozenset[str] = frozenset()
    recipients: frozenset[str] = frozenset()
    disclosers: frozenset[str] = frozenset()
    # the proposal ends later than the current consent (or the current one has none)
    extends_validity: bool = False


class ConsentFacts(BaseModel):
    """The person's consent as it stands now: status, purposes, data categories, who may
    receive the data and who may disclose it (organisation codes or sector names).

    `widening` is set only when a new consent version is being recorded: what it adds."""

    model_config = ConfigDict(frozen=True)

    status: ConsentState = ConsentState.NONE
    purposes: frozenset[str] = frozenset()
    categories: frozenset[str] = frozenset()
    recipients: frozenset[str] = frozenset()
    disclosers: frozenset[str] = frozenset()
    widening: ConsentWidening | None = None


NO_CONSENT: Final = ConsentFacts()

Projection = Literal["full", "minimal"]


class Decision(BaseModel):
    """The answer: allowed or not, the ids of the policies that decided, and any errors."""

    model_config = ConfigDict(frozen=True)

    allowed: bool
    policy_ids: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()
    # For an allowed disclosure: "minimal" when every deciding permit asks for the
    # minimal subset of the category's fields, otherwise "full".
    projection: Projection | None = None

    @property
    def default_deny(self) -> bool:
        """Denied because no policy permits it (not because a forbid matched)."""
        return not self.allowed and not self.policy_ids and not self.errors


K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class RecentlyUsed(Generic[K, V]):
    """At most `max_entries` values by key; thread-safe; least recently used first out."""

    def __init__(self, max_entries: int) -> None:
        self._max = max_entries
        self._entries: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def lookup(self, key: K) -> V | None:
        """The value kept for `key`, if any."""
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
            return found

    def keep(self, key: K, value: V) -> None:
        if self._max <= 0:
            return
        with self._lock:
            self._entries[key] = value
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


class DecisionCache(RecentlyUsed[Hashable, tuple[Decision, ...]]):
    """Recent decisions by the facts they were taken on.

    A decision is a pure function of the policy set (parsed once, at import, and never
    changed while the process runs) and of the facts passed in: the principal, the case,
    the consent (its expiry already evaluated) and the action or categories asked. Those
    facts are frozen values and together form the key, so an answer from the cache is the
    one Cedar would give: any change of a fact (a new consent version, an accepted offer, a
    care worker released) is a different key. Reads of an unchanged case by the same person
    (a UI refreshing, a client polling a stage) then cost no Cedar call. A decision that
    could not be evaluated cleanly is never kept.
    """

    def __init__(self, max_entries: int = 4096) -> None:
        super().__init__(max_entries)

    def get(
        self, key: Hashable, evaluate: Callable[[], tuple[Decision, ...]]
    ) -> tuple[Decision, ...]:
        """The decisions for `key`, evaluated (and kept, if clean) on a miss."""
        found = self.lookup(key)
        if found is not None:
            return found
        decisions = evaluate()
        self.keep(key, decisions)
        return decisions

    def keep(self, key: Hashable, value: tuple[Decision, ...]) -> None:
        """Keep the decisions `value` for `key`, unless one could not be evaluated cleanly."""
        if not any(d.errors for d in value):
            super().keep(key, value)


class EntityBases(RecentlyUsed[Principal, cedarpy.Entities]):
    """The parsed entities every disclosure call of one principal starts from: its user and
    organisation and the eight data categories, validated against the schema once.

    Cedar parses each entity of a call (tens of microseconds each, more than a decision);
    these ten depend only on the principal, whose facts are frozen values and the key, so a
    base is never stale. A call adds the entities of its own case to a copy of the base
    (`cedarpy.Entities.with_added_json_str`); a property test checks that every decision on
    such a set is the one taken on the whole list, and that the list validates against the
    schema.
    """

    def __init__(self, max_entries: int = 1024) -> None:
        super().__init__(max_entries)

    def of(self, principal: Principal, schema: cedarpy.Schema) -> cedarpy.Entities:
        """The base of `principal` (parsed on a miss; raises ValueError if it does not
        validate against `schema`)."""
        found = self.lookup(principal)
        if found is not None:
            return found
        base = cedarpy.Entities.from_json_str(
            json.dumps(_principal_entities(principal) + _CATEGORY_ENTITIES), schema=schema
        )
        self.keep(principal, base)
        return base


@dataclass(frozen=True)
class PolicyEngine:
    """The parsed, validated policy set and schema, reused by every call."""

    policy_set: cedarpy.PolicySet
    schema: cedarpy.Schema
    policy_text: str
    schema_text: str
    # Cedar's positional ids (policy0, policy1, ...) to the stable @id of each policy.
    ids: Mapping[str, str]
    # @id -> annotations of that policy.
    annotations: Mapping[str, Mapping[str, str]]
    # action id -> the policies whose action scope admits that action, under the same
    # positional ids (see `_slices`).
    slices: Mapping[str, cedarpy.PolicySet]
    # (allowed, Cedar's reasons, disclosure?) -> the `Decision` of an error-free answer: it
    # depends on nothing else, and a batch of eight categories usually repeats two or three.
    clean_decisions: DecisionCache = field(default_factory=DecisionCache, compare=False, repr=False)
    # principal -> its disclosure entity base (see `EntityBases`)
    entity_bases: EntityBases = field(default_factory=EntityBases, compare=False, repr=False)

    def stable_id(self, cedar_id: str) -> str:
        return self.ids.get(cedar_id, cedar_id)

    def policies_for(self, action_id: str) -> cedarpy.PolicySet:
        """The policies that can decide a request for `action_id` (all, for an unknown one)."""
        return self.slices.get(action_id, self.policy_set)


_POSITIONAL_ID = re.compile(r"`(policy\d+)`")


def load_engine(policy_dir: Path = POLICY_DIR) -> PolicyEngine:
    """Parse the schema and policies of `policy_dir` and validate them; raise if anything is off."""
    schema_path = policy_dir / SCHEMA_FILE
    policy_paths = sorted(policy_dir.glob("*.cedar"))
    if not schema_path.is_file() or not policy_paths:
        raise PolicyConfigurationError(f"no Cedar schema or policies in {policy_dir}")
    schema_text = schema_path.read_text(encoding="utf-8")
    # Each file ends with a newline so policies of two files never run together.
    policy_text = "".join(p.read_text(encoding="utf-8").rstrip() + "\n" for p in policy_paths)
    try:
        schema = cedarpy.Schema.from_str(schema_text)
        policy_set = cedarpy.PolicySet.from_str(policy_text)
        est = json.loads(cedarpy.policies_to_json_str(policy_text))
    except ValueError as exc:
        raise PolicyConfigurationError(f"Cedar policies or schema do not parse: {exc}") from exc
    validation = cedarpy.validate_policies(policy_text, schema)
    if not validation.validation_passed:
        detail = "; ".join(str(error) for error in validation.errors)
        raise PolicyConfigurationError(f"Cedar policies do not validate: {detail}")
    if est.get("templates"):
        raise PolicyConfigurationError("policy templates are not used by this engine")
    ids: dict[str, str] = {}
    annotations: dict[str, dict[str, str]] = {}
    for cedar_id, policy in est["staticPolicies"].items():
        notes = {key: str(value) for key, value in (policy.get("annotations") or {}).items()}
        stable = notes.get("id", "")
        if not stable:
            raise PolicyConfigurationError(f"policy {cedar_id} has no @id annotation")
        if stable in annotations:
            raise PolicyConfigurationError(f"two policies share the @id {stable!r}")
        ids[cedar_id] = stable
        annotations[stable] = notes
    return PolicyEngine(
        policy_set=policy_set,
        schema=schema,
        policy_text=policy_text,
        schema_text=schema_text,
        ids=ids,
        annotations=annotations,
        slices=_slices(est, schema_text),
    )


def without_comments(text: str) -> str:
    """Cedar policy or schema text without its `//` comments (which may name anything)."""
    return "\n".join(line.split("//", 1)[0] for line in text.splitlines())


_IDENT = re.compile(r'[A-Za-z_][A-Za-z0-9_]*|"[^"\\]*"')
# An action declaration starts a statement: `action a, b in [g] appliesTo {...};`.
_ACTION_DECLARATION = re.compile(r"(?:\A|(?<=[;{}]))\s*action\s+([^;]*);", re.S)


def _names(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names or not all(_IDENT.fullmatch(name) for name in names):
        raise PolicyConfigurationError(f"cannot read the action names {text.strip()!r}")
    return [name.strip('"') for name in names]


def _action_ancestors(schema_text: str) -> dict[str, frozenset[str]]:
    """Each action of the schema with the action groups it is in, directly or not.

    Read from the schema's action declarations (plain or quoted names, groups of the same
    namespace); anything else there stops the engine rather than be guessed.
    """
    code = without_comments(schema_text)
    parents: dict[str, set[str]] = {}
    for declaration in _ACTION_DECLARATION.findall(code):
        head = declaration.split("appliesTo", 1)[0]
        names_text, *member_of = re.split(r"\s+in\s+", head, maxsplit=1)
        groups = (
            _names(member_of[0].strip().removeprefix("[").removesuffix("]")) if member_of else []
        )
        for name in _names(names_text):
            parents.setdefault(name, set()).update(groups)
    ancestors: dict[str, frozenset[str]] = {}
    for name in parents:
        seen: set[str] = set()
        todo = list(parents[name])
        while todo:
            group = todo.pop()
            if group not in seen:
                seen.add(group)
                todo.extend(parents.get(group, ()))
        ancestors[name] = frozenset(seen)
    return ancestors


def _admits(scope: Mapping[str, Any], action_id: str, ancestors: frozenset[str]) -> bool:
    """Whether a policy's action scope (Cedar's JSON form) can match `action_id`; anything
    not plainly of this namespace's actions is taken to match."""
    kind = f"{NAMESPACE}::Action"
    op = scope.get("op")
    if op == "==":
        entity = scope["entity"]
        return bool(entity["type"] != kind or entity["id"] == action_id)
    if op == "in":
        targets = scope["entities"] if "entities" in scope else [scope["entity"]]
        return any(
            t["type"] != kind or t["id"] == action_id or t["id"] in ancestors for t in targets
        )
    return True


def _slices(est: Mapping[str, Any], schema_text: str) -> dict[str, cedarpy.PolicySet]:
    """For each action a request may name, the policy set of only the policies whose action
    scope admits it, under their positional ids in the whole set.

    Cedar evaluates every policy of the set for each request; one whose scope excludes the
    request's action can neither match nor fail, so leaving it out changes no decision, no
    reason and no error (a test compares both on every action). A lifecycle request is then
    decided on 4 to 6 policies rather than all 39, a disclosure on 22.
    """
    ancestors = _action_ancestors(schema_text)
    scoped = {
        t["id"]
        for policy in est["staticPolicies"].values()
        for t in policy["action"].get("entities", [policy["action"].get("entity")])
        if t is not None
    }
    unknown = ({action.value for action in Action} | scoped) - set(ancestors)
    if unknown:
        raise PolicyConfigurationError(f"actions missing from the schema: {sorted(unknown)}")
    slices: dict[str, cedarpy.PolicySet] = {}
    for action in Action:
        kept = {
            cedar_id: policy
            for cedar_id, policy in est["staticPolicies"].items()
            if _admits(policy["action"], action.value, ancestors[action.value])
        }
        slices[action.value] = cedarpy.PolicySet.from_json_str(
            json.dumps({"staticPolicies": kept, "templates": {}, "templateLinks": []})
        )
    return slices


# Loaded once, at import: a broken policy set must stop the process at startup.
ENGINE: Final = load_engine()


def engine() -> PolicyEngine:
    """The process-wide policy engine."""
    return ENGINE


def relation_of(principal: Principal, case: CaseFacts | None) -> Relation:
    """How the principal's organisation stands to the case (outsider if not in its framework)."""
    org = principal.organisation
    if case is None or org not in case.framework_members:
        return Relation.OUTSIDER
    if org == case.referring_office:
        return Relation.REFERRER
    if org == case.accepted_provider:
        return Relation.CARE_TEAM
    # An offer is only an offer while no provider has accepted the case.
    if case.accepted_provider is None and org == case.offered_provider:
        return Relation.OFFERED_PROVIDER
    return Relation.FRAMEWORK_MEMBER


# ---------------------------------------------------------------- entities ---
# Plain dicts and lists: cedarpy serialises them in one json.dumps per call.

_USER = f"{NAMESPACE}::User"
_ORG = f"{NAMESPACE}::Organisation"
_FRAMEWORK = f"{NAMESPACE}::Framework"
_CASE = f"{NAMESPACE}::Case"
_CATEGORY = f"{NAMESPACE}::DataCategory"
_CONSENT = f"{NAMESPACE}::Consent"
_REGISTRY = f"{NAMESPACE}::Registry"
_ACTION = f"{NAMESPACE}::Action"
_REGISTRY_UID: Final = {"type": _REGISTRY, "id": "referral-engine"}


def _ref(entity_type: str, entity_id: str) -> dict[str, Any]:
    return {"__entity": {"type": entity_type, "id": entity_id}}


# The eight categories never change: built once, added to every disclosure call.
_CATEGORY_ENTITIES: Final = [
    {"uid": {"type": _CATEGORY, "id": c.value}, "attrs": {"name": c.value}, "parents": []}
    for c in DataCategory
]


# Sets of which the policies only ask whether they hold the principal (or its organisation),
# as `<set>.contains(<member>)`: the entities carry at most that one member, because Cedar
# parses every entity reference of a call (about 10 us each), so a framework of sixty
# organisations would otherwise cost more than the whole decision. The answer to every
# question the policies may ask of such a set is the same on the pruned set; a test checks
# that each use of these attributes in the policies is that one question.
_PRINCIPAL_ONLY_SETS: Final = {
    "participants": "principal.organisation",
    "assigned_workers": "principal",
}


def _principal_entities(principal: Principal) -> list[dict[str, Any]]:
    """The principal's user and organisation entities."""
    org = principal.organisation
    return [
        {
            "uid": {"type": _USER, "id": principal.subject},
            "attrs": {
                "sector": principal.sector.value,
                "roles": [role.value for role in principal.roles],
                "organisation": _ref(_ORG, org),
            },
            "parents": [{"type": _ORG, "id": org}],
        },
        {
            "uid": {"type": _ORG, "id": org},
            "attrs": {"sector": principal.sector.value},
            "parents": [],
        },
    ]


def _entities(principal: Principal, case: CaseFacts | None) -> list[dict[str, Any]]:
    entities = _principal_entities(principal)
    if case is None:
        entities.append({"uid": _REGISTRY_UID, "attrs": {}, "parents": []})
        return entities
    return entities + _own_entities(principal, case)


def _own_entities(principal: Principal, case: CaseFacts) -> list[dict[str, Any]]:
    """The entities of `case` as `principal` sees it, beside the principal's own."""
    # Organisations other than the principal's own are only referred to (by uid), never
    # looked into, so they need no entity of their own: each entity costs parse time.
    org = principal.organisation
    entities: list[dict[str, Any]] = []
    case_attrs: dict[str, Any] = {
        "framework": _ref(_FRAMEWORK, case.framework_id),
        "referring_office": _ref(_ORG, case.referring_office),
        "care_team": [],
        # Only whether the principal is assigned is ever asked (see `_PRINCIPAL_ONLY_SETS`).
        "assigned_workers": (
            [_ref(_USER, principal.subject)] if principal.subject in case.assigned_workers else []
        ),
    }
    if case.offered_provider is not None:
        case_attrs["offered_provider"] = _ref(_ORG, case.offered_provider)
    if case.accepted_provider is not None:
        case_attrs["accepted_provider"] = _ref(_ORG, case.accepted_provider)
        case_attrs["care_team"] = [_ref(_ORG, case.accepted_provider)]
        # The policies look at the accepted provider's sector (is it named as a discloser?).
        if case.accepted_provider != org and case.accepted_provider_sector is not None:
            entities.append(
                {
                    "uid": {"type": _ORG, "id": case.accepted_provider},
                    "attrs": {"sector": case.accepted_provider_sector},
                    "parents": [],
                }
            )
    entities.append(
        {
            "uid": {"type": _FRAMEWORK, "id": case.framework_id},
            # Only whether the principal's organisation takes part is ever asked (see
            # `_PRINCIPAL_ONLY_SETS`): a framework of any size costs one reference.
            "attrs": {"participants": [_ref(_ORG, org)] if org in case.framework_members else []},
            "parents": [],
        }
    )
    entities.append(
        {"uid": {"type": _CASE, "id": case.referral_id}, "attrs": case_attrs, "parents": []}
    )
    return entities


def _disclosure_entities(
    principal: Principal, case: CaseFacts, consent: ConsentFacts
) -> list[dict[str, Any]]:
    return _entities(principal, case) + [_consent_entity(case, consent)] + _CATEGORY_ENTITIES


def _disclosure_entity_set(
    principal: Principal, case: CaseFacts, consent: ConsentFacts
) -> Callable[[PolicyEngine], cedarpy.Entities]:
    """`_disclosure_entities`, parsed: the principal's base (`EntityBases`) of the engine
    that decides, and the case's own entities. Built when the call is made, so that a
    failure is a refusal."""

    def build(engine: PolicyEngine) -> cedarpy.Entities:
        own = _own_entities(principal, case) + [_consent_entity(case, consent)]
        base = engine.entity_bases.of(principal, engine.schema)
        return base.with_added_json_str(json.dumps(own))

    return build


def _consent_entity(case: CaseFacts, consent: ConsentFacts) -> dict[str, Any]:
    """The consent to `case` as an entity (one per case: its uid is the case's id), read by
    every disclosure request of the call through `context.consent`."""
    uid = {"type": _CONSENT, "id": case.referral_id}
    return {"uid": uid, "attrs": _consent_record(consent), "parents": []}


SECTOR_NAMES: Final = frozenset(sector.value for sector in Sector)


def _parties(names: Iterable[str]) -> tuple[list[dict[str, Any]], list[str]]:
    """Split consent parties into organisations (by code) and whole sectors (by name)."""
    organisations = sorted(n for n in names if n not in SECTOR_NAMES)
    sectors = sorted(n for n in names if n in SECTOR_NAMES)
    return [_ref(_ORG, code) for code in organisations], sectors


def _consent_record(consent: ConsentFacts) -> dict[str, Any]:
    recipient_orgs, recipient_sectors = _parties(consent.recipients)
    discloser_orgs, discloser_sectors = _parties(consent.disclosers)
    return {
        "status": consent.status.value,
        "purposes": sorted(consent.purposes),
        "categories": sorted(consent.categories),
        "recipient_organisations": recipient_orgs,
        "recipient_sectors": recipient_sectors,
        "discloser_organisations": discloser_orgs,
        "discloser_sectors": discloser_sectors,
    }


def _widening_record(widening: ConsentWidening) -> dict[str, Any]:
    recipient_orgs, recipient_sectors = _parties(widening.recipients)
    discloser_orgs, discloser_sectors = _parties(widening.disclosers)
    return {
        "purposes": sorted(widening.purposes),
        "categories": sorted(widening.categories),
        "recipient_organisations": recipient_orgs,
        "recipient_sectors": recipient_sectors,
        "discloser_organisations": discloser_orgs,
        "discloser_sectors": discloser_sectors,
        "extends_validity": widening.extends_validity,
    }


# ---------------------------------------------------------------- decisions ---


def _deny(*errors: str) -> Decision:
    return Decision(allowed=False, errors=errors)


def _decision(
    result: cedarpy.AuthzResult, policy_engine: PolicyEngine, *, disclosure: bool
) -> Decision:
    diagnostics = result.diagnostics
    if not diagnostics.errors:
        allowed, reasons = result.allowed, tuple(diagnostics.reasons)
        return policy_engine.clean_decisions.get(
            (allowed, reasons, disclosure),
            lambda: (_clean_decision(allowed, reasons, policy_engine, disclosure=disclosure),),
        )[0]
    errors = tuple(
        _POSITIONAL_ID.sub(lambda m: f"`{policy_engine.stable_id(m.group(1))}`", error)
        for error in diagnostics.errors
    )
    policy_ids = tuple(sorted(policy_engine.stable_id(r) for r in diagnostics.reasons))
    # Fail closed: a policy that could not be evaluated might have been a forbid.
    # Keep the ids of forbids that did match; drop permits.
    kept = () if result.allowed else policy_ids
    return Decision(allowed=False, policy_ids=kept, errors=errors)


def _clean_decision(
    allowed: bool, reasons: tuple[str, ...], policy_engine: PolicyEngine, *, disclosure: bool
) -> Decision:
    """The decision of an answer Cedar gave without errors."""
    policy_ids = tuple(sorted(policy_engine.stable_id(r) for r in reasons))
    if not allowed:
        return Decision(allowed=False, policy_ids=policy_ids)
    if not disclosure:
        return Decision(allowed=True, policy_ids=policy_ids)
    minimal = all(
        policy_engine.annotations.get(pid, {}).get("projection") == "minimal" for pid in policy_ids
    )
    return Decision(
        allowed=True, policy_ids=policy_ids, projection="minimal" if minimal else "full"
    )


def _evaluate(
    requests: list[dict[str, Any]],
    entities: list[dict[str, Any]] | Callable[[PolicyEngine], cedarpy.Entities],
    *,
    disclosure: bool = False,
) -> list[Decision]:
    policy_engine = ENGINE
    # Each call asks about one action (a mixed call is decided on the whole set).
    actions = {request["action"]["id"] for request in requests}
    policies = (
        policy_engine.policies_for(actions.pop()) if len(actions) == 1 else policy_engine.policy_set
    )
    try:
        results = cedarpy.is_authorized_batch(
            requests,
            policies,
            entities(policy_engine) if callable(entities) else entities,
            schema=policy_engine.schema,
        )
    except (ValueError, TypeError, RuntimeError) as exc:
        return [_deny(f"policy evaluation failed: {exc}") for _ in requests]
    if len(results) != len(requests):
        return [_deny("policy engine returned an incomplete answer") for _ in requests]
    return [_decision(result, policy_engine, disclosure=disclosure) for result in results]


_DECISIONS: Final = DecisionCache()


def clear_decision_cache() -> None:
    """Forget every cached decision (benchmarks measure Cedar itself with this)."""
    _DECISIONS.clear()


# Facts only the engine computes: a caller's context can never supply them.
_COMPUTED_ONLY: Final = frozenset({"relation", "widening", "consent", "case"})


def _merge_context(computed: dict[str, Any], extra: Mapping[str, Any] | None) -> dict[str, Any]:
    # What the engine computed always wins over what a caller passes in.
    if not extra:
        return computed
    return {**{k: v for k, v in extra.items() if k not in _COMPUTED_ONLY}, **computed}


def authorize(
    principal: Principal,
    action: Action | str,
    case: CaseFacts | None = None,
    consent: ConsentFacts | None = None,
    context: Mapping[str, Any] | None = None,
) -> Decision:
    """May `principal` take lifecycle/audit `action` (on `case`, for case actions)?"""
    try:
        act = Action(action)
    except ValueError:
        return _deny(f"unknown action {action!r}")
    if act is Action.DISCLOSE:
        category = (context or {}).get("category")
        if category is None:
            return _deny("disclose needs context={'category': ...}; see disclosable_categories")
        return may_disclose(principal, category, case, consent)
    if act in REGISTRY_ACTIONS:
        request = _registry_request(principal, act, context)
        return _evaluate([request], _entities(principal, None))[0]
    if case is None:
        return _deny(f"action {act.value!r} needs the facts of a case")
    request = _case_request(principal, act, case, consent, context)
    if context:
        return _evaluate([request], _entities(principal, case))[0]
    # Without a caller's context the facts below are all the request holds: a repeat is
    # answered from the cache (see `DecisionCache`).
    return _DECISIONS.get(
        ("authorize", act, principal, case, consent),
        lambda: (_evaluate([request], _entities(principal, case))[0],),
    )[0]


def _registry_request(
    principal: Principal, action: Action, context: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "principal": {"type": _USER, "id": principal.subject},
        "action": {"type": _ACTION, "id": action.value},
        "resource": _REGISTRY_UID,
        "context": _merge_context({}, context),
    }


def _case_request(
    principal: Principal,
    action: Action,
    case: CaseFacts,
    consent: ConsentFacts | None,
    context: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    computed: dict[str, Any] = {"relation": relation_of(principal, case).value}
    if consent is not None and consent.widening is not None:
        computed["widening"] = _widening_record(consent.widening)
    return {
        "principal": {"type": _USER, "id": principal.subject},
        "action": {"type": _ACTION, "id": action.value},
        "resource": {"type": _CASE, "id": case.referral_id},
        "context": _merge_context(computed, context),
    }


def _alone(principal: Principal, case: CaseFacts) -> bool:
    """Whether `case` must be decided in a call of its own: its accepted provider has no
    entity (sector unknown), so its policies fail closed on that provider's sector, while
    among other cases they might find that provider's entity."""
    return (
        case.accepted_provider is not None
        and case.accepted_provider != principal.organisation
        and case.accepted_provider_sector is None
    )


def _merged_entities(
    principal: Principal, cases: list[CaseFacts], consents: list[ConsentFacts] | None = None
) -> tuple[list[dict[str, Any]], list[int], list[int]]:
    """The entities of several cases for one call, each uid once; the positions of the cases
    they hold, and of those left to be decided alone (one of their uids has other contents,
    as two cases of one id would).

    The policies look into no entity but the principal, its organisation, the request's own
    case, that case's framework, accepted provider and consent (ARCHITECTURE.md, policies/):
    each is the same in the merged set as in the case's own, so each decision is the one
    taken alone.
    """
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    held: list[int] = []
    alone: list[int] = []
    for position, case in enumerate(cases):
        consent = None if consents is None else consents[position]
        own = {
            (e["uid"]["type"], e["uid"]["id"]): e for e in _case_entities(principal, case, consent)
        }
        if _alone(principal, case) or any(
            uid in merged and merged[uid] != entity for uid, entity in own.items()
        ):
            alone.append(position)
            continue
        merged.update(own)
        held.append(position)
    return list(merged.values()), held, alone


def _case_entities(
    principal: Principal, case: CaseFacts, consent: ConsentFacts | None
) -> list[dict[str, Any]]:
    """The entities of one case, with its consent entity for a disclosure (`consent`)."""
    entities = _entities(principal, case)
    if consent is not None:
        entities.append(_consent_entity(case, consent))
    return entities


def _batched(
    principal: Principal,
    keys: list[Hashable],
    cases: list[CaseFacts],
    requests: list[list[dict[str, Any]]],
    *,
    disclosure: bool,
    consents: list[ConsentFacts] | None = None,
) -> list[tuple[Decision, ...]]:
    """The decisions of several cases (`requests[i]` on `cases[i]`, cached under `keys[i]`):
    those not in the cache in one Cedar call, each as it would be decided alone.
    `consents[i]`: the consent to `cases[i]`, for disclosure requests (an entity each)."""
    answers: list[tuple[Decision, ...] | None] = [_DECISIONS.lookup(key) for key in keys]
    missing = [i for i, answer in enumerate(answers) if answer is None]
    asked = None if consents is None else [consents[i] for i in missing]
    merged, held, alone = _merged_entities(principal, [cases[i] for i in missing], asked)
    calls = [([missing[p] for p in held], merged)] if held else []
    calls += [
        (
            [missing[p]],
            _case_entities(principal, cases[missing[p]], None if asked is None else asked[p]),
        )
        for p in alone
    ]
    extra = _CATEGORY_ENTITIES if disclosure else []
    for group, entities in calls:
        flat = [request for i in group for request in requests[i]]
        decided = _evaluate(flat, entities + extra, disclosure=disclosure)
        position = 0
        for i in group:
            answer = tuple(decided[position : position + len(requests[i])])
            position += len(requests[i])
            _DECISIONS.keep(keys[i], answer)
            answers[i] = answer
    return [answer for answer in answers if answer is not None]


def authorize_each(
    principal: Principal,
    action: Action,
    cases: Sequence[tuple[CaseFacts, ConsentFacts | None]],
) -> list[Decision]:
    """`authorize` of one case `action` on each of `cases` (a list's rows): the same
    decisions, taken in one Cedar call rather than one per row."""
    act = Action(action)
    if act not in CASE_ACTIONS:
        return [authorize(principal, act, case, consent) for case, consent in cases]
    decided = _batched(
        principal,
        [("authorize", act, principal, case, consent) for case, consent in cases],
        [case for case, _ in cases],
        [[_case_request(principal, act, case, consent)] for case, consent in cases],
        disclosure=False,
    )
    return [answer[0] for answer in decided]


def disclosable_categories_each(
    principal: Principal, cases: Sequence[tuple[CaseFacts, ConsentFacts | None]]
) -> list[dict[DataCategory, Decision]]:
    """`disclosable_categories` of each of `cases` (a list's rows), in one Cedar call."""
    categories = list(DataCategory)
    facts = [(case, consent or NO_CONSENT) for case, consent in cases]
    decided = _batched(
        principal,
        [("disclose", principal, case, consent) for case, consent in facts],
        [case for case, _ in facts],
        [_disclosure_requests(principal, case, consent, categories) for case, consent in facts],
        disclosure=True,
        consents=[consent for _, consent in facts],
    )
    return [dict(zip(categories, answer, strict=True)) for answer in decided]


def _disclosure_requests(
    principal: Principal,
    case: CaseFacts,
    consent: ConsentFacts,
    categories: Iterable[str],
) -> list[dict[str, Any]]:
    # One JSON text for the context all of them share: cedarpy passes a text through as it
    # is, where it would copy each request and encode its context dict again.
    context = json.dumps(
        {
            "case": _ref(_CASE, case.referral_id),
            "relation": relation_of(principal, case).value,
            "consent": _ref(_CONSENT, case.referral_id),
        }
    )
    principal_uid = {"type": _USER, "id": principal.subject}
    action_uid = {"type": _ACTION, "id": Action.DISCLOSE.value}
    return [
        {
            "principal": principal_uid,
            "action": action_uid,
            "resource": {"type": _CATEGORY, "id": category},
            "context": context,
        }
        for category in categories
    ]


def disclosable_categories(
    principal: Principal, case: CaseFacts, consent: ConsentFacts | None = None
) -> dict[DataCategory, Decision]:
    """Decide, in one Cedar call, which of the eight data categories may flow to `principal`."""
    categories = list(DataCategory)
    consent = consent or NO_CONSENT

    def evaluate() -> tuple[Decision, ...]:
        requests = _disclosure_requests(principal, case, consent, categories)
        entities = _disclosure_entity_set(principal, case, consent)
        return tuple(_evaluate(requests, entities, disclosure=True))

    decisions = _DECISIONS.get(("disclose", principal, case, consent), evaluate)
    return dict(zip(categories, decisions, strict=True))


def may_disclose(
    principal: Principal,
    category: DataCategory | str,
    case: CaseFacts | None,
    consent: ConsentFacts | None = None,
) -> Decision:
    """May data of one `category` of `case` flow to `principal` now?"""
    try:
        cat = DataCategory(category)
    except ValueError:
        return _deny(f"unknown data category {category!r}")
    if case is None:
        return _deny("a disclosure needs the facts of a case")
    requests = _disclosure_requests(principal, case, consent or NO_CONSENT, [cat])
    entities = _disclosure_entity_set(principal, case, consent or NO_CONSENT)
    return _evaluate(requests, entities, disclosure=True)[0]


# ----------------------------------------------------------------- explain ---

_CATEGORY_NAMES: Final = frozenset(category.value for category in DataCategory)
_EXPLAIN_FRAMEWORK = "explain-framework"
_EXPLAIN_REFERRER = "explain-prosecutors-office"
_EXPLAIN_PROVIDER = "explain-care-provider"
_EXPLAIN_MEMBER = "explain-framework-member"
_EXPLAIN_OUTSIDER = "explain-outsider"
# The user of an explained situation; the synthetic case has them assigned (need to know),
# so `explain` answers for a care worker on the case.
EXPLAIN_SUBJECT: Final = "explain-user"
_EXPLAIN_ORG: Final = {
    Relation.REFERRER: _EXPLAIN_REFERRER,
    Relation.OFFERED_PROVIDER: _EXPLAIN_PROVIDER,
    Relation.CARE_TEAM: _EXPLAIN_PROVIDER,
    Relation.FRAMEWORK_MEMBER: _EXPLAIN_MEMBER,
    Relation.OUTSIDER: _EXPLAIN_OUTSIDER,
}


def synthetic_case(relation: Relation) -> CaseFacts:
    """A case on which an organisation chosen by `explain_org(relation)` has `relation`."""
    accepted = _EXPLAIN_PROVIDER if relation is not Relation.OFFERED_PROVIDER else None
    return CaseFacts(
        referral_id="explain-referral",
        framework_id=_EXPLAIN_FRAMEWORK,
        framework_members=frozenset({_EXPLAIN_REFERRER, _EXPLAIN_PROVIDER, _EXPLAIN_MEMBER}),
        referring_office=_EXPLAIN_REFERRER,
        offered_provider=_EXPLAIN_PROVIDER,
        accepted_provider=accepted,
        accepted_provider_sector=Sector.HEALTH.value if accepted else None,
        assigned_workers=frozenset({EXPLAIN_SUBJECT}),
    )


def explain_org(relation: Relation) -> str:
    """The organisation code that has `relation` to `synthetic_case(relation)`."""
    return _EXPLAIN_ORG[relation]


def synthetic_consent(state: ConsentState | str) -> ConsentFacts:
    """A consent in `state` covering every purpose and category, to and from every sector."""
    status = ConsentState(state)
    if status in (ConsentState.NONE, ConsentState.REFUSED):
        return ConsentFacts(status=status)
    return ConsentFacts(
        status=status,
        purposes=frozenset(ConsentPurpose),
        categories=frozenset(DataCategory),
        recipients=SECTOR_NAMES,
        disclosers=SECTOR_NAMES,
    )


def explain(
    role: Role | str,
    sector: Sector | str,
    relation: Relation | str,
    category_or_action: str,
    consent_state: ConsentState | str = ConsentState.ACTIVE,
) -> Decision:
    """Decide a typical situation: one role and sector, one relation, a full consent in a state."""
    try:
        rel = Relation(relation)
        principal = Principal(
            subject=EXPLAIN_SUBJECT,
            organisation=explain_org(rel),
            sector=Sector(sector),
            roles=frozenset({Role(role)}),
        )
        consent = synthetic_consent(consent_state)
    except ValueError as exc:
        return _deny(str(exc))
    case = synthetic_case(rel)
    if category_or_action in _CATEGORY_NAMES:
        return may_disclose(principal, category_or_action, case, consent)
    return authorize(principal, category_or_action, case, consent)
