"""What the auditor looks at: the audit trail counted over time, and the entries behind a count.

Four figures over a window of days or weeks (in the office time zone):
- `accesses`: every entry, per organisation of the user;
- `denials`: entries whose authorisation decision was deny;
- `outside_office_hours`: entries recorded outside office hours (before OFFICE_START, from
  OFFICE_END, or on a Saturday or Sunday, local time);
- `no_active_role`: accesses to a referral by a user with no active role in that case at that
  moment. A user has an active role when (a) a care-team assignment of theirs on the case was
  in force, or (b) they are a prosecutor or justice assistant of the referring office, or (c)
  they are an intake coordinator of a provider the case was offered to. Anyone else (another
  office, a care worker not on the team, an administrator) is counted, as is an access to a
  case the audit pseudonym no longer resolves to (purged).

The entries of the window are streamed (O(buckets x organisations) memory); the cases are
read once per request. Entries carry no case content, so neither do the figures.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, select

from services.audit.models import AUDIT_ENTRY_TABLE
from services.models import CareTeamAssignment, Referral

OFFICE_TIMEZONE = ZoneInfo("Europe/Brussels")
OFFICE_START = time(8, 0)
OFFICE_END = time(18, 0)
MAX_BUCKETS = 400
# Days a window may span: the log is younger, and the edges of `date` overflow in UTC.
FIRST_DAY = date(2000, 1, 1)
LAST_DAY = date(2199, 12, 31)
STREAM_ROWS = 2000
JUSTICE_ROLES = frozenset({"prosecutor", "justice_assistant"})
INTAKE_ROLE = "intake_coordinator"
ENTRY = AUDIT_ENTRY_TABLE


class Figure(StrEnum):
    """The charts of the audit pages."""

    ACCESSES = "accesses"
    DENIALS = "denials"
    OUTSIDE_OFFICE_HOURS = "outside_office_hours"
    NO_ACTIVE_ROLE = "no_active_role"


class Bucket(StrEnum):
    """The width of one bar."""

    DAY = "day"
    WEEK = "week"


@dataclass(frozen=True)
class Window:
    """Local days [first, last] cut into buckets of a day or a week (weeks start on Monday)."""

    first: date
    last: date
    bucket: Bucket = Bucket.DAY

    def __post_init__(self) -> None:
        if self.last < self.first:
            raise ValueError("the window ends before it starts")
        if self.first < FIRST_DAY or self.last > LAST_DAY:
            raise ValueError(f"the window must lie within {FIRST_DAY} and {LAST_DAY}")
        if len(self.starts()) > MAX_BUCKETS:
            raise ValueError(f"at most {MAX_BUCKETS} bars: choose weeks or a shorter window")

    def _start_of(self, day: date) -> date:
        return day - timedelta(days=day.weekday()) if self.bucket is Bucket.WEEK else day

    def starts(self) -> list[date]:
        """The first local day of every bucket."""
        step = timedelta(days=7 if self.bucket is Bucket.WEEK else 1)
        day, out = self._start_of(self.first), []
        while day <= self.last:
            out.append(day)
            day += step
            if len(out) > MAX_BUCKETS:
                break
        return out

    def since(self) -> datetime:
        """The first instant of the window (UTC)."""
        return _local_midnight(self.first)

    def until(self) -> datetime:
        """The instant after the window (UTC, exclusive)."""
        return _local_midnight(self.last + timedelta(days=1))

    def bucket_of(self, moment: datetime) -> date:
        """The bucket (its first day) an instant falls in."""
        return self._start_of(moment.astimezone(OFFICE_TIMEZONE).date())

    def bucket_window(self, start: date) -> Window:
        """The window of one bar (drill-down), clipped to this window."""
        end = start + timedelta(days=6 if self.bucket is Bucket.WEEK else 0)
        return Window(max(start, self.first), min(end, self.last), Bucket.DAY)


def _local_midnight(day: date) -> datetime:
    return datetime.combine(day, time(0, 0), tzinfo=OFFICE_TIMEZONE).astimezone(UTC)


def outside_office_hours(moment: datetime) -> bool:
    """Whether an instant lies outside office hours (local time, Monday to Friday)."""
    local = moment.astimezone(OFFICE_TIMEZONE)
    return local.weekday() >= 5 or not OFFICE_START <= local.time() < OFFICE_END


@dataclass
class _Case:
    referral_id: UUID
    referring_office: str
    providers: frozenset[str]
    # subject -> [(assigned_at, released_at)]
    team: dict[str, list[tuple[datetime, datetime | None]]] = field(default_factory=dict)


class Cases:
    """The parties of every case, by audit pseudonym (read once per request)."""

    def __init__(self, conn: Connection, pseudonym: Callable[[UUID], str | None]) -> None:
        self._by_pseudonym: dict[str, _Case] = {}
        by_id: dict[UUID, _Case] = {}
        referrals = conn.execute(
            select(
                Referral.id,  # type: ignore[call-overload]
                Referral.referring_office,
                Referral.offered_provider,
                Referral.accepted_provider,
                Referral.providers_tried,
            )
        )
        for referral_id, office, offered, accepted, tried in referrals:
            key = pseudonym(referral_id)
            if key is None:
                continue
            providers = {p for p in (offered, accepted, *(tried or ())) if p}
            case = _Case(referral_id, office, frozenset(providers))
            self._by_pseudonym[key] = by_id[referral_id] = case
        assignments = conn.execute(
            select(
                CareTeamAssignment.referral_id,  # type: ignore[call-overload]
                CareTeamAssignment.subject,
                CareTeamAssignment.assigned_at,
                CareTeamAssignment.released_at,
            )
        )
        for referral_id, subject, assigned_at, released_at in assignments:
            found = by_id.get(referral_id)
            if found is not None:
                found.team.setdefault(subject, []).append((assigned_at, released_at))

    def active_role(self, row: Any) -> bool:
        """Whether the user of an entry on a referral had an active role in that case then."""
        case = self._by_pseudonym.get(row.referral_pseudonym)
        if case is None:
            return False
        if row.actor_role in JUSTICE_ROLES and row.actor_organisation == case.referring_office:
            return True
        if row.actor_role == INTAKE_ROLE and row.actor_organisation in case.providers:
            return True
        moment = row.recorded_at
        return any(
            start <= moment and (end is None or moment < end)
            for start, end in case.team.get(row.actor_subject, ())
        )


@contextmanager
def _rows(
    conn: Connection, window: Window, organisation: str | None = None
) -> Iterator[Iterator[Any]]:
    """The window's entries, streamed (on PostgreSQL through a server-side cursor), closed
    when the caller is done: a drill-down stops at its page, and a cursor left open was
    closed later by the garbage collector, on a connection back in the pool."""
    statement = (
        select(ENTRY)
        .where(ENTRY.c.recorded_at >= window.since(), ENTRY.c.recorded_at < window.until())
        .order_by(ENTRY.c.index)
    )
    if organisation is not None:
        statement = statement.where(ENTRY.c.actor_organisation == organisation)
    # the option on this statement: Connection.execution_options would set it on the
    # caller's connection for every later query
    result = conn.execute(statement, execution_options={"yield_per": STREAM_ROWS})
    try:
        yield iter(result)
    finally:
        result.close()


def _matches(figure: Figure, row: Any, cases: Cases | None) -> bool:
    if figure is Figure.ACCESSES:
        return True
    if figure is Figure.DENIALS:
        return bool(row.decision == "deny")
    if figure is Figure.OUTSIDE_OFFICE_HOURS:
        return outside_office_hours(row.recorded_at)
    assert cases is not None
    return row.referral_pseudonym is not None and not cases.active_role(row)


def figures(conn: Connection, window: Window, cases: Cases) -> dict[str, Any]:
    """Every figure over `window`: per bucket, and accesses also per organisation."""
    starts = window.starts()
    position = {start: i for i, start in enumerate(starts)}
    per_org: dict[str, list[int]] = defaultdict(lambda: [0] * len(starts))
    counts = {figure: [0] * len(starts) for figure in Figure if figure is not Figure.ACCESSES}
    with _rows(conn, window) as rows:
        for row in rows:
            i = position[window.bucket_of(row.recorded_at)]
            per_org[row.actor_organisation][i] += 1
            for figure, series in counts.items():
                if _matches(figure, row, cases):
                    series[i] += 1
    organisations = sorted(per_org)
    accesses = [sum(per_org[o][i] for o in organisations) for i in range(len(starts))]
    return {
        "since": window.first.isoformat(),
        "until": window.last.isoformat(),
        "bucket": window.bucket.value,
        "time_zone": str(OFFICE_TIMEZONE),
        "office_hours": {
            "days": "monday-friday",
            "start": OFFICE_START.strftime("%H:%M"),
            "end": OFFICE_END.strftime("%H:%M"),
        },
        "buckets": [start.isoformat() for start in starts],
        "figures": {
            Figure.ACCESSES.value: {
                "counts": accesses,
                "total": sum(accesses),
                "by_organisation": [
                    {"organisation": o, "counts": per_org[o], "total": sum(per_org[o])}
                    for o in organisations
                ],
            },
            **{
                figure.value: {"counts": series, "total": sum(series)}
                for figure, series in counts.items()
            },
        },
    }


def entries(
    conn: Connection,
    figure: Figure,
    window: Window,
    cases: Cases | None,
    *,
    organisation: str | None = None,
    offset: int = 0,
    limit: int = 50,
) -> Sequence[Any]:
    """The entries behind one figure over `window` (a bar: one bucket), in log order."""
    found: list[Any] = []
    skipped = 0
    with _rows(conn, window, organisation) as rows:
        for row in rows:
            if not _matches(figure, row, cases):
                continue
            if skipped < offset:
                skipped += 1
                continue
            found.append(row)
            if len(found) == limit:
                break
    return found
