"""``ophion token``: create, list and revoke the bearer tokens of the daemon's TCP API.

These call the admin endpoints ``/api/v1/tokens``: through the Unix socket (which has admin
rights), or over TCP with an admin token.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from ophion_cli.options import ApiOption, JsonOption, TokenOption, client
from ophion_cli.output import print_json
from ophion_cli.output import tokens as show

app = typer.Typer(
    help="Create, list and revoke bearer tokens for the daemon's TCP API.", no_args_is_help=True
)


class RoleName(StrEnum):
    """The roles a token can have; each includes the ones before it."""

    read = "read"
    operate = "operate"
    admin = "admin"


@app.command("create")
def create(
    name: Annotated[
        str, typer.Argument(help="A name for the token, e.g. who or what will use it.")
    ],
    role: Annotated[
        RoleName,
        typer.Option(
            "--role",
            case_sensitive=False,
            help="read: queries; operate: also acknowledge alerts and run playbooks; "
            "admin: also tokens and configuration.",
        ),
    ],
    api: ApiOption = None,
    token: TokenOption = None,
    json_output: JsonOption = False,
) -> None:
    """Create a token. It is printed once, on stdout, and cannot be shown again."""
    document = client(api, token).create_token(name, role.value)
    if json_output:
        print_json(document)
    else:
        show.created(document)


@app.command("list")
def list_tokens(
    api: ApiOption = None, token: TokenOption = None, json_output: JsonOption = False
) -> None:
    """List the tokens: name, role and creation time (never the tokens themselves)."""
    document = client(api, token).tokens()
    if json_output:
        print_json(document)
    else:
        show.token_list(document["tokens"])


@app.command("revoke")
def revoke(
    name: Annotated[str, typer.Argument(help="The name of the token to revoke.")],
    api: ApiOption = None,
    token: TokenOption = None,
) -> None:
    """Revoke a token: the daemon refuses it from now on."""
    client(api, token).revoke_token(name)
    show.revoked(name)
