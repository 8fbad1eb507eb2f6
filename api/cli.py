"""The `referral` command line: the local stack, the worker, the API, the demo, and tools."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlsplit

import httpx
import typer
import uvicorn

from services.policy_cli import app as policy_app
from services.settings import Settings, get_settings
from services.supervisor import (
    Component,
    RestartPolicy,
    Supervisor,
    arm_stop_deadline,
    file_liveness,
    http_liveness,
    tcp_liveness,
)

if TYPE_CHECKING:
    from services.runtime import Runtime

KEYCLOAK_SCRIPTS = Path(__file__).resolve().parent.parent / "deploy" / "keycloak"
REALM_EXPORT = KEYCLOAK_SCRIPTS / "realm" / "referral-realm.json"
# The origin the realm export registers for the web login (redirect URIs, web origins).
REALM_EXPORT_ORIGIN = "http://127.0.0.1:8000"

logger = logging.getLogger("referral.cli")

app = typer.Typer(
    no_args_is_help=True, help="Referral engine: diversion to care before prosecution."
)
app.add_typer(policy_app, name="policy")
keys_app = typer.Typer(no_args_is_help=True, help="Key ring: rotation and rewrapping.")
app.add_typer(keys_app, name="keys")
audit_app = typer.Typer(no_args_is_help=True, help="The tamper-evident audit log.")
app.add_typer(audit_app, name="audit")


def _prepare_database() -> None:
    from services.db import make_engine, migrate, session_scope
    from services.demo import load_demo

    settings = get_settings()
    migrate(settings.database_url)
    engine = make_engine(settings.database_url)
    with session_scope(engine) as session:
        load_demo(session=session)
    engine.dispose()


@app.command()
def migrate() -> None:
    """Bring the database to the newest schema and load the demo organisations."""
    _prepare_database()
    print("database migrated; demo organisations and framework loaded")


@app.command()
def worker() -> None:
    """Run the Temporal worker (until interrupted)."""
    asyncio.run(_run_worker())


async def _run_worker() -> None:
    from temporalio.service import RPCError

    from services import telemetry
    from services.runtime import Runtime, settle_heap
    from workflows.client import connect, ensure_retention
    from workflows.reconciler import reconcile_until
    from workflows.worker import build_worker

    settings = get_settings()
    telemetry.configure(settings)
    runtime = Runtime.build(settings)
    telemetry.instrument_engines(settings, runtime.engine)
    client = await connect(
        address=settings.temporal_address,
        namespace=settings.temporal_namespace,
        keyring=runtime.keyring,
        referral_keys=runtime.payload_keys,
    )
    retention = timedelta(days=settings.temporal_retention_days)
    try:
        await ensure_retention(
            client=client, namespace=settings.temporal_namespace, retention=retention
        )
    except RPCError as exc:
        # e.g. a production namespace the worker may not change: its operators set it
        print(f"could not set the namespace retention to {retention}: {exc.status.name}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_stop_signal() -> None:
        # the graceful shutdown waits for running activities: bound it
        stop.set()
        arm_stop_deadline(settings.worker_shutdown_grace_seconds)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_stop_signal)
    heartbeat = worker_heartbeat_path(settings)
    with ThreadPoolExecutor(max_workers=16) as executor:
        async with build_worker(
            client=client,
            task_queue=settings.temporal_task_queue,
            engine=runtime.engine,
            shredder=runtime.vault,
            executor=executor,
            gatekeeper=runtime.gatekeeper,
            payload_keys=runtime.payload_keys,
        ):
            settled = settle_heap()
            print(
                f"worker running on task queue {settings.temporal_task_queue}"
                f" ({settled} start-up objects settled)",
                flush=True,
            )
            reconciler = asyncio.create_task(
                reconcile_until(stop, client=client, engine=runtime.engine, settings=settings)
            )
            next_tree_head = time.monotonic() + settings.audit_sth_every_seconds
            while not stop.is_set():
                # the dev stack's liveness check of the worker: its event loop still turns
                # (a worker run without a data directory simply has no heartbeat)
                with contextlib.suppress(OSError):
                    heartbeat.touch()
                try:
                    await asyncio.wait_for(stop.wait(), timeout=WORKER_HEARTBEAT_SECONDS)
                except TimeoutError:
                    pass
                # tree heads are also signed in quiet periods, not only when entries arrive
                if time.monotonic() >= next_tree_head and not stop.is_set():
                    try:
                        await asyncio.to_thread(runtime.audit.maybe_sign_tree_head)
                    except Exception as exc:  # noqa: BLE001 - database away: the next round signs
                        logger.warning(
                            "signing the audit tree head failed (%s); retrying", type(exc).__name__
                        )
                    next_tree_head = time.monotonic() + settings.audit_sth_every_seconds
            await reconciler


WORKER_HEARTBEAT_SECONDS = 5.0


def worker_heartbeat_path(settings: Settings) -> Path:
    """The file the worker touches every WORKER_HEARTBEAT_SECONDS while its loop turns."""
    return settings.data_dir / "worker.heartbeat"


class BoundedServer(uvicorn.Server):
    """uvicorn whose stop on SIGTERM or SIGINT ends in bounded time.

    `timeout_graceful_shutdown` cancels the requests still open after the grace; if the
    shutdown itself still hangs (a request thread stuck in a call that never returns), the
    process exits `hard_stop_seconds` after the signal regardless.
    """

    def __init__(
        self, config: uvicorn.Config, *, hard_stop_seconds: float, settle_heap: bool = False
    ) -> None:
        super().__init__(config)
        self._hard_stop_seconds = hard_stop_seconds
        self._deadline_armed = False
        self._settle_heap = settle_heap
        self.settled_objects = 0

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self._settle_heap and not self.should_exit:
            from services.runtime import settle_heap

            # the app, its runtime and the lifespan's connections are built by now
            self.settled_objects = settle_heap()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if not self._deadline_armed:
            self._deadline_armed = True
            arm_stop_deadline(self._hard_stop_seconds)
        super().handle_exit(sig, frame)


@app.command()
def api() -> None:
    """Run the API server (uvicorn) on the configured host and port."""
    api_server(get_settings(), settle_heap=True).run()


def api_server(
    settings: Settings,
    app: Any = "api.main:create_app",
    *,
    factory: bool = True,
    settle_heap: bool = False,
) -> BoundedServer:
    """The API's uvicorn server: on SIGTERM it cancels what is still open after
    `api_shutdown_grace_seconds` and is gone 5 seconds later at the latest. `settle_heap`:
    once started, the start-up objects leave the garbage collector's scans
    (`services.runtime.settle_heap`; for a server that has the process to itself)."""
    grace = settings.api_shutdown_grace_seconds
    config = uvicorn.Config(
        app,
        factory=factory,
        host=settings.api_host,
        port=settings.api_port,
        log_level="warning",
        timeout_graceful_shutdown=grace,
        server_header=False,  # no product banner; SecurityHeaders adds the rest
    )
    return BoundedServer(config, hard_stop_seconds=grace + 5, settle_heap=settle_heap)


def _wait_port(host: str, port: int, timeout: float, proc: subprocess.Popen[bytes] | None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is None or proc.poll() is not None:
            code = None if proc is None else proc.returncode
            raise RuntimeError(f"a component exited with {code}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"nothing listens on {host}:{port} after {timeout:.0f}s")


def dev_stack_components(settings: Settings, logs: Path) -> list[Component]:
    """The Temporal dev server, the worker and the API, each with its liveness check."""
    from workflows.binaries import temporal_binary

    host, port = settings.temporal_address.rsplit(":", 1)
    referral = str(Path(sys.executable).parent / "referral")
    temporal = [
        temporal_binary("temporal"),
        "server",
        "start-dev",
        "--db-filename",
        str(settings.data_dir / "temporal.db"),
        "--ip",
        host,
        "--port",
        port,
        "--ui-ip",
        host,
        "--ui-port",
        str(settings.temporal_ui_port),
        "--ui-codec-endpoint",
        f"{settings.api_base_url}/codec",
        "--log-level",
        "warn",
    ]
    healthz = f"http://{settings.api_host}:{settings.api_port}/healthz"
    return [
        Component(
            "temporal",
            temporal,
            liveness=tcp_liveness(host, int(port)),
            log_path=logs / "temporal.log",
        ),
        Component(
            "worker",
            [referral, "worker"],
            liveness=file_liveness(
                worker_heartbeat_path(settings), max_age=6 * WORKER_HEARTBEAT_SECONDS
            ),
            log_path=logs / "worker.log",
        ),
        Component(
            "api",
            [referral, "api"],
            liveness=http_liveness(healthz, timeout=settings.liveness_timeout_seconds + 2),
            log_path=logs / "api.log",
        ),
    ]


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        # a port a stopped process left in TIME_WAIT is free; one something listens on is not
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def busy_ports(settings: Settings, environ: dict[str, str] | None = None) -> list[str]:
    """What to do about each port `make run` needs that something else already holds: the
    port, what needs it, and the setting that moves it."""
    env = os.environ if environ is None else environ
    temporal_host, temporal_port = settings.temporal_address.rsplit(":", 1)
    api_example = settings.api_port + 10
    keycloak_example = settings.keycloak_port + 10
    management = int(
        env.get("REFERRAL_KEYCLOAK_MANAGEMENT_PORT", str(settings.keycloak_port + 1000))
    )
    needed = [
        (
            settings.api_host,
            settings.api_port,
            "the API and the web UI",
            f"REFERRAL_API_PORT={api_example} REFERRAL_API_BASE_URL=http://127.0.0.1:{api_example}",
        ),
        (
            "127.0.0.1",
            settings.keycloak_port,
            "Keycloak (the login)",
            f"REFERRAL_KEYCLOAK_PORT={keycloak_example} "
            f"REFERRAL_JWKS_URL=http://127.0.0.1:{keycloak_example}/realms/referral/protocol/"
            "openid-connect/certs "
            f"REFERRAL_JWT_ISSUER=http://127.0.0.1:{keycloak_example}/realms/referral "
            f"REFERRAL_KEYCLOAK_TOKEN_URL=http://127.0.0.1:{keycloak_example}/realms/referral/"
            "protocol/openid-connect/token",
        ),
        (
            "127.0.0.1",
            management,
            "Keycloak's health checks",
            f"REFERRAL_KEYCLOAK_MANAGEMENT_PORT={management + 10}",
        ),
        (
            temporal_host,
            int(temporal_port),
            "the Temporal dev server",
            f"REFERRAL_TEMPORAL_ADDRESS={temporal_host}:{int(temporal_port) + 10}",
        ),
        (
            temporal_host,
            settings.temporal_ui_port,
            "the Temporal UI",
            f"REFERRAL_TEMPORAL_UI_PORT={settings.temporal_ui_port + 10} "
            f"REFERRAL_TEMPORAL_UI_ORIGIN=http://{temporal_host}:{settings.temporal_ui_port + 10}",
        ),
    ]
    return [
        f"port {port} on {host} is already in use; {what} needs it. Stop what holds it, or "
        f"move {what} with {setting.split('=', 1)[0]}, e.g.:\n    {setting} make run"
        for host, port, what, setting in needed
        if _port_in_use(host, port)
    ]


def dev_realm(api_base_url: str) -> str:
    """The development realm export with the web login's redirect URIs, web origins and
    logout redirects on the origin of `api_base_url` (the export registers port 8000)."""
    parts = urlsplit(api_base_url)
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.query
        or parts.fragment
        or any(c in parts.netloc for c in '"\\/ @')
    ):
        raise ValueError(
            "REFERRAL_API_BASE_URL must be an http(s) URL such as http://127.0.0.1:8000"
        )
    origin = f"{parts.scheme}://{parts.netloc}"
    text = REALM_EXPORT.read_text(encoding="utf-8")
    if REALM_EXPORT_ORIGIN not in text:
        raise RuntimeError(f"the realm export no longer registers {REALM_EXPORT_ORIGIN}")
    realm = json.loads(text.replace(REALM_EXPORT_ORIGIN, origin))
    return json.dumps(realm, indent=2, ensure_ascii=False) + "\n"


def keycloak_environment(settings: Settings) -> dict[str, str]:
    """The environment of deploy/keycloak/start.sh for `make run`: its port, and the realm
    to import, written for this API's base URL (so the web login works on any port)."""
    realm_dir = (settings.data_dir / "keycloak-realm").resolve()
    realm_dir.mkdir(parents=True, exist_ok=True)
    (realm_dir / REALM_EXPORT.name).write_text(dev_realm(settings.api_base_url), encoding="utf-8")
    return {
        **os.environ,
        "REFERRAL_KEYCLOAK_PORT": str(settings.keycloak_port),
        "REFERRAL_KEYCLOAK_REALM_DIR": str(realm_dir),
    }


