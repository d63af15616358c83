"""``ophion instrument`` and ``ophion uninstrument``: parse, plan, print the plan, apply."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ophion_cli.options import ApiOption, TokenOption
from ophion_cli.output import instrument as show

if TYPE_CHECKING:
    from ophiond.api.client import ApiClient
    from ophiond.containers.verify import FirstSeen

app = typer.Typer()

LANGUAGE_HELP = "python, nodejs, java, dotnet, go or php; detected when omitted."


@app.command()
def instrument(
    container: Annotated[str, typer.Argument(help="The running container's name or id.")],
    language: Annotated[str | None, typer.Argument(help=LANGUAGE_HELP, show_default=False)] = None,
    service_name: Annotated[
        str | None,
        typer.Option(
            "--service-name",
            help="service.name of its telemetry. Default: the compose service label, else the "
            "container's name (an OTEL_SERVICE_NAME set in the container wins).",
            show_default=False,
        ),
    ] = None,
    endpoint: Annotated[
        str | None,
        typer.Option(
            help="OTLP/HTTP URL the container sends to. Default: the local ophiond's OTLP/HTTP "
            "address as the container reaches it (127.0.0.1 with host networking, the host's "
            "address on a bridge network).",
            show_default=False,
        ),
    ] = None,
    attr: Annotated[
        list[str] | None,
        typer.Option(
            "--attr",
            metavar="KEY=VALUE",
            help="An extra resource attribute (repeatable).",
            show_default=False,
        ),
    ] = None,
    source: Annotated[
        Path | None,
        typer.Option(
            "--from",
            help="Local agent artifacts instead of the official release locations: a wheelhouse "
            "directory (python), a directory of npm tarballs (nodejs), the Java agent jar, the "
            ".NET release zip, a local image (go) or a prepared bundle directory (php).",
            show_default=False,
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Print the language, bundle, environment changes and recreate plan; change nothing.",
        ),
    ] = False,
    no_verify: Annotated[
        bool,
        typer.Option(
            "--no-verify", help="Do not wait for telemetry (only check that the app keeps running)."
        ),
    ] = False,
    timeout: Annotated[
        float,
        typer.Option(min=1, help="Seconds to wait for the first telemetry before rolling back."),
    ] = 120.0,
    force: Annotated[
        bool, typer.Option("--force", help="Redo the injection of an instrumented container.")
    ] = False,
    api: ApiOption = None,
    token: TokenOption = None,
) -> None:
    """Add OpenTelemetry to a running Docker container; keep it only when its telemetry arrives."""
    from ophiond.containers.engine import connect
    from ophiond.containers.inject import parse_attributes
    from ophiond.containers.operation import Request, apply, plan

    request = Request(
        container=container,
        language=language.lower() if language else None,
        service_name=service_name,
        endpoint=endpoint,
        attributes=parse_attributes(attr or []),
        source=_local(source),
        force=force,
    )
    daemon = None
    listen_http = None
    if not (no_verify and endpoint):
        from ophion_cli.options import client

        daemon = client(api, token)
        listen_http = daemon.status()["listen"].get("http")
    docker = connect()
    progress = show.progress()
    the_plan = plan(docker, request, listen_http, _cache_dir(), dry_run, progress)
    show.plan(the_plan)
    if dry_run:
        show.dry_run()
        return
    watch = None if daemon is None or no_verify else first_seen_over(daemon)
    outcome = apply(docker, the_plan, watch, timeout, progress)
    show.outcome(the_plan, outcome)


@app.command()
def uninstrument(
    container: Annotated[str, typer.Argument(help="The container's name or id.")],
) -> None:
    """Take ophion's injection out of a container: recreate it as it was before."""
    from ophiond.containers.engine import connect
    from ophiond.containers.operation import plan_removal, remove

    docker = connect()
    removal = plan_removal(docker, container)
    show.removal(removal)
    remove(docker, removal, show.progress())
    show.removed(removal)


def _local(source: Path | None) -> Path | None:
    """An existing --from path made absolute; anything else as given (Go's is an image name)."""
    if source is None:
        return None
    expanded = source.expanduser()
    return expanded.absolute() if expanded.exists() else source


def _cache_dir() -> Path:
    from ophiond.config import load_settings

    return Path(load_settings().validate().paths.data_dir) / "instrumentation"


def first_seen_over(daemon: ApiClient) -> FirstSeen:
    """How ``ophion instrument`` asks the daemon, through its API, whether the injection's
    telemetry arrived."""
    from ophiond.api.contract import FirstSeenQuery

    def first_seen(attribute: str, since: str) -> Mapping[str, Any]:
        return daemon.first_seen(FirstSeenQuery(attribute, since))

    return first_seen
