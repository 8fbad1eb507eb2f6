"""The GET rows of `make bench` measure both sides in alternating slices, merged into one
measure per side (`bench.api_bench.interleaved`)."""

from __future__ import annotations

from collections import Counter

from bench.api_bench import WrkMeasure, interleaved


def _slice(answered: int, p50: float, p99: float, **errors: int) -> WrkMeasure:
    return WrkMeasure(
        8,
        elapsed=2.0,
        answered=answered,
        errors=Counter(errors),
        quantiles={0.5: p50, 0.99: p99},
    )


async def test_the_sides_alternate_so_that_each_meets_the_early_and_the_late_machine() -> None:
    order: list[str] = []

    def side(name: str, answered: int) -> WrkMeasure:
        order.append(name)
        return _slice(answered, 0.01, 0.02)

    async def mine() -> WrkMeasure:
        return side("project", 100)

    async def theirs() -> WrkMeasure:
        return side("bare", 400)

    project, bare = await interleaved(mine, theirs, 4)
    assert order == ["project", "bare", "bare", "project"] * 2
    assert (project.answered, project.elapsed) == (400, 8.0)
    assert (bare.answered, bare.elapsed) == (1600, 8.0)
    assert project.rate / bare.rate == 0.25


def test_merged_slices_count_every_answer_and_error_and_keep_the_worst_p99() -> None:
    merged = WrkMeasure.merged(
        [
            _slice(300, 0.010, 0.030),
            _slice(100, 0.020, 0.090, read=1),
            _slice(0, 0.0, 0.0, **{"503": 2}),
        ]
    )
    assert merged.answered == 400 and merged.elapsed == 6.0
    assert merged.errors == Counter({"read": 1, "503": 2})
    # the median weighted by answers; the p99 never below any slice's
    assert abs((merged.percentile(0.5) or 0) - 0.0125) < 1e-9
    assert merged.percentile(0.99) == 0.090