@app.command("dev-stack")
def dev_stack() -> None:
    """Run everything locally (Keycloak, Temporal dev server, worker, API) until interrupted.

    A crashed or unresponsive Temporal server, worker or API is restarted on its own (with
    back-off, at most 5 times in 5 minutes); Ctrl-C or SIGTERM stops everything, each
    process within its grace period (then SIGKILL).
    """
    from services.runtime import load_keyring

    settings = get_settings()
    busy = busy_ports(settings)
    if busy:
        for message in busy:
            print(message, file=sys.stderr)
        raise typer.Exit(1)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    _prepare_database()
    load_keyring(settings)
    host, port = settings.temporal_address.rsplit(":", 1)
    logs = settings.data_dir / "logs"
    logs.mkdir(exist_ok=True)
    supervisor = Supervisor(
        dev_stack_components(settings, logs),
        policy=RestartPolicy(),
        # beyond the API's and the worker's own bounded stop
        stop_grace=max(settings.api_shutdown_grace_seconds, settings.worker_shutdown_grace_seconds)
        + 10,
        report=lambda line: print(line, file=sys.stderr, flush=True),
    )

    # Ctrl-C, and a plain `kill`, stop everything this command started: during the start
    # as an interrupt, while supervising by setting `stopping` (never mid-restart).
    stopping = threading.Event()
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    keycloak_dir = (settings.data_dir / "keycloak").resolve()
    keycloak_env = keycloak_environment(settings)

    def stop_all() -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        supervisor.stop()
        subprocess.run(
            ["bash", str(KEYCLOAK_SCRIPTS / "stop.sh"), str(keycloak_dir)],
            env=keycloak_env,
            capture_output=True,
            check=False,
        )

    try:
        print("starting Keycloak (development realm; the first start takes a minute)", flush=True)
        started = subprocess.run(
            ["bash", str(KEYCLOAK_SCRIPTS / "start.sh"), str(keycloak_dir)],
            env=keycloak_env,
            stdout=subprocess.PIPE,
            text=True,
            check=False,
        )
        if started.returncode != 0:
            print(
                "Keycloak did not start (the reason is above; it needs Java 17+, see README)",
                file=sys.stderr,
            )
            raise typer.Exit(1)
        _wait_port(host, int(port), 60, supervisor.start("temporal"))
        supervisor.start("worker")
        _wait_port(settings.api_host, settings.api_port, 60, supervisor.start("api"))
        print(
            "\nReferral engine is running (development settings, demo data):\n"
            f"  API          {settings.api_base_url}/docs\n"
            f"  Temporal UI  http://{host}:{settings.temporal_ui_port}\n"
            f"  Keycloak     http://127.0.0.1:{settings.keycloak_port} (password: demo)\n"
            f"  logs         {logs}/\n\n"
            "Try next, in another shell from this checkout:\n"
            "  .venv/bin/referral demo\n\n"
            "A component that crashes or stops answering is restarted on its own.\n"
            "Press Ctrl-C to stop everything.",
            flush=True,
        )
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stopping.set())
        supervisor.run(stopping)
        print("\nstopping...", flush=True)
    except KeyboardInterrupt:
        print("\nstopping...", flush=True)
    finally:
        stop_all()


