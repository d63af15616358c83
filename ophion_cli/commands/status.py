"""``ophion status``: is the daemon up, what it received, rejected and stored."""

from __future__ import annotations

import typer

from ophion_cli.options import ApiOption, JsonOption, TokenOption, client
from ophion_cli.output import print_json
from ophion_cli.output import status as show

app = typer.Typer()


@app.command()
def status(
    api: ApiOption = None, token: TokenOption = None, json_output: JsonOption = False
) -> None:
    """Is ophiond up; what it received, rejected and stored; how much disk it uses."""
    document = client(api, token).status()
    if json_output:
        print_json(document)
    else:
        show.status(document)
