"""`make bench`'s API harness at a tiny size, so that it cannot rot between benchmark runs.

It starts the same servers as the real run (Temporal dev server, the API and its worker,
the bare route and the bare workflow's worker), measures every kind of row once at the
smallest concurrency, and stops them all. No figure is checked against a time: only that
every row completed work on both sides without an error, and that nothing was left running.
"""

from __future__ import annotations

import pytest

from bench import api_bench

pytestmark = pytest.mark.integration


async def test_the_api_bench_measures_every_row_and_stops_what_it_started() -> None:
    sizes = api_bench.SIZES["tiny"]
    result = await api_bench.run(sizes)

    expected = (
        [f"creates/s, {c} concurrent" for c in sizes.creates]
        + [f"lifecycles/min, {c} concurrent" for c in sizes.lifecycles]
        + [f"GET one referral, {c} concurrent" for c in sizes.gets]
    )
    assert [row["what"] for row in result["rows"]] == expected
    for row in result["rows"]:
        for side in ("project", "bare"):
            assert row[side]["completed"] >= 1, row
            assert row[side]["errors"] == 0, row
        assert row["ratio"] > 0, row
        assert not row["api_restarted"], row
    # the baseline workflow runs as many activities as the referral's did
    activities = result["activities"]
    assert 1 <= activities["create"] < activities["lifecycle"], activities
    assert result["stopped"], "a process the bench started is still running"
