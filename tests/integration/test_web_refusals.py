"""A refused step in the UI speaks the user's language (issue 15, item 6): over HTTP, on the
real Temporal dev server and database, the error page of a refused step says why in Dutch,
and carries none of the API's English words."""

from __future__ import annotations

import re

import httpx
import pytest
from fastapi import FastAPI

from api.web.i18n import Translator
from api.web.labels import REFUSALS, label
from tests.integration.journey import CGG, OFFICE, Journey, consent_body
from tests.integration.web_client import WebUser, main_of
from tests.tokens import TokenMinter

pytestmark = pytest.mark.integration

DUTCH = Translator("nl")
ENGLISH_REFUSAL = re.compile(r"not allowed in stage|\bnothing was done\b|\bthis step\b", re.I)


def _problem(html: str) -> str:
    main = main_of(html)
    return main[main.find('class="problem"') :]


def _check_dutch(html: str) -> str:
    problem = _problem(html)
    assert problem, html[:500]
    for english in REFUSALS:
        assert english not in problem, english
    assert not ENGLISH_REFUSAL.search(problem), problem[:400]
    return problem


async def test_a_refused_step_says_why_in_dutch(
    app: FastAPI, api: httpx.AsyncClient, minter: TokenMinter
) -> None:
    j = Journey(api, minter)
    await j.create()

    # the office may not see the stage: the same words whatever it is, in Dutch
    async with WebUser(app, minter, OFFICE, language="nl") as office:
        resp = await office.post(f"/ui/referrals/{j.id}/rematch")
        assert resp.status_code == 409, resp.text[:300]
        problem = _check_dutch(resp.text)
        assert DUTCH(REFUSALS["this step is not possible on this referral now"]) in problem

    # the care team may see the stage: why, with the stage in Dutch
    await j.step(OFFICE, "consent", consent_body())
    await j.wait_stage("offered")
    await j.step(CGG, "accept")
    async with WebUser(app, minter, CGG, language="nl") as cgg:
        # closing before the intake: not possible in the stage `accepted`
        resp = await cgg.post(f"/ui/referrals/{j.id}/close", {"outcome": "completed"})
        assert resp.status_code == 409, resp.text[:300]
        problem = _check_dutch(resp.text)
        assert DUTCH(label("accepted")) in problem, problem[:400]
        assert "accepted" not in problem
