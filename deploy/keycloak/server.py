"""Run the local development Keycloak (realm ``referral``) from Python, for tests and tools.

    from deploy.keycloak.server import running_keycloak

    with running_keycloak() as kc:          # free ports, fresh temporary run dir
        kc.issuer    # http://127.0.0.1:<port>/realms/referral
        kc.jwks_url  # .../protocol/openid-connect/certs

It drives the same shell scripts as a developer does (``fetch.sh``, ``start.sh``,
``stop.sh`` beside this file), so the tests exercise exactly what ``make run`` uses, and
it always stops the server, also when the body raises or startup fails half-way.

DEV ONLY: the bootstrap admin password is random per run and lives in the run dir (0600);
the demo users' password is ``demo``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from secrets import token_urlsafe

import httpx

HERE = Path(__file__).resolve().parent
REALM = "referral"
DEMO_PASSWORD = "demo"  # every demo user of the dev realm; never used outside it
CLI_CLIENT_ID = "referral-cli"
API_CLIENT_ID = "referral-api"

# Demo users of the realm export: username -> (realm role, organisation alias or None).
DEMO_USERS: dict[str, tuple[str, str | None]] = {
    "demo-prosecutor-antwerpen": ("prosecutor", "parket-antwerpen"),
    "demo-justice-assistant-antwerpen": ("justice_assistant", "parket-antwerpen"),
    "demo-prosecutor-bruxelles": ("prosecutor", "parquet-bruxelles"),
    "demo-justice-assistant-bruxelles": ("justice_assistant", "parquet-bruxelles"),
    "demo-intake-coordinator-cgg-antwerpen": ("intake_coordinator", "cgg-antwerpen"),
    "demo-care-worker-cgg-antwerpen": ("care_worker", "cgg-antwerpen"),
    "demo-intake-coordinator-free-clinic-antwerpen": (
        "intake_coordinator",
        "free-clinic-antwerpen",
    ),
    "demo-care-worker-free-clinic-antwerpen": ("care_worker", "free-clinic-antwerpen"),
    "demo-intake-coordinator-caw-brussel": ("intake_coordinator", "caw-brussel"),
    "demo-care-worker-caw-brussel": ("care_worker", "caw-brussel"),
    "demo-auditor-dpo-office": ("auditor", "dpo-office"),
    "demo-admin": ("admin", "platform"),
}

# Organisations of the realm export: alias -> sector (organisation attribute "sector").
DEMO_ORGANIZATIONS: dict[str, str] = {
    "parket-antwerpen": "justice",
    "parquet-bruxelles": "justice",
    "cgg-antwerpen": "health",
    "free-clinic-antwerpen": "health",
    "caw-brussel": "welfare",
    "dpo-office": "audit",
    "platform": "platform",
}


class KeycloakUnavailable(RuntimeError):
    """No suitable Java (17+) on this machine: Keycloak cannot run here."""


@dataclass(frozen=True)
class KeycloakInfo:
    base_url: str  # http://127.0.0.1:<port>
    issuer: str  # <base_url>/realms/referral  (the `iss` of every token)
    jwks_url: str  # <issuer>/protocol/openid-connect/certs
    token_url: str  # <issuer>/protocol/openid-connect/token
    management_url: str  # http://127.0.0.1:<management port>  (/health/ready, /health/live)
    realm: str
    admin_username: str  # bootstrap admin of the *master* realm (dev only)
    admin_password: str = field(repr=False)  # random per run (dev only)
    run_dir: Path = field(default=Path("."))
    java_home: str = ""
    startup_seconds: float = 0.0

    @property
    def admin_url(self) -> str:
        """Admin REST API root of the referral realm."""
        return f"{self.base_url}/admin/realms/{self.realm}"


def find_java() -> str:
    """JAVA_HOME that start.sh will use; raises KeycloakUnavailable when there is none."""
    proc = subprocess.run(
        ["bash", str(HERE / "java.sh")], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0 or not proc.stdout.strip():
        reason = proc.stderr.strip() or "no Java 17+ found"
        raise KeycloakUnavailable(reason)
    return proc.stdout.strip()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@contextmanager
def running_keycloak(
    port: int | None = None,
    data_dir: Path | None = None,
    *,
    management_port: int | None = None,
    start_timeout: float = 240.0,
) -> Iterator[KeycloakInfo]:
    """Start Keycloak (realm ``referral`` imported, in-memory DB), yield its info, stop it.

    ``port``/``management_port``: free ports on 127.0.0.1 when None.
    ``data_dir``: the run directory (Keycloak home, log, pid file); wiped at start and kept
    afterwards for inspection. When None a temporary directory is used and removed.
    Raises KeycloakUnavailable without Java 17+, RuntimeError when startup fails.
    """
    java_home = find_java()
    port = port or free_port()
    management_port = management_port or free_port()
    while management_port == port:
        management_port = free_port()
    own_dir = data_dir is None
    if data_dir is None:
        run_dir = Path(tempfile.mkdtemp(prefix="referral-keycloak-"))
    else:
        run_dir = Path(data_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    admin_password = token_urlsafe(18)
    env = {
        **os.environ,
        "REFERRAL_JAVA_HOME": java_home,
        "REFERRAL_KEYCLOAK_PORT": str(port),
        "REFERRAL_KEYCLOAK_MANAGEMENT_PORT": str(management_port),
        "REFERRAL_KEYCLOAK_ADMIN_USER": "admin",
        "REFERRAL_KEYCLOAK_ADMIN_PASSWORD": admin_password,
        "REFERRAL_KEYCLOAK_START_TIMEOUT": str(int(start_timeout)),
    }
    started = time.monotonic()
    try:
        proc = subprocess.run(
            ["bash", str(HERE / "start.sh"), str(run_dir)],
            env=env,
            capture_output=True,
            text=True,
            timeout=start_timeout + 120,  # fetch on first use + start
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"Keycloak failed to start (exit {proc.returncode}):\n{proc.stderr[-4000:]}\n"
                f"--- log tail ---\n{_tail(run_dir / 'keycloak.log')}"
            )
        issuer = proc.stdout.strip().splitlines()[-1]
        base_url = f"http://127.0.0.1:{port}"
        info = KeycloakInfo(
            base_url=base_url,
            issuer=issuer,
            jwks_url=f"{issuer}/protocol/openid-connect/certs",
            token_url=f"{issuer}/protocol/openid-connect/token",
            management_url=f"http://127.0.0.1:{management_port}",
            realm=REALM,
            admin_username="admin",
            admin_password=admin_password,
            run_dir=run_dir,
            java_home=java_home,
            startup_seconds=round(time.monotonic() - started, 1),
        )
        yield info
    finally:
        subprocess.run(
            ["bash", str(HERE / "stop.sh"), str(run_dir)],
            env=env,
            capture_output=True,
            timeout=60,
            check=False,
        )
        if own_dir:
            shutil.rmtree(run_dir, ignore_errors=True)


def password_grant(
    info: KeycloakInfo,
    username: str,
    password: str = DEMO_PASSWORD,
    client_id: str = CLI_CLIENT_ID,
) -> httpx.Response:
    """Direct-access-grant token request (dev realm's public `referral-cli` client)."""
    return httpx.post(
        info.token_url,
        data={
            "grant_type": "password",
            "client_id": client_id,
            "username": username,
            "password": password,
        },
        timeout=30,
    )


def admin_token(info: KeycloakInfo) -> str:
    """Access token of the bootstrap admin (master realm, admin-cli)."""
    resp = httpx.post(
        f"{info.base_url}/realms/master/protocol/openid-connect/token",
        data={
            "grant_type": "password",
            "client_id": "admin-cli",
            "username": info.admin_username,
            "password": info.admin_password,
        },
        timeout=30,
    )
    resp.raise_for_status()
    return str(resp.json()["access_token"])


def admin_client(info: KeycloakInfo) -> httpx.Client:
    """httpx client on the realm's admin REST API (``/admin/realms/referral``)."""
    return httpx.Client(
        base_url=info.admin_url,
        headers={"Authorization": f"Bearer {admin_token(info)}"},
        timeout=30,
    )


if __name__ == "__main__":  # pragma: no cover - manual smoke run
    with running_keycloak() as kc:
        print(f"issuer {kc.issuer}  started in {kc.startup_seconds}s  (run dir {kc.run_dir})")
        print(password_grant(kc, "demo-prosecutor-antwerpen").json()["access_token"][:40], "...")
