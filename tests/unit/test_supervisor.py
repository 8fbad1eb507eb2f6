"""The dev stack's supervisor, with plain dummy processes (`python -c ...`).

Each process fails alone: one that crashes or stops answering its liveness check is
restarted while its neighbour keeps its pid; a crash loop is given up after a bounded number
of restarts; a stop ends every process within the grace period, by SIGKILL if it must.
"""

from __future__ import annotations

import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from services.supervisor import (
    Component,
    RestartPolicy,
    Supervisor,
    http_liveness,
)

QUICK = RestartPolicy(backoff_initial=0.1, backoff_max=0.4, max_restarts=3, window_seconds=60)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


SLEEPER = python("import time; time.sleep(120)")


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


@pytest.fixture
def supervised() -> Iterator[Callable[..., Supervisor]]:
    """A supervisor factory whose supervisors run in a thread and are always stopped."""
    started: list[tuple[Supervisor, threading.Event, threading.Thread]] = []

    def make(*components: Component, **kwargs: object) -> Supervisor:
        kwargs.setdefault("policy", QUICK)
        kwargs.setdefault("check_interval", 0.1)
        kwargs.setdefault("stop_grace", 2.0)
        supervisor = Supervisor(components, report=lambda _: None, **kwargs)  # type: ignore[arg-type]
        supervisor.start_all()
        stop = threading.Event()
        thread = threading.Thread(target=supervisor.run, args=(stop,), daemon=True)
        thread.start()
        started.append((supervisor, stop, thread))
        return supervisor

    yield make
    for supervisor, stop, thread in started:
        stop.set()
        thread.join(timeout=10)
        supervisor.stop()


def test_a_crashed_process_is_restarted_and_its_neighbour_keeps_running(
    supervised: Callable[..., Supervisor], tmp_path: Path
) -> None:
    starts = tmp_path / "starts"
    crashing = python(
        f"open({str(starts)!r}, 'a').write('x'); import time; time.sleep(0.3); raise SystemExit(3)"
    )
    supervisor = supervised(Component("steady", SLEEPER), Component("worker", crashing))
    steady = supervisor.process("steady")
    assert steady is not None
    wait_for(lambda: starts.exists() and len(starts.read_text()) >= 3)
    assert supervisor.restarts("worker") >= 2
    assert supervisor.process("steady") is steady and steady.poll() is None


def test_a_process_that_stops_answering_its_liveness_check_is_restarted(
    supervised: Callable[..., Supervisor], tmp_path: Path
) -> None:
    # Answers /healthz for a while, then keeps running with its listener closed: alive but
    # no longer serving, as the wedged API was.
    port = free_port()
    wedging = python(
        "import http.server, threading, time\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        "        self.send_response(200); self.end_headers()\n"
        "    def log_message(self, *a): pass\n"
        f"s = http.server.HTTPServer(('127.0.0.1', {port}), H)\n"
        "threading.Thread(target=s.serve_forever, daemon=True).start()\n"
        "time.sleep(1.0)\n"
        "s.shutdown(); s.server_close()\n"
        "time.sleep(120)\n"
    )
    api = Component(
        "api",
        wedging,
        liveness=http_liveness(f"http://127.0.0.1:{port}/healthz", timeout=0.5),
        startup_seconds=0.5,
        liveness_failures=2,
    )
    supervisor = supervised(Component("steady", SLEEPER), api)
    first = supervisor.process("api")
    steady = supervisor.process("steady")
    assert first is not None
    wait_for(lambda: supervisor.restarts("api") >= 1)
    wait_for(lambda: first.poll() is not None, timeout=5)  # the wedged one was stopped
    wait_for(lambda: supervisor.process("api") not in (None, first))
    assert supervisor.process("steady") is steady


def test_a_crash_loop_is_given_up_after_a_bounded_number_of_restarts(
    supervised: Callable[..., Supervisor], tmp_path: Path
) -> None:
    starts = tmp_path / "starts"
    crashing = python(f"open({str(starts)!r}, 'a').write('x'); raise SystemExit(1)")
    supervisor = supervised(Component("steady", SLEEPER), Component("loop", crashing))
    wait_for(lambda: supervisor.gave_up("loop"))
    time.sleep(1.0)  # no restart after giving up
    assert supervisor.restarts("loop") == QUICK.max_restarts
    assert len(starts.read_text()) == QUICK.max_restarts + 1
    steady = supervisor.process("steady")
    assert steady is not None and steady.poll() is None


def test_backoff_grows_between_restarts(
    supervised: Callable[..., Supervisor], tmp_path: Path
) -> None:
    starts = tmp_path / "starts"
    crashing = python(
        f"import time; open({str(starts)!r}, 'a').write(repr(time.monotonic()) + ' ')"
    )
    policy = RestartPolicy(backoff_initial=0.3, backoff_max=5, max_restarts=3, window_seconds=60)
    supervisor = supervised(Component("loop", crashing), policy=policy)
    wait_for(lambda: supervisor.gave_up("loop"))
    times = [float(t) for t in starts.read_text().split()]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert gaps[0] >= 0.3 and gaps[1] >= 0.6 and gaps[2] >= 1.2


def test_stop_ends_every_process_within_the_grace_then_kills() -> None:
    stubborn = python(
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready', flush=True); time.sleep(120)"
    )
    supervisor = Supervisor(
        [Component("polite", SLEEPER), Component("stubborn", stubborn)],
        stop_grace=1.0,
        report=lambda _: None,
    )
    supervisor.start_all()
    polite, stuck = supervisor.process("polite"), supervisor.process("stubborn")
    assert polite is not None and stuck is not None
    time.sleep(0.5)  # let the stubborn one install its handler
    began = time.monotonic()
    supervisor.stop()
    took = time.monotonic() - began
    assert polite.returncode == -signal.SIGTERM
    assert stuck.returncode == -signal.SIGKILL
    assert 1.0 <= took < 3.0
