"""``ophion daemon run|start|stop|status|install``: the ophiond process and its service."""

from __future__ import annotations

import os
from typing import Annotated, Any

import typer

from ophion_cli.options import ApiOption, JsonOption, TokenOption, client
from ophion_cli.output import print_json
from ophion_cli.output import status as show
from ophiond.errors import DaemonNotRunning

app = typer.Typer(help="Run, start, stop and install the ophiond daemon.", no_args_is_help=True)


def _paths() -> Any:
    from ophiond.config import load_settings

    return load_settings().validate().paths


@app.command(
    "run",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def daemon_run(ctx: typer.Context) -> None:
    """Run ophiond in the foreground (what systemd runs). Extra flags go to ophiond."""
    from ophiond.control import ophiond_command

    command = ophiond_command()
    os.execv(command[0], [*command, *ctx.args])


@app.command(
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
    show.started(running, paths)


@app.command("stop")
def daemon_stop(
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait while it drains its queue.")
    ] = 60.0,
) -> None:
    """Stop the background ophiond: it commits what it accepted, then exits."""
    from ophiond.control import stop

    pid = stop(_paths(), timeout)
    if pid is None:
        show.note("ophiond is not running")
    else:
        show.note(f"ophiond (pid {pid}) stopped")


@app.command("status")
def daemon_status(
    api: ApiOption = None, token: TokenOption = None, json_output: JsonOption = False
) -> None:
    """Whether ophiond runs, with its pid and addresses. Exit code 3 when it does not."""
    try:
        document = client(api, token).status()
    except DaemonNotRunning as e:
        if json_output:
            print_json({"running": False, "reason": e.message})
        else:
            show.note(f"ophiond is not running ({e.hint})")
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
        show.daemon_summary(summary)


@app.command("install")
def daemon_install(
    user: Annotated[
        bool, typer.Option("--user", help="Install a user unit instead of the system unit.")
    ] = False,
    now: Annotated[bool, typer.Option("--now", help="Also enable and start it.")] = False,
) -> None:
    """Install ophiond as a systemd service (system-wide needs root; --user for your user)."""
    from ophiond.systemd import install_unit

    result = install_unit(user, now)
    show.installed(result, user, now)
