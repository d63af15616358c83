"""``ophion token``: a new token, the list of tokens, a revocation.

Rich is imported when something is printed (as for the other commands that print little).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ophiond.api.contract import TokenCreated, TokenInfo

import typer

from ophion_cli.output import stderr_console, stdout_console


def created(document: TokenCreated) -> None:
    """The new token alone on stdout, so TOKEN=$(ophion token create ...) works; the rest on
    stderr."""
    typer.echo(document["token"])
    stderr_console().print(
        f"created token {document['name']!r} with the {document['role']} role; "
        "store it now, it is not shown again"
    )


def token_list(tokens: list[TokenInfo]) -> None:
    """Name, role and creation time of each token; "no tokens" on stderr when there is none."""
    from rich.table import Table

    if not tokens:
        stderr_console().print("no tokens")
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("name", "role", "created"):
        table.add_column(column)
    for token in tokens:
        table.add_row(token["name"], token["role"], token["created_at"])
    stdout_console().print(table)


def revoked(name: str) -> None:
    """The confirmation of ``ophion token revoke``."""
    typer.echo(f"revoked token {name!r}")
