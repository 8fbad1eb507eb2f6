"""The OpenAPI document states every error answer, as the API gives it: problem+json.

The fuzzing (tests/integration/test_fuzz_openapi.py) checks the answers against the
document; this checks the document itself, without servers: each operation lists the
problems its shape allows (a token: 401, 403, 503; a path id: 404; parameters or a body:
422; a body: 400 and 413), the referral routes that reach the workflow list 409, and no
error is described with FastAPI's application/json validation model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from api.main import create_app
from tests.factories import offline_settings

PROBLEM = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}


@pytest.fixture(scope="module")
def openapi(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    directory: Path = tmp_path_factory.mktemp("openapi")
    settings = offline_settings(directory)
    app = create_app(settings)
    document: dict[str, Any] = app.openapi()
    app.state.runtime.close()
    return document


def operations(openapi: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, item in openapi["paths"].items()
        for method, operation in item.items()
    ]


def test_every_error_answer_is_documented_as_problem_json(openapi: dict[str, Any]) -> None:
    errors = 0
    for method, path, operation in operations(openapi):
        for status, response in operation["responses"].items():
            if status[0] in "45":
                errors += 1
                assert response["content"] == PROBLEM, (method, path, status)
    assert errors > 100, "too few error answers documented: is the walk broken?"
    assert "HTTPValidationError" not in json.dumps(openapi)


def test_each_operation_lists_the_problems_its_shape_allows(openapi: dict[str, Any]) -> None:
    for method, path, operation in operations(openapi):
        statuses = set(operation["responses"])
        parameters = operation.get("parameters", [])
        where = f"{method.upper()} {path}: {sorted(statuses)}"
        if operation.get("security"):
            assert {"401", "403", "503"} <= statuses, where
        if any(p["in"] == "path" for p in parameters):
            assert "404" in statuses, where
        if parameters or "requestBody" in operation:
            assert "422" in statuses, where
        if "requestBody" in operation:
            assert {"400", "413"} <= statuses, where
        if path.startswith("/api/v1/referrals") and not path.endswith("/access-report"):
            assert "409" in statuses, where  # the workflow refuses the step, or has ended


def test_readiness_documents_its_503(openapi: dict[str, Any]) -> None:
    assert "503" in openapi["paths"]["/readyz"]["get"]["responses"]


def test_a_temporal_call_that_timed_out_is_a_503_not_a_500() -> None:
    from temporalio.client import WorkflowUpdateRPCTimeoutOrCancelledError

    from api.errors import describe

    described = describe(WorkflowUpdateRPCTimeoutOrCancelledError())
    assert described is not None and described[0] == 503 and described[3] == "unavailable"
