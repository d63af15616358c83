"""The ``ophion`` command: parse -> call the core or the API -> render.

Heavy modules (Rich tables, DuckDB) are imported inside the commands so ``ophion --help`` stays
fast. Expected failures are :class:`OphionError`; :func:`run` prints them as one line plus a
hint on stderr and exits 1, without a traceback.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any

import typer

from ophion_cli import instrument_cmd, query, render
from ophion_cli.options import ApiOption, JsonOption, TokenOption
from ophion_cli.options import client as _client
from ophion_cli.output import error_line, print_json
from ophion_cli.token_cmd import token_app
from ophiond.errors import DaemonNotRunning, OphionError

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


daemon_app = typer.Typer(
    help="Run, start, stop and install the ophiond daemon.", no_args_is_help=True
)
app.add_typer(daemon_app, name="daemon")
app.add_typer(token_app, name="token")


def _paths() -> Any:
    from ophiond.config import load_settings

    return load_settings().validate().paths


# ---------------------------------------------------------------------------------------------
# ophion status


@app.command()
def status(
    api: ApiOption = None, token: TokenOption = None, json_output: JsonOption = False
) -> None:
    """Is ophiond up; what it received, rejected and stored; how much disk it uses."""
    document = _client(api, token).get("/status")
    if json_output:
        print_json(document)
    else:
        render.status(document)


query.register(app)
instrument_cmd.register(app)


# ---------------------------------------------------------------------------------------------
# ophion sql


@app.command()
def sql(
    query: Annotated[
        str,
        typer.Argument(help="One SELECT over spans, span_events, span_links, logs, metric_points."),
    ],
    api: ApiOption = None,
    token: TokenOption = None,
    json_output: JsonOption = False,
    csv_output: Annotated[
        bool, typer.Option("--csv", help="Print CSV with a header row instead of a table.")
    ] = False,
    max_rows: Annotated[
        int, typer.Option("--max-rows", min=1, help="Return at most this many rows.")
    ] = 10_000,
) -> None:
    """Run a read-only SQL query over the stored telemetry (docs/sql.md lists the views)."""
    if json_output and csv_output:
        raise typer.BadParameter("choose one of --json and --csv", param_hint="--csv")
    try:
        result = _client(api, token).post("/sql", {"sql": query, "max_rows": max_rows})
    except DaemonNotRunning:
        if api or os.environ.get("OPHION_API"):
            raise
        result = _sql_without_daemon(query, max_rows)
    if json_output:
        print_json([dict(zip(result["columns"], row, strict=True)) for row in result["rows"]])
    elif csv_output:
        render.query_csv(result)
    else:
        render.query_result(result)
    if result["truncated"]:
        from rich.console import Console

        Console(stderr=True).print(
            f"[yellow]note:[/] only the first {max_rows} rows are shown; raise --max-rows or add LIMIT"
        )


def _sql_without_daemon(query: str, max_rows: int) -> dict[str, Any]:
    """The daemon is down: read the partition files directly, read-only."""
    from rich.console import Console

    from ophiond.config import load_settings
    from ophiond.store.journal import unstored_bytes
    from ophiond.store.query import open_read_only, run_query

    settings = load_settings().validate()
    console = Console(stderr=True)
    console.print(
        f"[dim]ophiond is not running; reading {settings.paths.data_dir} directly (read-only)[/]"
    )
    partitions = open_read_only(
        settings.paths.data_dir, settings.memory_limit, settings.sql_max_spill
    )
    try:
        # (segments up to the partitions' journal position are in DuckDB, its WAL included)
        if unstored_bytes(settings.paths.data_dir, partitions.journal_position()):
            console.print(
                "[yellow]ophiond stopped without a clean shutdown: records it acknowledged last "
                "are still in its journal and not in these results; they are stored when it "
                "starts again[/]"
            )
        return run_query(partitions, query, max_rows, settings.sql_timeout).to_json()
    finally:
        partitions.close()


# ---------------------------------------------------------------------------------------------
# ophion daemon ...


@daemon_app.command(
    "run",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def daemon_run(ctx: typer.Context) -> None:
    """Run ophiond in the foreground (what systemd runs). Extra flags go to ophiond."""
    from ophiond.control import ophiond_command

    command = ophiond_command()
    os.execv(command[0], [*command, *ctx.args])


@daemon_app.command(
    "start",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def daemon_start(
    ctx: typer.Context,
    timeout: Annotated[float, typer.Option(help="Seconds to wait until it serves.")] = 30.0,
) -> None:
    """Start ophiond in the background (pid file and log in the state directory).

    Extra flags go to ophiond, e.g. ophion daemon start --grpc-listen 127.0.0.1:14317.
    """
    from ophiond.control import start

    paths = _paths()
    running = start(paths, list(ctx.args), timeout)
    render.started(running, paths)


@daemon_app.command("stop")
def daemon_stop(
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait while it drains its queue.")
    ] = 60.0,
) -> None:
    """Stop the background ophiond: it commits what it accepted, then exits."""
    from ophiond.control import stop

    pid = stop(_paths(), timeout)
    if pid is None:
        render.note("ophiond is not running")
    else:
        render.note(f"ophiond (pid {pid}) stopped")


@daemon_app.command("status")
def daemon_status(
    api: ApiOption = None, token: TokenOption = None, json_output: JsonOption = False
) -> None:
    """Whether ophiond runs, with its pid and addresses. Exit code 3 when it does not."""
    try:
        document = _client(api, token).get("/status")
    except DaemonNotRunning as e:
        if json_output:
            print_json({"running": False, "reason": e.message})
        else:
            render.note(f"ophiond is not running ({e.hint})")
        raise typer.Exit(3) from None
    summary = {
        "running": True,
        "pid": document["pid"],
        "version": document["version"],
        "uptime_s": document["uptime_s"],
        "listen": document["listen"],
    }
    if json_output:
        print_json(summary)
    else:
        render.daemon_summary(summary)


@daemon_app.command("install")
def daemon_install(
    user: Annotated[
        bool, typer.Option("--user", help="Install a user unit instead of the system unit.")
    ] = False,
    now: Annotated[bool, typer.Option("--now", help="Also enable and start it.")] = False,
) -> None:
    """Install ophiond as a systemd service (system-wide needs root; --user for your user)."""
    from ophiond.systemd import install_unit

    result = install_unit(user, now)
    render.installed(result, user, now)


# ---------------------------------------------------------------------------------------------


def run() -> None:
    """Console-script entry point: expected failures become one line on stderr and end with
    the error's exit code (1)."""
    try:
        app()  # click's standalone mode handles usage errors (exit 2) and Ctrl-C itself
    except OphionError as e:
        error_line(e)
        sys.exit(e.exit_code)
