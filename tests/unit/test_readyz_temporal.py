"""`/readyz` reads the answer of Temporal's health check, not only that it came.

The server answers NOT_SERVING while it starts or stops: then it is not ready. A fake
client stands in for Temporal (what a real server says under rolling connections is
tested in tests/integration/test_readiness.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from api.main import create_app
from tests.factories import offline_settings


class _Service:
    def __init__(self, serving: bool) -> None:
        self.serving = serving
        self.calls: list[dict[str, Any]] = []

    async def check_health(self, **kwargs: Any) -> bool:
        self.calls.append(kwargs)
        return self.serving


class _Client:
    def __init__(self, serving: bool) -> None:
        self.service_client = _Service(serving)


@pytest.mark.parametrize(("serving", "said"), [(True, "ok"), (False, "unavailable")])
async def test_readyz_says_what_the_health_check_answered(
    tmp_path: Path, serving: bool, said: str
) -> None:
    client = _Client(serving)
    app = create_app(offline_settings(tmp_path), temporal=client)  # type: ignore[arg-type]
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as api:
            answer = await api.get("/readyz")
    finally:
        app.state.runtime.close()
    assert answer.json()["checks"]["temporal"] == said
    assert client.service_client.calls, "the check was not asked"
    # the identity provider of offline settings is unreachable: never ready here
    assert answer.status_code == 503
