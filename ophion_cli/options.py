"""Options shared by the commands that talk to the daemon, and the client they make."""

from __future__ import annotations

from typing import Annotated, Any

import typer

ApiOption = Annotated[
    str | None,
    typer.Option(
        "--api",
        envvar="OPHION_API",
        help="The daemon's API socket (path or unix:PATH). Default: the socket in OPHION_HOME "
        "or the user state directory, else the system service's.",
        show_default=False,
    ),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print one JSON document instead of a table.")
]


def client(api: str | None) -> Any:
    """An API client for the daemon named by ``--api``/``OPHION_API``, or the local one."""
    from ophiond.api.client import ApiClient, find_socket

    return ApiClient(find_socket(api))
