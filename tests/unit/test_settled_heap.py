"""`referral api` settles its start-up heap once it serves: the objects start-up made leave
the garbage collector's scans, so a full collection no longer pauses the event loop for
each of them (`services.runtime.settle_heap`). A server built without it leaves them."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]

SERVER = """
import gc, sys
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
from api.cli import api_server
from services.settings import Settings

settle, port = sys.argv[1] == "settle", int(sys.argv[2])

async def heap(request):
    return JSONResponse({"frozen": gc.get_freeze_count(), "settled": server.settled_objects})

app = Starlette(routes=[Route("/heap", heap)])
settings = Settings(environment="test", api_port=port, api_shutdown_grace_seconds=1)
server = api_server(settings, app, factory=False, settle_heap=settle)
server.run()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _heap_of_server(mode: str) -> dict[str, int]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER, mode, str(port)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/heap", timeout=1)
                if answer.status_code == 200:
                    body: dict[str, int] = answer.json()
                    return body
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, "the server stopped"
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(timeout=15)


@pytest.mark.parametrize(("mode", "settled"), [("settle", True), ("leave", False)])
def test_the_api_server_settles_its_start_up_heap_once_it_serves(mode: str, settled: bool) -> None:
    heap = _heap_of_server(mode)
    if settled:
        # the app, uvicorn and what they import: far more than a handful of objects (some
        # settled objects are freed since, by their reference counts)
        assert heap["settled"] > 20_000 and heap["frozen"] > 0.9 * heap["settled"]
    else:
        assert heap == {"frozen": 0, "settled": 0}
