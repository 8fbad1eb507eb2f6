"""Keep each process of the development stack up on its own, and stop them all in bounded time.

`make run` starts the Temporal dev server, the worker and the API as child processes. A
process that exits, or that stops answering its liveness check, is restarted after a
back-off, at most `max_restarts` times per `window_seconds` (then it is left down and
reported: a crash loop must not spin); the other processes keep running meanwhile. A stop
sends SIGTERM to every process group and SIGKILL to whatever is left after the grace period.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

Liveness = Callable[[], bool]
logger = logging.getLogger("services.supervisor")


def http_liveness(url: str, *, timeout: float = 3.0) -> Liveness:
    """Live when GET `url` answers 200 within `timeout` seconds."""

    def check() -> bool:
        try:
            return httpx.get(url, timeout=timeout).status_code == 200
        except httpx.HTTPError:
            return False

    return check


def tcp_liveness(host: str, port: int, *, timeout: float = 3.0) -> Liveness:
    """Live when a TCP connection to `host:port` opens within `timeout` seconds."""

    def check() -> bool:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                return True
        except OSError:
            return False

    return check


def file_liveness(path: Path, *, max_age: float) -> Liveness:
    """Live when `path` was touched within the last `max_age` seconds (a heartbeat file)."""

    def check() -> bool:
        try:
            return time.time() - path.stat().st_mtime <= max_age
        except OSError:
            return False

    return check


def arm_stop_deadline(seconds: float, *, exit_code: int = 70) -> None:
    """End this process after `seconds`, whatever its shutdown is still waiting for.

    Called when a stop signal arrives: a graceful shutdown that waits on a wedged thread
    (a blocked database call, a stuck activity) must not keep the process alive for ever.
    """

    def hard_exit() -> None:
        sys.stderr.write(f"still stopping after {seconds:.0f}s: exiting now\n")
        sys.stderr.flush()
        os._exit(exit_code)

    timer = threading.Timer(seconds, hard_exit)
    timer.daemon = True
    timer.start()


@dataclass(frozen=True)
class Component:
    """One supervised process: its command, how to tell it is live, where it logs."""

    name: str
    argv: Sequence[str]
    liveness: Liveness | None = None
    startup_seconds: float = 60.0  # time to come up before the liveness check counts
    liveness_failures: int = 3  # consecutive failed checks before a restart
    env: Mapping[str, str] | None = None
    log_path: Path | None = None


@dataclass(frozen=True)
class RestartPolicy:
    """Back-off doubles from `backoff_initial` to `backoff_max`; it resets once a process has
    run for `stable_seconds`. More than `max_restarts` in `window_seconds`: give up on it."""

    backoff_initial: float = 1.0
    backoff_max: float = 30.0
    stable_seconds: float = 60.0
    max_restarts: int = 5
    window_seconds: float = 300.0


@dataclass
class _Running:
    component: Component
    proc: subprocess.Popen[bytes] | None = None
    log: IO[bytes] | None = None
    started_at: float = 0.0
    last_check: float = 0.0
    failed_checks: int = 0
    backoff: float = 0.0
    restart_at: float | None = None
    restarts: deque[float] = field(default_factory=deque)
    restart_count: int = 0
    gave_up: bool = False


class Supervisor:
    """Starts the components in order, restarts each on its own, stops all of them."""

    def __init__(
        self,
        components: Sequence[Component],
        *,
        policy: RestartPolicy | None = None,
        stop_grace: float = 20.0,
        check_interval: float = 2.0,
        report: Callable[[str], None] | None = None,
    ) -> None:
        self._policy = policy or RestartPolicy()
        self._stop_grace = stop_grace
        self._check_interval = check_interval
        self._report = report or logger.warning
        self._running = {
            c.name: _Running(component=c, backoff=self._policy.backoff_initial) for c in components
        }

    # ---- what a caller (and a test) can see -------------------------------------------

    def process(self, name: str) -> subprocess.Popen[bytes] | None:
        """The current process of a component (None while it waits for its restart)."""
        return self._running[name].proc

    def restarts(self, name: str) -> int:
        """How many times the component was restarted."""
        return self._running[name].restart_count

    def gave_up(self, name: str) -> bool:
        """Whether the component restarted too often and is left down."""
        return self._running[name].gave_up

    # ---- lifecycle -----------------------------------------------------------------------

    def start(self, name: str) -> subprocess.Popen[bytes]:
        """Start one component (in a process group of its own, so a stop reaches its children)."""
        running = self._running[name]
        component = running.component
        if running.log is None and component.log_path is not None:
            running.log = open(component.log_path, "ab")  # noqa: SIM115 - closed in stop()
        out = running.log if running.log is not None else subprocess.DEVNULL
        env = dict(component.env) if component.env is not None else None
        running.proc = subprocess.Popen(
            list(component.argv),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        running.started_at = running.last_check = time.monotonic()
        running.failed_checks = 0
        running.restart_at = None
        return running.proc

    def start_all(self) -> None:
        for name in self._running:
            self.start(name)

    def tick(self) -> None:
        """One round: restart what exited or failed its liveness check, when its turn comes."""
        for name, running in self._running.items():
            if running.gave_up:
                continue
            now = time.monotonic()
            proc = running.proc
            if proc is None:
                if running.restart_at is not None and now >= running.restart_at:
                    self._report(f"{name}: restarting (restart {running.restart_count})")
                    self.start(name)
                continue
            code = proc.poll()
            if code is not None:
                self._report(f"{name}: exited with {code}")
                self._schedule_restart(running, now)
                continue
            if self._liveness_failed(running, now):
                self._report(f"{name}: not live ({running.failed_checks} failed checks), stopping")
                _stop_processes([proc], self._stop_grace)
                self._schedule_restart(running, time.monotonic())

    def run(self, stop: threading.Event) -> None:
        """Supervise until `stop` is set."""
        while not stop.is_set():
            self.tick()
            stop.wait(min(0.5, self._check_interval))

    def stop(self) -> None:
        """SIGTERM to every process group, in reverse order of start; SIGKILL after the grace."""
        procs = [r.proc for r in reversed(self._running.values()) if r.proc is not None]
        _stop_processes(procs, self._stop_grace)
        for running in self._running.values():
            running.restart_at = None
            if running.log is not None:
                running.log.close()
                running.log = None

    # ---- policy --------------------------------------------------------------------------

    def _liveness_failed(self, running: _Running, now: float) -> bool:
        component = running.component
        if component.liveness is None or now - running.started_at < component.startup_seconds:
            return False
        if now - running.last_check < self._check_interval:
            return False
        running.last_check = now
        if component.liveness():
            running.failed_checks = 0
            return False
        running.failed_checks += 1
        return running.failed_checks >= component.liveness_failures

    def _schedule_restart(self, running: _Running, now: float) -> None:
        policy = self._policy
        running.proc = None
        if now - running.started_at >= policy.stable_seconds:
            running.backoff = policy.backoff_initial
        while running.restarts and now - running.restarts[0] > policy.window_seconds:
            running.restarts.popleft()
        if len(running.restarts) >= policy.max_restarts:
            running.gave_up = True
            self._report(
                f"{running.component.name}: {len(running.restarts)} restarts in "
                f"{policy.window_seconds:.0f}s, giving up on it (the rest keeps running)"
            )
            return
        running.restarts.append(now)
        running.restart_count += 1
        running.restart_at = now + running.backoff
        self._report(f"{running.component.name}: restart in {running.backoff:.1f}s")
        running.backoff = min(running.backoff * 2, policy.backoff_max)


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    try:
        os.killpg(proc.pid, sig)  # its own session: the group id is its pid
    except ProcessLookupError:
        pass
    except PermissionError:
        proc.send_signal(sig)


def _stop_processes(procs: Sequence[subprocess.Popen[bytes]], grace: float) -> None:
    """SIGTERM each (group), wait up to `grace` seconds for all, then SIGKILL what is left."""
    for proc in procs:
        if proc.poll() is None:
            _signal_group(proc, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in procs:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for proc in procs:
        if proc.poll() is None:
            _signal_group(proc, signal.SIGKILL)
            proc.wait()
