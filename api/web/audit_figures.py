"""The auditor's figures (`/ui/audit/figures`): charts of the audit trail over time, each bar
a link to the entries behind it. The numbers come from the API functions (`api.auditor`), so
each page is a Cedar decision and is audited exactly as over the API."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query
from fastapi.responses import Response

from api import auditor
from api.web.charts import Series, bar_chart
from api.web.labels import N_
from api.web.pages import _attempt, _error, _outside_area
from api.web.session import Web, WebDep
from services.audit.figures import Bucket, Figure

router = APIRouter(prefix="/ui", include_in_schema=False)

TITLES = {
    Figure.ACCESSES: N_("Accesses per organisation"),
    Figure.DENIALS: N_("Denied accesses"),
    Figure.OUTSIDE_OFFICE_HOURS: N_("Accesses outside office hours"),
    Figure.NO_ACTIVE_ROLE: N_("Accesses by users with no active role in the case"),
}


def _day(text: str) -> date | None:
    return date.fromisoformat(text) if text else None


def _drill(figure: Figure, first: str, last: str, organisation: str | None = None) -> str:
    query = {"since": first, "until": last}
    if organisation is not None:
        query["organisation"] = organisation
    return f"/ui/audit/figures/{figure.value}?{urlencode(query)}"


def _charts(web: Web, found: dict[str, Any]) -> list[dict[str, Any]]:
    buckets: list[str] = found["buckets"]
    window = auditor.figure_window(
        date.fromisoformat(found["since"]),
        date.fromisoformat(found["until"]),
        Bucket(found["bucket"]),
    )

    def bounds(i: int) -> tuple[str, str]:
        bar = window.bucket_window(date.fromisoformat(buckets[i]))
        return bar.first.isoformat(), bar.last.isoformat()

    charts = []
    for figure in Figure:
        data = found["figures"][figure.value]
        if figure is Figure.ACCESSES:
            series = [Series(o["organisation"], o["counts"]) for o in data["by_organisation"]]
        else:
            series = [Series(figure.value, data["counts"])]
        title = web._(TITLES[figure])

        def link(i: int, layer: Series, figure: Figure = figure) -> str:
            first, last = bounds(i)
            organisation = layer.name if figure is Figure.ACCESSES else None
            return _drill(figure, first, last, organisation)

        def describe(i: int, layer: Series, count: int, figure: Figure = figure) -> str:
            who = f"{layer.name}: " if figure is Figure.ACCESSES else ""
            return f"{buckets[i]} {who}{count}"

        charts.append(
            {
                "figure": figure.value,
                "title": title,
                "total": data["total"],
                "counts": data["counts"],
                "series": series,
                "svg": bar_chart(
                    title=title, buckets=buckets, series=series, link=link, describe=describe
                ),
                "links": [_drill(figure, *bounds(i)) for i in range(len(buckets))],
            }
        )
    return charts


@router.get("/audit/figures")
async def audit_figures(
    web: WebDep,
    since: Annotated[str, Query(max_length=10)] = "",
    until: Annotated[str, Query(max_length=10)] = "",
    bucket: Bucket = Bucket.DAY,
) -> Response:
    """Accesses over time per organisation, denials, outside office hours, without a role."""
    if (refused := _outside_area(web, "audit")) is not None:
        return refused
    runtime = web.request.app.state.runtime
    try:
        first, last = _day(since), _day(until)
    except ValueError:
        return _error(web, 422, "check: since, until")
    found, error = await _attempt(
        web,
        lambda: auditor.figures(
            runtime, web.principal, web.ctx, since=first, until=last, bucket=bucket
        ),
    )
    if error is not None:
        return error
    return web.render("audit_figures.html", found=found, charts=_charts(web, found))


@router.get("/audit/figures/{figure}")
async def audit_figure_entries(
    web: WebDep,
    figure: Figure,
    since: Annotated[str, Query(max_length=10)] = "",
    until: Annotated[str, Query(max_length=10)] = "",
    organisation: Annotated[str, Query(max_length=255)] = "",
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> Response:
    """The entries behind one bar of a figure."""
    if (refused := _outside_area(web, "audit")) is not None:
        return refused
    runtime = web.request.app.state.runtime
    try:
        first, last = _day(since), _day(until)
    except ValueError:
        return _error(web, 422, "check: since, until")
    found, error = await _attempt(
        web,
        lambda: auditor.figure_entries(
            figure,
            runtime,
            web.principal,
            web.ctx,
            since=first,
            until=last,
            organisation=organisation or None,
            offset=offset,
            limit=50,
        ),
    )
    if error is not None:
        return error
    query = {"since": found["since"], "until": found["until"], "offset": offset + 50}
    if organisation:
        query["organisation"] = organisation
    return web.render(
        "audit_figure_entries.html",
        found=found,
        title=TITLES[figure],
        next_page=f"/ui/audit/figures/{figure.value}?{urlencode(query)}",
    )
