"""`referral policy explain` prints the decision and the ids of the deciding policies."""

from __future__ import annotations

from typer.testing import CliRunner

from services.policy_cli import app

runner = CliRunner()


def test_explain_clinical_to_a_prosecutor_is_denied_by_the_forbid() -> None:
    args = ["explain", "--role", "prosecutor", "--sector", "justice", "--relation", "referrer"]
    result = runner.invoke(app, [*args, "--category", "clinical", "--consent", "active"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == ["DENY", "disclosure.forbid-clinical-to-justice"]


def test_explain_an_allowed_minimal_disclosure() -> None:
    args = ["explain", "--role", "care_worker", "--sector", "health", "--relation", "care_team"]
    result = runner.invoke(app, [*args, "--category", "judicial_context"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[:2] == [
        "ALLOW",
        "disclosure.permit-care-team-minimal-judicial-context-with-consent",
    ]
    assert "minimal" in lines[2]


def test_explain_an_action_denied_by_default() -> None:
    args = ["explain", "--role", "admin", "--sector", "audit", "--relation", "framework_member"]
    result = runner.invoke(app, [*args, "--action", "view_referral", "--consent", "none"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == "DENY"
    assert "denied by default" in result.output


def test_explain_an_unknown_action_is_denied_with_the_reason() -> None:
    args = ["explain", "--role", "admin", "--sector", "audit", "--relation", "outsider"]
    result = runner.invoke(app, [*args, "--action", "delete_everything"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == "DENY"
    assert "unknown action" in result.output


def test_explain_needs_exactly_one_question() -> None:
    args = ["explain", "--role", "admin", "--sector", "audit", "--relation", "outsider"]
    assert runner.invoke(app, args).exit_code != 0
