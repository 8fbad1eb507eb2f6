"""Cost of projecting one referral through the disclosure policies.

Compares, in one run, the median time of `disclosable_categories` (all eight data
categories of one referral, one batched Cedar call, entity building included; the
decision cache emptied before each call, so Cedar decides every time; the principal's
entity base, which a principal's first call builds, reused as by its later calls) with
one bare `cedarpy.is_authorized` call for one category on the same entities and the
same pre-parsed policy set and schema. Also shows what parsing the policy text on
every call would cost, and what a repeat on the same facts costs (answered by the
decision cache). Run: .venv/bin/python bench/policy_bench.py
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import cedarpy

from services import policy
from services.policy import (
    ENGINE,
    CaseFacts,
    ConsentFacts,
    ConsentPurpose,
    ConsentState,
    DataCategory,
    disclosable_categories,
)
from services.principal import Principal, Role, Sector

ROUNDS = 2000
WARMUP = 100


def _median_micros(call: Callable[[], object], rounds: int = ROUNDS) -> float:
    for _ in range(WARMUP):
        call()
    samples = []
    for _ in range(rounds):
        start = time.perf_counter_ns()
        call()
        samples.append(time.perf_counter_ns() - start)
    return statistics.median(samples) / 1000


def main(*, quiet: bool = False) -> dict[str, Any]:
    """Measure and print (unless `quiet`) the medians (microseconds) and their ratio."""
    principal = Principal(
        subject="care-worker-1",
        organisation="cad-limburg",
        sector=Sector.HEALTH,
        roles=frozenset({Role.CARE_WORKER}),
    )
    # A framework of a realistic size: a dozen participating organisations.
    members = frozenset({"pk-hasselt", "cad-limburg"} | {f"provider-{i}" for i in range(10)})
    case = CaseFacts(
        referral_id="r-0001",
        framework_id="limburg-2026",
        framework_members=members,
        referring_office="pk-hasselt",
        offered_provider="cad-limburg",
        accepted_provider="cad-limburg",
        accepted_provider_sector="health",
        assigned_workers=frozenset({"care-worker-1", "care-worker-2"}),
    )
    consent = ConsentFacts(
        status=ConsentState.ACTIVE,
        purposes=frozenset(ConsentPurpose),
        categories=frozenset(DataCategory),
        recipients=frozenset({"health", "welfare", "pk-hasselt"}),
        disclosers=frozenset({"pk-hasselt", "health", "welfare"}),
    )
    entities = policy._disclosure_entities(principal, case, consent)
    request = policy._disclosure_requests(principal, case, consent, [DataCategory.CLINICAL])[0]
    assert disclosable_categories(principal, case, consent)[DataCategory.CLINICAL].allowed
    assert cedarpy.is_authorized(request, ENGINE.policy_set, entities, schema=ENGINE.schema).allowed

    def cold() -> object:
        policy.clear_decision_cache()
        return disclosable_categories(principal, case, consent)

    projection = _median_micros(cold)

    def first_of_principal() -> object:
        ENGINE.entity_bases.clear()
        return cold()

    first = _median_micros(first_of_principal)
    repeat = _median_micros(lambda: disclosable_categories(principal, case, consent))
    bare = _median_micros(
        lambda: cedarpy.is_authorized(request, ENGINE.policy_set, entities, schema=ENGINE.schema)
    )
    bare_text = _median_micros(
        lambda: cedarpy.is_authorized(request, ENGINE.policy_text, entities, schema=ENGINE.schema),
        rounds=ROUNDS // 4,
    )
    bare_no_schema = _median_micros(
        lambda: cedarpy.is_authorized(request, ENGINE.policy_set, entities)
    )
    result = {
        "disclosable_categories_us": round(projection, 1),
        "disclosable_categories_repeat_us": round(repeat, 1),
        "disclosable_categories_first_of_principal_us": round(first, 1),
        "bare_is_authorized_us": round(bare, 1),
        "ratio": round(projection / bare, 2),
        "bare_is_authorized_policy_text_us": round(bare_text, 1),
        "bare_is_authorized_no_schema_us": round(bare_no_schema, 1),
        "categories": len(DataCategory),
        "rounds": ROUNDS,
    }
    if quiet:
        return result
    print(f"disclosable_categories (8 categories, 1 batch): {projection:9.1f} us median")
    print(f"bare cedarpy.is_authorized (1 category)       : {bare:9.1f} us median")
    print(f"ratio                                         : {projection / bare:9.2f}")
    print(f"  a principal's first call (its entity base)  : {first:9.1f} us median")
    print(f"  the same facts again (decision cache)       : {repeat:9.1f} us median")
    print(f"  bare, policy text parsed per call           : {bare_text:9.1f} us median")
    print(f"  bare, without schema validation             : {bare_no_schema:9.1f} us median")
    return result


if __name__ == "__main__":
    main()
