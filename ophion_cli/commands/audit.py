"""``ophion audit``: what the daemon did or was told to do that changed something."""

from __future__ import annotations

from typing import Annotated

import typer

from ophion_cli.options import (
    ApiOption,
    JsonOption,
    SinceOption,
    TokenOption,
    client,
    usage_errors,
)
from ophion_cli.output import print_json
from ophion_cli.output import status as show

app = typer.Typer()


@app.command()
def audit(
    since: SinceOption = "7d",
    action: Annotated[
        str | None,
        typer.Option(
            "--action",
            help="Only this action (token.create), or the actions starting with a prefix "
            "ending in a dot (token.).",
        ),
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", min=1, max=10_000, help="At most this many entries.")
    ] = 100,
    api: ApiOption = None,
    token: TokenOption = None,
    json_output: JsonOption = False,
) -> None:
    """The audit log, newest first: daemon starts and stops, tokens, retention, lost data."""
    from ophiond.api.contract import AuditQuery

    with usage_errors():
        page = client(api, token).audit(AuditQuery(since, action, limit))
    print_json(page) if json_output else show.audit(page)
