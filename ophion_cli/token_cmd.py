"""``ophion token``: create, list and revoke the bearer tokens of the daemon's TCP API.

These call the admin endpoints ``/api/v1/tokens``: through the Unix socket (which has admin
rights), or over TCP with an admin token.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import typer

from ophion_cli.options import ApiOption, JsonOption, TokenOption, client
from ophion_cli.output import print_json

token_app = typer.Typer(
    help="Create, list and revoke bearer tokens for the daemon's TCP API.", no_args_is_help=True
)


class RoleName(StrEnum):
    """The roles a token can have; each includes the ones before it."""

    read = "read"
    operate = "operate"
    admin = "admin"


@token_app.command("create")
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
    document = client(api, token).post("/tokens", {"name": name, "role": role.value})
    if json_output:
        print_json(document)
    else:
        _render_created(document)


@token_app.command("list")
def list_tokens(
    api: ApiOption = None, token: TokenOption = None, json_output: JsonOption = False
) -> None:
    """List the tokens: name, role and creation time (never the tokens themselves)."""
    document = client(api, token).get("/tokens")
    if json_output:
        print_json(document)
    else:
        _render_list(document["tokens"])


@token_app.command("revoke")
def revoke(
    name: Annotated[str, typer.Argument(help="The name of the token to revoke.")],
    api: ApiOption = None,
    token: TokenOption = None,
) -> None:
    """Revoke a token: the daemon refuses it from now on."""
    from urllib.parse import quote

    client(api, token).delete(f"/tokens/{quote(name, safe='')}")
    typer.echo(f"revoked token {name!r}")


# -- rendering --------------------------------------------------------------------------------


def _note(text: str) -> None:
    from rich.console import Console

    Console(stderr=True, highlight=False, soft_wrap=True).print(text)


def _render_created(document: dict[str, Any]) -> None:
    # The token alone on stdout, so TOKEN=$(ophion token create ...) works; the rest on stderr.
    typer.echo(document["token"])
    _note(
        f"created token {document['name']!r} with the {document['role']} role; "
        "store it now, it is not shown again"
    )


def _render_list(tokens: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    if not tokens:
        _note("no tokens")
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("name", "role", "created"):
        table.add_column(column)
    for token in tokens:
        table.add_row(token["name"], token["role"], token["created_at"])
    Console(highlight=False, soft_wrap=True).print(table)
