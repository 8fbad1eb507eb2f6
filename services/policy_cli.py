"""`referral policy ...`: ask the Cedar policies why they decide as they do."""

from __future__ import annotations

from typing import Annotated

import typer

from services.policy import ConsentState, DataCategory, Relation, explain
from services.principal import Role, Sector

app = typer.Typer(no_args_is_help=True, help="Inspect the Cedar policies.")


@app.callback()
def policy() -> None:
    """Inspect the Cedar authorization and disclosure policies."""


@app.command("explain")
def explain_command(
    role: Annotated[Role, typer.Option(help="Role of the person asking.")],
    sector: Annotated[Sector, typer.Option(help="Sector of the person asking.")],
    relation: Annotated[Relation, typer.Option(help="Their organisation's relation to the case.")],
    category: Annotated[
        DataCategory | None, typer.Option(help="Data category to disclose.")
    ] = None,
    action: Annotated[str | None, typer.Option(help="Lifecycle or audit action.")] = None,
    consent: Annotated[
        ConsentState, typer.Option(help="State of a consent covering every purpose and category.")
    ] = ConsentState.ACTIVE,
) -> None:
    """Print ALLOW or DENY for a typical situation, then the ids of the deciding policies."""
    if (category is None) == (action is None):
        raise typer.BadParameter("give exactly one of --category or --action")
    subject = category.value if category is not None else str(action)
    decision = explain(role, sector, relation, subject, consent)
    typer.echo("ALLOW" if decision.allowed else "DENY")
    for policy_id in decision.policy_ids:
        typer.echo(policy_id)
    if decision.default_deny:
        typer.echo("(no policy permits this: denied by default)")
    if decision.projection == "minimal":
        typer.echo("(minimal subset of the category's fields only)")
    for error in decision.errors:
        typer.echo(f"error: {error}")
