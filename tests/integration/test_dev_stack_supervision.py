"""`make run`'s processes fail alone: the real Temporal dev server, worker and API, supervised
as `referral dev-stack` supervises them (Keycloak aside: it is not needed to serve /healthz).

`kill -9` of one process restarts that one only; the others keep their pids. A stop ends
all of them.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from api.cli import dev_stack_components
from services.runtime import load_keyring
from services.settings import Settings
from services.supervisor import RestartPolicy, Supervisor
from tests.ports import restartable_port

pytestmark = pytest.mark.integration

NAMES = ("temporal", "worker", "api")


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.fixture
def stack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Supervisor, str, Path]]:
    # below the ephemeral range: a killed process comes back on the same port
    api_port, temporal_port, ui_port = (restartable_port() for _ in range(3))
    env = {
        "REFERRAL_ENVIRONMENT": "development",
        "REFERRAL_DATA_DIR": str(tmp_path),
        "REFERRAL_DATABASE_URL": f"sqlite:///{tmp_path / 'referral.db'}",
        "REFERRAL_KEYRING_PATH": str(tmp_path / "keyring.json"),
        "REFERRAL_TEMPORAL_ADDRESS": f"127.0.0.1:{temporal_port}",
        "REFERRAL_TEMPORAL_UI_PORT": str(ui_port),
        "REFERRAL_API_PORT": str(api_port),
        "REFERRAL_API_BASE_URL": f"http://127.0.0.1:{api_port}",
        "REFERRAL_API_SHUTDOWN_GRACE_SECONDS": "2",
        "REFERRAL_WORKER_SHUTDOWN_GRACE_SECONDS": "2",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)  # the children inherit it
    settings = Settings()
    referral = str(Path(sys.executable).parent / "referral")
    subprocess.run([referral, "migrate"], check=True, capture_output=True)
    load_keyring(settings)
    supervisor = Supervisor(
        dev_stack_components(settings, tmp_path),
        policy=RestartPolicy(backoff_initial=0.2),
        stop_grace=10,
        check_interval=1,
        report=lambda _: None,
    )
    supervisor.start_all()
    try:
        yield supervisor, f"http://127.0.0.1:{api_port}", tmp_path
    finally:
        supervisor.stop()


def test_each_killed_process_is_restarted_alone(stack: tuple[Supervisor, str, Path]) -> None:
    supervisor, api, logs = stack

    def healthy() -> bool:
        try:
            return httpx.get(f"{api}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def worker_polls() -> bool:
        log = logs / "worker.log"
        return log.exists() and "worker running" in log.read_text()

    def supervised(condition: Callable[[], bool]) -> Callable[[], bool]:
        # The supervisor runs while we wait, as `referral dev-stack` runs it: a worker that
        # starts before the Temporal server listens exits, and is started again.
        def check() -> bool:
            supervisor.tick()
            return condition()

        return check

    wait_for(supervised(healthy), 90, "the API")
    wait_for(supervised(worker_polls), 90, "the worker")
    for victim in NAMES:
        before = {name: supervisor.process(name) for name in NAMES}
        killed = before[victim]
        assert killed is not None
        killed.send_signal(signal.SIGKILL)
        deadline = time.monotonic() + 90
        while supervisor.process(victim) in (None, killed):
            supervisor.tick()
            assert time.monotonic() < deadline, f"{victim} was not restarted"
            time.sleep(0.2)
        for other in NAMES:
            if other != victim:
                assert supervisor.process(other) is before[other], f"{other} was restarted too"
                proc = supervisor.process(other)
                assert proc is not None and proc.poll() is None
        if victim == "api":
            wait_for(supervised(healthy), 90, "the restarted API")
    processes = {name: supervisor.process(name) for name in NAMES}
    began = time.monotonic()
    supervisor.stop()
    assert time.monotonic() - began < 10  # the supervisor's grace: none needed SIGKILL
    for name, proc in processes.items():
        assert proc is not None and proc.poll() is not None
        assert proc.returncode != -signal.SIGKILL, f"{name} had to be killed"
