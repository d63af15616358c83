"""Options shared by the commands that talk to the daemon, and the client they make."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from ophiond.api.client import ApiClient

ApiOption = Annotated[
    str | None,
    typer.Option(
        "--api",
        envvar="OPHION_API",
        help="The daemon's API: its socket (PATH or unix:PATH) or its TCP API "
        "(http://HOST:PORT, with a token). Default: the socket in OPHION_HOME or the user state "
        "directory, else the system service's.",
        show_default=False,
    ),
]
TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="OPHION_TOKEN",
        help="Bearer token for a TCP API (--api http://...). Default: the admin token of your "
        "own daemon when it is the one at that address.",
        show_default=False,
    ),
]
SinceOption = Annotated[
    str,
    typer.Option(
        "--since",
        help="Window start: a duration back from now (30s, 15m, 2h, 1d) or an ISO time.",
    ),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print one JSON document instead of a table.")
]


def client(api: str | None, token: str | None = None) -> ApiClient:
    """An API client for the daemon named by ``--api``/``OPHION_API``, or the local one;
    ``token`` (else ``OPHION_TOKEN``) is sent to a TCP API."""
    from ophiond.api.client import connect

    return connect(api, token)


@contextmanager
def usage_errors() -> Iterator[None]:
    """Show a value the API's contract refuses as a usage error of the option of the same name
    (``min_duration`` is ``--min-duration``). The client checks a request before sending it, so
    this happens without a daemon."""
    from ophiond.errors import InvalidParameter

    try:
        yield
    except InvalidParameter as e:
        text = e.message.removeprefix(f"{e.param}: ")
        raise typer.BadParameter(
            f"{text}; {e.hint}" if e.hint else text, param_hint="--" + e.param.replace("_", "-")
        ) from None
