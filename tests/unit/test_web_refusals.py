"""A refused step speaks the user's language (issue 15, item 6): every refusal text the code
behind the UI's pages can give has its translatable words in `api/web/labels.py`, and a text
the UI does not know never reaches a page in another language than English."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from api.web.i18n import Translator
from api.web.labels import CONSENT_PARTS, REFUSALS, refusal_text
from services.errors import StepRefused
from services.idempotency import IN_USE
from workflows.referral import LOST_RACE

ROOT = Path(__file__).resolve().parents[2]
# The code a page calls when it takes a step or reads a referral.
SOURCES = [
    "workflows/referral.py",
    "api/routes.py",
    "api/errors.py",
    "api/policy_routes.py",
    "services/referrals.py",
    "services/consent.py",
    "services/care_team.py",
    "services/idempotency.py",
]
RAISED = {
    "Conflict",
    "Forbidden",
    "NotFound",
    "Unprocessable",
    "StepRefused",
    "KeyInUse",
    "Unavailable",
    "PreconditionRequired",
    "ValueError",
    "ApplicationError",
}
# Texts built at run time, which `refusal_text` reads by their pattern.
FORMATTED = {
    "f'not allowed in stage {self._stage.value} (needs: {allowed})'",
    "f'not allowed in stage {self._stage.value}: the referral has ended'",
    "'the consent lacks: ' + ', '.join(missing)",
}
NAMED = {"problem", "LOST_RACE", "IN_USE", "idempotency.IN_USE"}  # constants checked below


def _constants(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.IfExp):
        return _constants(node.body) + _constants(node.orelse)
    return []


def refusal_texts() -> tuple[set[str], set[str]]:
    """(the literal refusal texts, the built ones) of SOURCES."""
    literal: set[str] = set()
    built: set[str] = set()
    for source in SOURCES:
        for node in ast.walk(ast.parse((ROOT / source).read_text(encoding="utf-8"))):
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and node.exc.args:
                func = node.exc.func
                name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
                if name in RAISED:
                    found = _constants(node.exc.args[0])
                    literal.update(found)
                    if not found:
                        built.add(ast.unparse(node.exc.args[0]))
            if isinstance(node, ast.FunctionDef) and (
                node.name.endswith("_problem") or node.name == "describe"
            ):
                for sub in ast.walk(node):
                    if isinstance(sub, ast.Return) and sub.value is not None:
                        literal.update(_constants(sub.value))
                        if isinstance(sub.value, ast.Tuple) and len(sub.value.elts) == 4:
                            literal.update(_constants(sub.value.elts[2]))
                    if isinstance(sub, ast.Assign) and isinstance(sub.value, ast.IfExp):
                        literal.update(_constants(sub.value.orelse))
    return literal, built


def consent_parts() -> set[str]:
    tree = ast.parse((ROOT / "services/consent.py").read_text(encoding="utf-8"))
    check_form = next(
        n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "check_form"
    )
    return {
        node.args[0].value
        for node in ast.walk(check_form)
        if isinstance(node, ast.Call)
        and getattr(node.func, "attr", "") == "append"
        and isinstance(node.args[0], ast.Constant)
    }


def test_the_collector_finds_the_refusals() -> None:
    literal, built = refusal_texts()
    assert len(literal) > 25, "the collector found too few refusal texts: is it broken?"
    assert "there is no consent to withdraw" in literal and "the step was refused" in literal
    assert len(consent_parts()) > 10


def test_every_refusal_text_has_its_words_in_the_ui() -> None:
    literal, built = refusal_texts()
    missing = sorted(literal - set(REFUSALS))
    assert not missing, f"refusal texts without words in api/web/labels.py REFUSALS: {missing}"
    assert built <= FORMATTED | NAMED, f"new built refusal texts: {sorted(built - FORMATTED)}"
    for constant in (LOST_RACE, IN_USE, StepRefused.UNSEEN):
        assert constant in REFUSALS, constant
    assert consent_parts() <= set(CONSENT_PARTS), sorted(consent_parts() - set(CONSENT_PARTS))


@pytest.mark.parametrize("lang", ["nl", "fr", "de"])
def test_a_refusal_reads_in_the_users_language(lang: str) -> None:
    translate = Translator(lang)
    for english in REFUSALS:
        said = refusal_text(translate, english)
        assert said and said != english and english.rstrip(".") not in said, (lang, english)
    stage = refusal_text(translate, "not allowed in stage in_progress (needs: offered)")
    assert stage is not None and "in_progress" not in stage and "not allowed" not in stage
    assert translate("In care") in stage
    ended = refusal_text(translate, "not allowed in stage closed: the referral has ended")
    assert ended is not None and "ended" not in ended
    lacks = refusal_text(translate, "the consent lacks: expiry, how it was signed")
    assert lacks is not None and "lacks" not in lacks and "expiry" not in lacks
    # a text the UI does not know is not shown in English on a page in another language
    assert refusal_text(translate, "some new refusal nobody translated") is None


def test_in_english_an_unknown_refusal_is_shown_as_it_is() -> None:
    assert refusal_text(Translator("en"), "some new refusal") == "some new refusal"
    assert refusal_text(Translator("en"), None) is None