# ---- demo ----------------------------------------------------------------------------

# The development realm's demo users (deploy/keycloak/realm), one per party in the demo.
DEMO_USERS = {
    "parket-antwerpen": "demo-prosecutor-antwerpen",
    "cgg-antwerpen": "demo-intake-coordinator-cgg-antwerpen",
    "free-clinic-antwerpen": "demo-intake-coordinator-free-clinic-antwerpen",
    "caw-brussel": "demo-intake-coordinator-caw-brussel",
}
DEMO_PASSWORD = "demo"  # development realm only; refused with production settings
_token_cache: dict[str, tuple[float, str]] = {}


def _login(username: str, password: str) -> str:
    settings = get_settings()
    if not settings.demo_users_enabled:
        raise typer.BadParameter("demo users are disabled by these settings")
    cached = _token_cache.get(username)
    if cached and cached[0] > time.monotonic():
        return cached[1]
    resp = httpx.post(
        settings.keycloak_token_url,
        data={
            "grant_type": "password",
            "client_id": settings.keycloak_cli_client,
            "username": username,
            "password": password,
        },
        timeout=30,
    )
    if resp.status_code != 200:
        print(f"login of {username} refused ({resp.status_code})", file=sys.stderr)
        raise typer.Exit(1)
    body = resp.json()
    _token_cache[username] = (time.monotonic() + int(body["expires_in"]) - 30, body["access_token"])
    return str(body["access_token"])


