"""Server-rendered SVG bar charts for the audit pages: no script, no inline style (the CSP
allows neither), colours from app.css classes, every bar a link to the entries behind it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

WIDTH = 720
HEIGHT = 220
LEFT = 44
BOTTOM = 28
TOP = 10
SERIES_CLASSES = 8


@dataclass(frozen=True)
class Series:
    """One stacked layer of the bars: its name (an organisation, or the figure) and counts."""

    name: str
    counts: Sequence[int]


def _nice_top(value: int) -> int:
    """The smallest 1, 2 or 5 times a power of ten that is at least `value` (and >= 1)."""
    scale = 1
    while True:
        for step in (1, 2, 5):
            if step * scale >= value:
                return step * scale
        scale *= 10


def bar_chart(
    *,
    title: str,
    buckets: Sequence[str],
    series: Sequence[Series],
    link: Callable[[int, Series], str],
    describe: Callable[[int, Series, int], str],
) -> Markup:
    """A stacked bar chart (one bar per bucket); `link` is each segment's drill-down."""
    totals = [sum(s.counts[i] for s in series) for i in range(len(buckets))]
    top = _nice_top(max(totals, default=0))
    plot_w, plot_h = WIDTH - LEFT - 8, HEIGHT - TOP - BOTTOM
    slot = plot_w / max(len(buckets), 1)
    bar_w = max(slot * 0.8, 1.0)
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
        f'<line class="axis" x1="{LEFT}" y1="{TOP + plot_h}" x2="{WIDTH - 8}" '
        f'y2="{TOP + plot_h}"/>',
    ]
    for tick in (0, top // 2, top):
        y = TOP + plot_h - plot_h * tick / top
        parts.append(
            f'<text class="tick" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{tick}</text>'
        )
    label_every = max(1, len(buckets) // 8)
    for i, bucket in enumerate(buckets):
        x = LEFT + slot * i + (slot - bar_w) / 2
        base: float = TOP + plot_h
        for position, layer in enumerate(series):
            count = layer.counts[i]
            if not count:
                continue
            height = plot_h * count / top
            base -= height
            css = f"bar s{position % SERIES_CLASSES}"
            parts.append(
                f'<a href="{escape(link(i, layer))}">'
                f'<rect class="{css}" x="{x:.1f}" y="{base:.1f}" width="{bar_w:.1f}" '
                f'height="{max(height, 0.5):.1f}" data-bucket="{escape(bucket)}" '
                f'data-series="{escape(layer.name)}" data-count="{count}">'
                f"<title>{escape(describe(i, layer, count))}</title></rect></a>"
            )
        if i % label_every == 0:
            parts.append(
                f'<text class="tick" x="{LEFT + slot * i + slot / 2:.1f}" '
                f'y="{HEIGHT - 10}" text-anchor="middle">{escape(bucket[5:])}</text>'
            )
    parts.append("</svg>")
    return Markup("".join(parts))
