"""`make bench`'s API harness at a tiny size, so that it cannot rot between benchmark runs.

It starts the same servers as the real run (Temporal dev server, the API and its worker,
the bare route and the bare workflow's worker), measures every kind of row once at the
smallest concurrency, and stops them all. No figure is checked against a time: only that
every row completed work on both sides without an error, and that nothing was left running.
The GET rows are driven by wrk (Debian's package, installed by `make test` and `.ci/run`).
"""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from threading import Thread

import pytest

from bench import api_bench
from tests import system_tools

pytestmark = pytest.mark.integration


def _require_wrk() -> None:
    system_tools.require(
        "wrk", "the bench's GET rows need wrk: `apt-get install wrk` (`make test` as root does)"
    )


async def test_the_api_bench_measures_every_row_and_stops_what_it_started() -> None:
    _require_wrk()
    sizes = api_bench.SIZES["tiny"]
    result = await api_bench.run(sizes)

    expected = (
        [f"creates/s, {c} concurrent" for c in sizes.creates]
        + [f"lifecycles/min, {c} concurrent" for c in sizes.lifecycles]
        + [f"GET one referral, {c} concurrent" for c in sizes.gets]
    )
    assert [row["what"] for row in result["rows"]] == expected
    for row in result["rows"]:
        for side in ("project", "bare"):
            assert row[side]["completed"] >= 1, row
            assert row[side]["errors"] == 0, row
        assert row["ratio"] > 0, row
        assert not row["api_restarted"], row
    # the baseline workflow runs as many activities as the referral's did
    activities = result["activities"]
    assert 1 <= activities["create"] < activities["lifecycle"], activities
    assert result["stopped"], "a process the bench started is still running"


class _Answers(BaseHTTPRequestHandler):
    """200 to GET /ok with the bench's bearer token, 401 to anything else."""

    protocol_version = "HTTP/1.1"  # keep-alive, as wrk's connections are

    def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
        good = self.path == "/ok" and self.headers.get("Authorization") == "Bearer t"
        body = b"{}"
        self.send_response(200 if good else 401)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


async def test_wrk_counts_only_the_expected_answer_and_every_other_one_as_an_error() -> None:
    _require_wrk()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answers)
    server.daemon_threads = True
    Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        token = {"Authorization": "Bearer t"}
        good = await api_bench.wrk_loop(f"{url}/ok", token, 2, 1, 5)
        refused = await api_bench.wrk_loop(f"{url}/ok", {"Authorization": "Bearer x"}, 2, 1, 5)
    finally:
        server.shutdown()
        server.server_close()
    assert good.completed > 0 and not good.errors, good
    assert good.rate > 0 and good.percentile(0.99) is not None
    assert refused.completed == 0 and refused.rate == 0, refused
    assert set(refused.errors) == {"401"} and refused.errors["401"] > 0, refused
    assert refused.percentile(0.5) is None