def _demo_token(organisation: str) -> str:
    return _login(DEMO_USERS[organisation], DEMO_PASSWORD)


@app.command()
def login(
    user: Annotated[str, typer.Option(help="A demo user of the development realm")] = (
        "demo-prosecutor-antwerpen"
    ),
    password: Annotated[str, typer.Option(help="Its password")] = DEMO_PASSWORD,
) -> None:
    """Print an access token from Keycloak for a (demo) user, e.g. for curl."""
    print(_login(user, password))


@app.command()
def demo(
    subject_name: Annotated[
        str, typer.Option(help="Name of the (invented) demo person")
    ] = "Demo Person",
    national_number: Annotated[
        str, typer.Option(help="National number of the demo person (invented)")
    ] = "85.07.30-033.28",
    base_url: Annotated[str | None, typer.Option(help="API base URL")] = None,
) -> None:
    """Walk one referral through the whole lifecycle over HTTP, against the running stack."""
    from services.demo import DEMO_FRAMEWORK_ID

    url = (base_url or get_settings().api_base_url).rstrip("/") + "/api/v1"
    client = httpx.Client(timeout=30)

    def call(
        org: str, method: str, path: str, body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {_demo_token(org)}"}
        if method == "POST" and path == "/referrals":
            headers["Idempotency-Key"] = f"demo-{uuid.uuid4()}"
        resp = client.request(method, url + path, json=body, headers=headers)
        if resp.status_code >= 400:
            print(f"  ! {method} {path}: {resp.status_code} {resp.text}", file=sys.stderr)
            raise typer.Exit(1)
        data: dict[str, Any] = resp.json()
        return data

    def show(step: str, view: dict[str, Any]) -> None:
        status = view.get("status") or "-"
        print(f"{step:<44} stage={view['stage']:<18} status={status}")

    def wait_stage(org: str, rid: str, stage: str) -> dict[str, Any]:
        for _ in range(150):
            view = call(org, "GET", f"/referrals/{rid}")
            if view["stage"] == stage:
                return view
            time.sleep(0.2)
        print(f"  ! referral never reached {stage}", file=sys.stderr)
        raise typer.Exit(1)

    office = "parket-antwerpen"
    view = call(
        office,
        "POST",
        "/referrals",
        {
            "framework_id": str(DEMO_FRAMEWORK_ID),
            "district": "antwerpen",
            "language": "nl",
            "identity": {
                "name": subject_name,
                "birth_date": date(1985, 7, 30).isoformat(),
                "national_number": national_number,
            },
            "contact": {"phone": "+32 3 000 00 00"},
            "judicial_context": {
                "offence_category": "drug_possession",
                "notice_number": "AN.12.L1.000001-26",
            },
            "referral_reason": {
                "target_group": "substance_use",
                "substance_or_behaviour": "cannabis",
            },
        },
    )
    rid = view["id"]
    show(f"1. office creates referral {rid[:8]}", view)
    valid_until = (datetime.now(UTC) + timedelta(days=365)).isoformat()
    view = call(
        office,
        "POST",
        f"/referrals/{rid}/consent",
        {
            "purposes": ["referral_to_care", "progress_reporting_to_justice", "care_team_sharing"],
            "categories": [
                "identity",
                "contact",
                "judicial_context",
                "referral_reason",
                "clinical",
                "welfare",
                "compliance",
            ],
            "recipients": ["health", "welfare", office],
            "disclosers": [office, "health", "welfare"],
            "right_to_revoke_explained": True,
            "valid_until": valid_until,
            "evidence_hash": "sha256:" + "0" * 64,
            "signed_by": "person",
            "signer_capacity": "self",
            "signed_on": datetime.now(UTC).date().isoformat(),
            "signing_method": "paper_form",
        },
    )
    show("2. person's consent recorded", view)
    view = wait_stage(office, rid, "offered")
    provider = view["offered_provider"]
    show(f"3. matched and offered to {provider}", view)
    show("4. provider accepts", call(provider, "POST", f"/referrals/{rid}/accept"))
    now = datetime.now(UTC).isoformat()
    show(
        "5. intake recorded",
        call(provider, "POST", f"/referrals/{rid}/intake", {"intake_date": now}),
    )
    show(
        "6. progress report (attending)",
        call(provider, "POST", f"/referrals/{rid}/progress", {"attendance": "attending"}),
    )
    show(
        "7. provider closes: completed",
        call(provider, "POST", f"/referrals/{rid}/close", {"outcome": "completed"}),
    )
    view = wait_stage(office, rid, "outcome_reported")
    facts = [f["fact"] for f in view.get("content", {}).get("compliance", {}).get("facts", [])]
    show("8. outcome reported to the office", view)
    print(f"{'':<44} compliance facts: {', '.join(facts)}")
    view = call(office, "POST", f"/referrals/{rid}/decision", {"decision": "dismissed"})
    show("9. prosecutor decides: dismissed", view)
    print(f"\nfinal status: {view['stage']}")


# ---- keys and audit -------------------------------------------------------------------


@app.command("i18n")
def i18n() -> None:
    """Merge the UI's messages into its catalogs (api/web/locale); lists what is untranslated."""
    from api.web.i18n import update_catalogs

    for language, missing in update_catalogs().items():
        typer.echo(f"{language}: {len(missing)} untranslated")
        for msgid in missing:
            typer.echo(f"  {msgid}")


@keys_app.command("rotate")
def keys_rotate() -> None:
    """Add a key-encryption key version that new data keys use."""
    from services.runtime import load_keyring

    print(f"new key-encryption key version: {load_keyring(get_settings()).rotate()}")


@keys_app.command("rotate-payload-key")
def keys_rotate_payload_key() -> None:
    """Add a Temporal payload key that new payloads (and new referral payload keys) use."""
    from services.runtime import load_keyring

    print(f"new payload key: {load_keyring(get_settings()).rotate_payload_key()}")


@keys_app.command("rotate-session-key")
def keys_rotate_session_key() -> None:
    """Add a web-session key; sessions sealed under the one before it stay valid. The API
    reads the keys when it starts: restart it to seal with the new one."""
    from services.runtime import load_keyring

    print(f"new web-session key: {load_keyring(get_settings()).rotate_web_session_key()}")


@keys_app.command("rewrap")
def keys_rewrap() -> None:
    """Rewrap every data key under the current key-encryption key (while running)."""
    from sqlmodel import Session

    from services.runtime import Runtime

    runtime = Runtime.build(get_settings())
    try:
        with Session(runtime.engine) as session:
            count = runtime.vault.rewrap_all(session=session)
    finally:
        runtime.close()
    print(f"rewrapped {count} data keys")


@keys_app.command("rotate-pseudonym-key")
def keys_rotate_pseudonym_key(
    resume: Annotated[
        bool,
        typer.Option(help="Add no version: finish the re-derivation an interrupted run left"),
    ] = False,
    batch_size: Annotated[int, typer.Option(min=1, help="Referrals per transaction")] = 200,
) -> None:
    """Add a pseudonym key version (new pseudonyms and fingerprints use it at once) and
    re-derive the pseudonyms of every referral not purged, in batches (while running).
    Interrupted, run it again with --resume. Audited; then retire the old version."""
    from sqlmodel import Session

    from services import pseudonym_rotation

    with _audited_pseudonym_key_command("keys.pseudonym.rederive") as runtime:
        if not resume:
            print(f"new pseudonym key: {runtime.keyring.rotate_pseudonym_key()}")
        with Session(runtime.engine) as session:
            done = pseudonym_rotation.rederive(
                session=session,
                vault=runtime.vault,
                keyring=runtime.keyring,
                batch_size=batch_size,
            )
    print(f"re-derived the pseudonyms of {done.rederived} referrals under {done.key_id}")
    if done.unreadable:
        print(
            f"{done.unreadable} referrals not purged have no readable identity left: "
            "they keep their pseudonyms until purged"
        )


@keys_app.command("retire-pseudonym-key")
def keys_retire_pseudonym_key(
    version: Annotated[str, typer.Argument(help="The pseudonym key version to destroy")],
) -> None:
    """Destroy an old pseudonym key version; refused while anything stored still needs it
    (pseudonyms not re-derived, request fingerprints not expired, consent evidence
    fingerprints of referrals not purged). Audited."""
    from datetime import timedelta

    from sqlmodel import Session

    from services import pseudonym_rotation
    from services.crypto import KeyRingError

    with _audited_pseudonym_key_command("keys.pseudonym.retire") as runtime:
        with Session(runtime.engine) as session:
            try:
                pseudonym_rotation.retire(
                    session=session,
                    keyring=runtime.keyring,
                    key_id=version,
                    request_ttl=timedelta(seconds=runtime.settings.idempotency_ttl_seconds),
                )
            except KeyRingError as exc:
                print(f"refused: {exc}", file=sys.stderr)
                raise typer.Exit(1) from None
    print(f"retired pseudonym key {version}")


@contextlib.contextmanager
def _audited_pseudonym_key_command(action: str) -> Iterator[Runtime]:
    """A pseudonym key command's runtime, and its one audit entry (success only if the
    command ran through), written before the runtime closes."""
    from services.audit.events import record_pseudonym_rotation
    from services.audit.models import AuditOutcome
    from services.runtime import Runtime

    runtime = Runtime.build(get_settings())
    outcome = AuditOutcome.FAILED
    try:
        yield runtime
        outcome = AuditOutcome.SUCCESS
    finally:
        try:
            record_pseudonym_rotation(
                runtime.gatekeeper, operator=_os_user(), action=action, outcome=outcome
            )
        finally:
            runtime.close()


def _os_user() -> str:
    """The operating-system account running the command (recorded with what it exports)."""
    import getpass

    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "unknown"


@audit_app.command("export")
def audit_export(out: Annotated[Path, typer.Option(help="Output file (JSON lines)")]) -> None:
    """Export the audit keys, every entry and cosignature, and the heads, ending with one
    signed now over every entry."""
    from services.audit.events import record_operator_export
    from services.audit.models import AuditOutcome
    from services.audit.offline import export_signed
    from services.runtime import Runtime

    runtime = Runtime.build(get_settings())
    outcome = AuditOutcome.FAILED
    try:
        count = export_signed(runtime.audit, runtime.engine, out, runtime.audit_keys.chain())
        outcome = AuditOutcome.SUCCESS
    finally:
        # recorded after the export (the next export carries it), whatever its outcome
        try:
            record_operator_export(
                runtime.gatekeeper,
                operator=_os_user(),
                action="audit.export",
                outcome=outcome,
            )
        finally:
            runtime.close()
    print(f"exported {count} entries to {out}, ending with a tree head at size {count}")


@audit_app.command("public-key")
def audit_public_key() -> None:
    """Print every key that verifies signed tree heads, oldest first (PEM)."""
    from services.audit.keys import public_keys_pem
    from services.runtime import Runtime

    runtime = Runtime.build(get_settings())
    try:
        print(public_keys_pem(k.key() for k in runtime.audit_keys.chain()), end="")
    finally:
        runtime.close()


@audit_app.command("rotate-key")
def audit_rotate_key() -> None:
    """Replace the audit signing key; the old key endorses the new one and its heads still
    verify. Restart the API and worker afterwards so they sign with the new key."""
    from services.runtime import Runtime

    runtime = Runtime.build(get_settings())
    try:
        print(f"new audit signing key: {runtime.audit_keys.rotate()}")
    finally:
        runtime.close()


def _read_json(path: Path, what: str) -> dict[str, Any]:
    import json

    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        print(f"cannot read the {what} {path}", file=sys.stderr)
        raise typer.Exit(2) from None
    if not isinstance(value, dict):
        print(f"the {what} {path} is not a JSON object", file=sys.stderr)
        raise typer.Exit(2)
    return value


def _public_keys(path: Path) -> list[Any]:
    """The Ed25519 public keys of a PEM file; exit 2 naming the file if it has none."""
    from services.audit.keys import load_public_keys

    try:
        return load_public_keys(path.read_text(encoding="ascii"))
    except (OSError, ValueError):
        print(f"{path} holds no readable Ed25519 public key (PEM)", file=sys.stderr)
        raise typer.Exit(2) from None


@audit_app.command("verify")
def audit_verify(
    file: Path,
    public_key: Annotated[
        Path, typer.Option("--public-key", help="PEM file of the trusted audit key(s)")
    ],
    trusted_head: Annotated[
        Path | None,
        typer.Option(help="A head kept from an earlier verification; the export must extend it"),
    ] = None,
    witness_key: Annotated[
        list[Path] | None, typer.Option(help="PEM file of a witness whose cosignatures count")
    ] = None,
    min_witnesses: Annotated[
        int, typer.Option(min=0, help="Require a head cosigned by this many witnesses")
    ] = 0,
    save_head: Annotated[
        Path | None, typer.Option(help="After success, keep the newest head here")
    ] = None,
) -> None:
    """Recompute the log from an export, offline; exit 1 naming why it is not intact."""
    import json

    from services.audit.keys import public_keys_pem
    from services.audit.offline import newest_head, verify_file

    witnesses = [key for path in witness_key or [] for key in _public_keys(path)]
    if min_witnesses > len(witnesses):
        print(f"--min-witnesses {min_witnesses} needs as many --witness-key files", file=sys.stderr)
        raise typer.Exit(2)
    if not file.is_file():
        print(f"no export at {file}", file=sys.stderr)
        raise typer.Exit(2)
    result = verify_file(
        file,
        public_keys_pem(_public_keys(public_key)),
        witness_keys=witnesses,
        min_witnesses=min_witnesses,
        trusted_head=None if trusted_head is None else _read_json(trusted_head, "trusted head"),
    )
    start = 0
    for head in result.heads:
        witnessed = f", cosigned by {len(head.cosigned_by)} witness(es)" if witnesses else ""
        print(
            f"  tree head at size {head.tree_size} (key {head.key_id}): covers entries "
            f"0..{head.tree_size - 1}, {head.new_entries} new from {start}{witnessed}"
        )
        start = head.tree_size
    if not result.ok:
        where = (
            ""
            if result.first_bad_index is None
            else (f"first bad entry index {result.first_bad_index}: ")
        )
        print(f"TAMPERED: {where}{result.reason}")
        raise typer.Exit(1)
    print(
        f"intact: {result.entries} entries, all covered by {len(result.heads)} verified "
        "signed tree heads" + (" and consistent with the trusted head" if trusted_head else "")
    )
    if save_head is not None:
        save_head.write_text(json.dumps(newest_head(file)) + "\n", encoding="utf-8")
        print(f"newest head kept in {save_head} (pass it as --trusted-head next time)")


@audit_app.command("witness-key")
def audit_witness_key(
    out: Annotated[Path, typer.Option(help="Where to create the witness's key file")],
) -> None:
    """Create a witness key file (development only: in a deployment the witness's own
    institution generates and holds it) and print its public key (PEM)."""
    from services.audit.offline import public_key_pem
    from services.audit.witness import WitnessKeyError, create_witness_key

    try:
        print(public_key_pem(create_witness_key(out)), end="")
    except WitnessKeyError as error:
        print(str(error), file=sys.stderr)
        raise typer.Exit(2) from None


def _newest_head_and_proof(runtime: Any, last: Any) -> tuple[Any, list[str]]:
    from services.audit.witness import TreeHead

    heads = runtime.audit.tree_heads()
    if not heads:
        print("the log has no signed tree head yet", file=sys.stderr)
        raise typer.Exit(2)
    newest = TreeHead.from_stored(heads[-1])
    if last is None or last.tree_size > newest.tree_size:
        return newest, []
    try:
        proof = runtime.audit.consistency_proof(last.tree_size, newest.tree_size)
    except ValueError:
        return newest, []  # the log no longer holds those entries: the check will fail
    return newest, list(proof.path)


@audit_app.command("witness")
def audit_witness(
    key: Annotated[Path, typer.Option(help="The witness's own key file (see witness-key)")],
    state: Annotated[Path, typer.Option(help="The witness's state: the last head it cosigned")],
    log_public_key: Annotated[
        Path, typer.Option(help="PEM file of the audit key(s) the witness trusts")
    ],
) -> None:
    """Cosign the log's newest tree head, only if it extends the last head cosigned."""
    from services.audit.keys import trusted_keys
    from services.audit.witness import (
        InconsistentLog,
        Witness,
        WitnessKeyError,
        load_witness_key,
        store_cosignature,
    )
    from services.runtime import Runtime

    try:
        witness_key = load_witness_key(key)
    except WitnessKeyError as error:
        print(str(error), file=sys.stderr)
        raise typer.Exit(2) from None
    runtime = Runtime.build(get_settings())
    try:
        log_keys = trusted_keys(runtime.audit_keys.chain(), _public_keys(log_public_key))
        witness = Witness(witness_key, state, log_keys)
        try:
            newest, proof = _newest_head_and_proof(runtime, witness.last_head)
            cosignature = witness.cosign(newest, proof)
        except InconsistentLog as error:
            print(f"REFUSED: {error}")
            raise typer.Exit(2) from None
        store_cosignature(runtime.engine, cosignature)
    finally:
        runtime.close()
    print(f"cosigned the tree head at size {cosignature.tree_size} as {cosignature.witness_key_id}")


@audit_app.command("monitor")
def audit_monitor(
    state: Annotated[Path, typer.Option(help="The monitor's state: the last head it saw")],
    public_key: Annotated[
        Path, typer.Option("--public-key", help="PEM file of the trusted audit key(s)")
    ],
) -> None:
    """Check the newest tree head extends the last one seen; exit 2 with ALARM if not."""
    from services.audit.keys import trusted_keys
    from services.audit.witness import InconsistentLog, check_extension, load_last_head
    from services.audit.witness import save_last_head as remember
    from services.runtime import Runtime

    runtime = Runtime.build(get_settings())
    try:
        keys = trusted_keys(runtime.audit_keys.chain(), _public_keys(public_key))
        try:
            last = load_last_head(state)
            newest, proof = _newest_head_and_proof(runtime, last)
            why = newest.signed_by(keys)
            if why is not None:
                raise InconsistentLog(why)
            check_extension(last, newest, proof)
        except InconsistentLog as error:
            print(f"ALARM: {error}")
            raise typer.Exit(2) from None
    finally:
        runtime.close()
    remember(state, newest)
    before = "nothing" if last is None else f"size {last.tree_size}"
    print(f"consistent: tree head at size {newest.tree_size} extends {before}")


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    app()
