"""Many referrals driven through their whole lifecycle over HTTP, as real clients would:
every request carries an Idempotency-Key and is retried (same key, same body) when the
connection breaks or the API answers 503, until a deadline. What the run saw is counted
so the test can check the invariants afterwards."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from tests.integration.journey import CGG, OFFICE, consent_body, new_referral
from tests.tokens import TokenMinter

RETRY_STATUSES = frozenset({502, 503, 504})


@dataclass
class RunLog:
    """What the clients saw: ids answered, request ids of every success, odd answers."""

    created: list[str] = field(default_factory=list)
    closed: set[str] = field(default_factory=set)
    succeeded_request_ids: list[str] = field(default_factory=list)
    server_errors: Counter[str] = field(default_factory=Counter)
    retried: Counter[str] = field(default_factory=Counter)
    # A retried step (same key, same body) answered differently from a first success:
    # the first attempt was applied but its answer lost, and the retry was refused.
    retry_refused: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    # Why requests were tried again: "503", "409 in use" or "no answer" (connection broken).
    retry_reasons: Counter[str] = field(default_factory=Counter)


def _in_use(resp: httpx.Response) -> bool:
    """409 'idempotency-key-in-use': the documented answer to try the same request again."""
    if resp.status_code != 409:
        return False
    try:
        return bool(resp.json().get("type", "").endswith(":idempotency-key-in-use"))
    except ValueError:
        return False


class Driver:
    def __init__(self, base_url: str, minter: TokenMinter, log: RunLog, deadline: float) -> None:
        self.client = httpx.AsyncClient(
            base_url=base_url,
            timeout=httpx.Timeout(30, connect=2),
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=0),
        )
        self.minter = minter
        self.log = log
        self.deadline = deadline

    async def close(self) -> None:
        await self.client.aclose()

    async def call(
        self,
        party: tuple[str, str],
        method: str,
        path: str,
        *,
        body: Any = None,
        key: str | None = None,
        label: str,
    ) -> httpx.Response:
        """One logical request, retried with the same key and body until it is answered."""
        attempts = 0
        while True:
            headers = self.minter.headers(*party)
            if key is not None:
                headers["Idempotency-Key"] = key
            attempts += 1
            try:
                resp = await self.client.request(method, path, json=body, headers=headers)
            except httpx.TransportError:
                resp = None
            if resp is None:
                self.log.retry_reasons["no answer"] += 1
            elif _in_use(resp):
                self.log.retry_reasons["409 in use"] += 1
                resp = None  # the first try with this key is still served, or died: retry
            elif resp.status_code in RETRY_STATUSES:
                self.log.retry_reasons[str(resp.status_code)] += 1
            if resp is not None and resp.status_code not in RETRY_STATUSES:
                if resp.status_code >= 500:
                    self.log.server_errors[f"{label} {resp.status_code}"] += 1
                else:
                    if resp.status_code < 300:
                        self.log.succeeded_request_ids.append(resp.headers["x-request-id"])
                    if attempts > 1:
                        self.log.retried[label] += 1
                    return resp
            if time.monotonic() > self.deadline:
                raise TimeoutError(f"{label}: no answer before the deadline")
            await asyncio.sleep(0.3)

    async def view(self, party: tuple[str, str], rid: str) -> dict[str, Any]:
        resp = await self.call(party, "GET", f"/api/v1/referrals/{rid}", label="view")
        resp.raise_for_status()
        return resp.json()  # type: ignore[no-any-return]

    async def wait_stage(self, party: tuple[str, str], rid: str, stage: str) -> None:
        while time.monotonic() < self.deadline:
            if (await self.view(party, rid))["stage"] == stage:
                return
            await asyncio.sleep(0.25)
        raise TimeoutError(f"{rid} never reached {stage}")

    async def step(self, party: tuple[str, str], rid: str, name: str, body: Any = None) -> None:
        resp = await self.call(
            party,
            "POST",
            f"/api/v1/referrals/{rid}/{name}",
            body=body,
            key=f"rel-{rid}-{name}",
            label=name,
        )
        if resp.status_code != 200:
            self.log.retry_refused.append(f"{name}: {resp.status_code} {resp.text[:200]}")

    async def lifecycle(self, n: int) -> None:
        """Create, consent, accept, intake, progress, close, decide: to `closed`."""
        try:
            resp = await self.call(
                OFFICE,
                "POST",
                "/api/v1/referrals",
                body=new_referral(),
                key=f"rel-create-{n}-{uuid.uuid4()}",
                label="create",
            )
            if resp.status_code not in (200, 201):
                self.log.failures.append(f"create: {resp.status_code} {resp.text[:200]}")
                return
            rid = resp.json()["id"]
            self.log.created.append(rid)
            await self.step(OFFICE, rid, "consent", consent_body())
            await self.wait_stage(OFFICE, rid, "offered")
            await self.step(CGG, rid, "accept")
            await self.step(CGG, rid, "intake", {"intake_date": datetime.now(UTC).isoformat()})
            await self.step(CGG, rid, "progress", {"attendance": "attending"})
            await self.step(CGG, rid, "close", {"outcome": "completed"})
            await self.wait_stage(OFFICE, rid, "outcome_reported")
            await self.step(OFFICE, rid, "decision", {"decision": "dismissed"})
            await self.wait_stage(OFFICE, rid, "closed")
            self.log.closed.add(rid)
        except (TimeoutError, httpx.HTTPError) as exc:
            self.log.failures.append(f"lifecycle {n}: {exc}")
