"""Schemathesis against the OpenAPI document, with real tokens of every role.

Each operation of the API gets requests generated from its own schema: valid ones
(positive) and ones that break it (negative), each sent with the bearer token of one
role drawn at random (or none), and, where a path names a referral, sometimes the id of a
real referral so that the requests reach the policies, the database and Temporal rather
than stopping at 404. Every answer must be documented: no server error, a status the
operation lists, the content type it lists, a body that conforms, and a 4xx for data the
schema refuses. The requests go over ASGI to the app of the integration fixtures (real
Temporal dev server, database and worker), in the test's own event loop; Hypothesis runs
in a thread and hands each request to that loop.

Bounded so that it fits CI: at most `FUZZ_EXAMPLES` (25) examples per operation and mode,
within `FUZZ_SECONDS` (90) for all of them, shared equally; the examples are derandomised, so
CI repeats the same ones (raise both to search further). A failure lists every problem
found, with a curl line for each.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.core.failures import FailureGroup
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)
from temporalio.worker import Worker

from tests.integration.journey import AUDITOR, CGG, CGG_WORKER, OFFICE, Journey, consent_body
from tests.tokens import TokenMinter

pytestmark = [
    pytest.mark.integration,
    # schemathesis's generators draw from `random` (its own business, not the API's)
    pytest.mark.filterwarnings(
        "ignore:Do not use the `random` module:hypothesis.errors.HypothesisDeprecationWarning"
    ),
]

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))
SECONDS = float(os.environ.get("FUZZ_SECONDS", "90"))  # for all operations together

# Every role, each in an organisation where it exists; None sends no token.
CALLERS: list[tuple[str, str] | None] = [
    OFFICE,
    ("parket-antwerpen", "justice_assistant"),
    CGG,
    CGG_WORKER,
    ("caw-brussel", "intake_coordinator"),
    AUDITOR,
    ("parket-antwerpen", "admin"),
    None,
]
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]

# What counts as refusing invalid data: schemathesis's list, plus 413 (a body over the limit,
# e.g. too many codec payloads); a 5xx is never a refusal (not_a_server_error fails it).
REJECTIONS = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429"]
CONFIG = SchemathesisConfig.from_dict(
    {"checks": {"negative_data_rejection": {"expected-statuses": REJECTIONS}}}
)


def _request_kwargs(case: Any, headers: dict[str, str]) -> dict[str, Any]:
    """The case as keyword arguments of `httpx.AsyncClient.request`."""
    kwargs = case.as_transport_kwargs(base_url="http://testserver", headers=headers)
    data = kwargs.pop("data", None)
    if data is not None:
        if isinstance(data, dict):
            kwargs["data"] = data
        else:
            kwargs["content"] = data.encode() if isinstance(data, str) else data
    kwargs.pop("auth", None)
    cookies = kwargs.pop("cookies", None)
    if cookies:  # httpx deprecates per-request cookies: send them as the header
        kwargs["headers"]["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
    return {k: v for k, v in kwargs.items() if v is not None}


def _fuzz_operation(
    operation: Any,
    mode: GenerationMode,
    send: Callable[[dict[str, Any]], httpx.Response],
    minter: TokenMinter,
    referral_ids: list[str],
    failures: list[str],
    deadline: float,
) -> Counter[int]:
    """Run one operation in one mode until `deadline`; the statuses it answered."""
    statuses: Counter[int] = Counter()
    has_referral = any(p.name == "referral_id" for p in operation.path_parameters)

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(
        case=operation.as_strategy(generation_mode=mode),
        caller=st.sampled_from(CALLERS),
        real_referral=st.sampled_from([None, *referral_ids]),
    )
    def run(case: Any, caller: tuple[str, str] | None, real_referral: str | None) -> None:
        if time.monotonic() > deadline:
            return
        if has_referral and real_referral is not None and mode is GenerationMode.POSITIVE:
            case.path_parameters = {**case.path_parameters, "referral_id": real_referral}
        generated = {name.lower() for name in case.headers or {}}
        if mode is GenerationMode.NEGATIVE and "authorization" not in generated:
            caller = None  # the case drops the token on purpose: send none
        headers = minter.headers(*caller) if caller is not None else {}
        response = send(_request_kwargs(case, headers))
        statuses[response.status_code] += 1
        try:
            case.validate_response(response, checks=CHECKS, headers=headers)
        except FailureGroup as group:
            failures.append(f"[{mode.value}, caller {caller}] {group}")

    try:
        run()
    except Unsatisfiable:
        # nothing to negate: an operation without parameters or body has no negative cases
        assert mode is GenerationMode.NEGATIVE, operation.label
    return statuses


async def test_the_api_answers_every_generated_request_as_documented(
    app: FastAPI, api: httpx.AsyncClient, minter: TokenMinter, worker: Worker
) -> None:
    # Real referrals at several stages, so that steps on them meet policies and Temporal.
    referral_ids: list[str] = []
    journey = Journey(api, minter)
    await journey.create()
    referral_ids.append(str(journey.id))
    journey = Journey(api, minter)
    await journey.create()
    await journey.step(OFFICE, "consent", consent_body())
    referral_ids.append(str(journey.id))
    journey = Journey(api, minter)
    await journey.to_in_progress()
    referral_ids.append(str(journey.id))

    schema = schemathesis.openapi.from_dict(app.openapi(), config=CONFIG)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20, "too few operations in the OpenAPI document"
    loop = asyncio.get_running_loop()

    def send(kwargs: dict[str, Any]) -> httpx.Response:
        # Hypothesis runs in a worker thread; the app lives in this test's event loop.
        return asyncio.run_coroutine_threadsafe(api.request(**kwargs), loop).result(timeout=60)

    failures: list[str] = []
    answered: dict[str, Counter[int]] = {}
    runs = [(op, mode) for op in operations for mode in GenerationMode]
    end = time.monotonic() + SECONDS

    def fuzz_all() -> None:
        for number, (operation, mode) in enumerate(runs):
            # each run gets an equal share of the time that is left
            deadline = time.monotonic() + (end - time.monotonic()) / (len(runs) - number)
            answered[f"{operation.label} {mode.value}"] = _fuzz_operation(
                operation, mode, send, minter, referral_ids, failures, deadline
            )

    await asyncio.to_thread(fuzz_all)
    # The tokens worked: the fuzzing went past authentication into the API's work (a loose
    # bound, since a loaded machine sends fewer requests within the time).
    succeeded = {
        label
        for label, seen in answered.items()
        if "/api/" in label and any(200 <= status < 300 for status in seen)
    }
    assert len(succeeded) >= 3, answered
    assert not failures, f"{len(failures)} undocumented answers:\n\n" + "\n\n".join(failures)
