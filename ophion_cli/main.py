"""The ``ophion`` command: the root app, its groups of commands and the console-script entry point.

The commands live in :mod:`ophion_cli.commands`, one module per group, each on its own Typer
app; this module adds them, in the order ``ophion --help`` lists them. Heavy modules (Rich
tables, DuckDB) are imported inside the commands so ``ophion --help`` stays fast. Expected
failures are :class:`OphionError`; :func:`run` prints them as one line plus a hint on stderr
and exits 1, without a traceback.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from ophion_cli.commands import audit, daemon, instrument, query, sql, status, token
from ophion_cli.output import error_line
from ophiond.errors import OphionError

app = typer.Typer(
    name="ophion",
    help="Observability for this host: query what ophiond stored, manage the daemon.",
    no_args_is_help=True,
    # Completion scripts are generated into completions/ (static, no Python per Tab).
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        from ophiond import __version__

        typer.echo(f"ophion {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """Observability for this host: query what ophiond stored, manage the daemon."""


# Groups added without a name are merged into the top level, their commands in this order.
app.add_typer(status.app)
app.add_typer(query.app)
app.add_typer(instrument.app)
app.add_typer(sql.app)
app.add_typer(audit.app)
app.add_typer(daemon.app, name="daemon")
app.add_typer(token.app, name="token")


def run() -> None:
    """Console-script entry point: expected failures become one line on stderr and end with
    the error's exit code (1)."""
    try:
        app()  # click's standalone mode handles usage errors (exit 2) and Ctrl-C itself
    except OphionError as e:
        error_line(e)
        sys.exit(e.exit_code)
