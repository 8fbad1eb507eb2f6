"""The API process stops on SIGTERM in bounded time, however wedged it is; and once it
serves, it has settled its start-up heap.

The issue's API, its request threads stuck, ignored SIGINT and SIGTERM. Here a real uvicorn
server, built as `referral api` builds it (`api.cli.api_server`, grace 1 s), serves an app
that wedges: a request whose thread never returns, or a shutdown that never ends.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from services.runtime import YOUNG_GENERATION_THRESHOLD

REPO = Path(__file__).resolve().parents[2]

SERVER = """
import gc, sys, threading, time
from contextlib import asynccontextmanager
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route
from api.cli import api_server
from services.settings import Settings

never = threading.Event()
mode, port = sys.argv[1], int(sys.argv[2])

@asynccontextmanager
async def lifespan(app):
    yield
    if mode == "shutdown":
        time.sleep(600)  # a shutdown that blocks the event loop itself

async def wedged(request):
    await run_in_threadpool(never.wait)  # a request thread that never returns
    return PlainTextResponse("unreachable")

async def healthz(request):
    return PlainTextResponse("ok")

async def heap(request):
    return JSONResponse(
        {
            "frozen": gc.get_freeze_count(),
            "settled": server.settled_objects,
            "young": gc.get_threshold()[0],
        }
    )

routes = [Route("/wedged", wedged), Route("/healthz", healthz), Route("/heap", heap)]
app = Starlette(routes=routes, lifespan=lifespan)
settings = Settings(environment="test", api_port=port, api_shutdown_grace_seconds=1)
server = api_server(settings, app, factory=False, settle_heap=mode == "settle")
server.run()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serving(mode: str) -> tuple[subprocess.Popen[bytes], int]:
    """The server of `SERVER` in `mode`, once it answers, and its port."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER, mode, str(port)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc, port
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise AssertionError("the server did not start")
        time.sleep(0.1)


@pytest.mark.parametrize(
    ("mode", "bound"),
    [
        ("request", 4.0),  # the grace (1 s) then the open request is cancelled
        ("shutdown", 9.0),  # the grace, then the hard stop 5 s later
    ],
)
def test_sigterm_stops_a_wedged_api_within_its_grace(mode: str, bound: float) -> None:
    proc, port = serving(mode)
    holder: subprocess.Popen[bytes] | None = None
    try:
        with pytest.raises(httpx.TimeoutException):
            httpx.get(f"http://127.0.0.1:{port}/wedged", timeout=0.5)
        # the wedged request stays open on the server side (a fresh connection holds it)
        holder = subprocess.Popen(
            [
                sys.executable,
                "-c",
                f"import httpx; httpx.get('http://127.0.0.1:{port}/wedged', timeout=60)",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.5)
        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=bound + 5)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {bound + 5:.0f}s after SIGTERM")
        assert time.monotonic() - began < bound
    finally:
        if holder is not None:
            holder.kill()
            holder.wait()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize(("mode", "settled"), [("settle", True), ("request", False)])
def test_the_api_server_settles_its_start_up_heap_once_it_serves(mode: str, settled: bool) -> None:
    """`referral api` settles its start-up heap (`services.runtime.settle_heap`): the objects
    start-up made leave the garbage collector's scans, so a full collection no longer pauses
    the event loop for each of them. A server built without it leaves them."""
    proc, port = serving(mode)
    try:
        heap = httpx.get(f"http://127.0.0.1:{port}/heap", timeout=5).json()
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    if settled:
        # the app, uvicorn and what they import: far more than a handful of objects (some
        # settled objects are freed since, by their reference counts)
        assert heap["settled"] > 20_000 and heap["frozen"] > 0.9 * heap["settled"]
        # and the youngest generation is collected less often (fewer promotions under load)
        assert heap["young"] == YOUNG_GENERATION_THRESHOLD
    else:
        assert heap["frozen"] == 0 and heap["settled"] == 0
        assert heap["young"] != YOUNG_GENERATION_THRESHOLD  # Python's own
