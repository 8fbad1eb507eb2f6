"""Every dependency of the API's routes is a coroutine.

FastAPI runs a plain `def` dependency in the thread pool: one hop per dependency per
request. Measured in process on the GET of one referral, the two plain dependencies it had
(the runtime, the request's context) cost about 1 ms of CPU a request, a quarter of
the whole read. The blocking work (the database, the JWKS fetch) is handed to the pool
explicitly, once per request; a dependency that only reads the request must not cost a hop.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from api.main import create_app
from tests.factories import offline_settings


def api_routes(routes: Iterable[Any]) -> Iterator[APIRoute]:
    for route in routes:
        included = getattr(route, "original_router", None)  # an included router
        if included is not None:
            yield from api_routes(included.routes)
        elif isinstance(route, APIRoute):
            yield route


def plain_dependencies(dependant: Dependant) -> Iterator[str]:
    for sub in dependant.dependencies:
        call = sub.call
        if call is not None and not (
            inspect.iscoroutinefunction(call)
            or inspect.iscoroutinefunction(type(call).__call__)  # e.g. HTTPBearer()
        ):
            yield getattr(call, "__qualname__", repr(call))
        yield from plain_dependencies(sub)


def test_no_route_depends_on_a_plain_function(tmp_path: Path) -> None:
    settings = offline_settings(tmp_path)
    app = create_app(settings)
    try:
        routes = list(api_routes(app.routes))
        plain = {
            (route.path, name) for route in routes for name in plain_dependencies(route.dependant)
        }
    finally:
        app.state.runtime.close()
    assert len(routes) > 40, "too few routes found: is the walk broken?"
    assert plain == set()
