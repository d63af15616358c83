"""``ophion instrument`` and ``ophion uninstrument``: parse, plan, print the plan, apply."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ophion_cli.options import ApiOption, TokenOption

if TYPE_CHECKING:
    from ophiond.containers.operation import Outcome, Plan, Removal

LANGUAGE_HELP = "python, nodejs, java, dotnet, go or php; detected when omitted."


def register(app: typer.Typer) -> None:
    app.command()(instrument)
    app.command()(uninstrument)


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
    from rich.console import Console

    from ophiond.containers.engine import connect
    from ophiond.containers.inject import parse_attributes
    from ophiond.containers.operation import Request, apply, plan

    console = Console(highlight=False)
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
        listen_http = daemon.get("/status")["listen"].get("http")
    docker = connect()
    progress = _progress(console)
    the_plan = plan(docker, request, listen_http, _cache_dir(), dry_run, progress)
    _print_plan(console, the_plan)
    if dry_run:
        console.print("[dim]dry run: nothing was changed[/]")
        return
    outcome = apply(docker, the_plan, None if no_verify else daemon, timeout, progress)
    _print_outcome(console, the_plan, outcome)


def uninstrument(
    container: Annotated[str, typer.Argument(help="The container's name or id.")],
) -> None:
    """Take ophion's injection out of a container: recreate it as it was before."""
    from rich.console import Console

    from ophiond.containers.engine import connect
    from ophiond.containers.operation import plan_removal, remove

    console = Console(highlight=False)
    docker = connect()
    removal = plan_removal(docker, container)
    _print_removal(console, removal)
    remove(docker, removal, _progress(console))
    console.print(f"[green]✓[/] {removal.container.name} runs without ophion's instrumentation")


def _local(source: Path | None) -> Path | None:
    """An existing --from path made absolute; anything else as given (Go's is an image name)."""
    if source is None:
        return None
    expanded = source.expanduser()
    return expanded.absolute() if expanded.exists() else source


def _cache_dir() -> Path:
    from ophiond.config import load_settings

    return Path(load_settings().validate().paths.data_dir) / "instrumentation"


def _progress(console: Any) -> Any:
    def say(message: str) -> None:
        console.print(f"[dim]… {message}[/]")

    return say


def _print_plan(console: Any, the_plan: Plan) -> None:
    from rich.markup import escape

    container = the_plan.container
    image = container.attrs["Config"].get("Image")
    console.print(
        f"[bold]{escape(the_plan.name)}[/] ({container.id[:12]}, image {escape(str(image))})"
    )
    how = "named on the command line" if the_plan.detection.language != the_plan.language else ""
    evidence = "; ".join(the_plan.detection.evidence)
    console.print(f"  language  [bold]{the_plan.language}[/]  [dim]{escape(how or evidence)}[/]")
    bundle = the_plan.bundle
    console.print(f"  bundle    {escape(bundle.description)}  [dim]({bundle.state})[/]")
    console.print(
        f"  service   [bold]{escape(the_plan.service_name)}[/]  [dim]{escape(_service_why(the_plan))}[/]"
    )
    console.print(
        f"  endpoint  {escape(the_plan.settings.endpoint)}  [dim]{escape(the_plan.endpoint_reason)}[/]"
    )
    target = "the sidecar's environment" if the_plan.sidecar is not None else "environment"
    console.print(f"  {target}:")
    for change in the_plan.changes:
        if change.kept:
            console.print(
                f"    [yellow]=[/] {change.name}={escape(change.before or '')}  "
                "[dim](yours, kept)[/]"
            )
        elif change.before is None:
            console.print(f"    [green]+[/] {change.name}={escape(change.after or '')}")
        elif change.changed:
            console.print(
                f"    [cyan]~[/] {change.name}={escape(change.after or '')}  "
                f"[dim](was {escape(change.before)})[/]"
            )
    console.print("  plan:")
    for number, step in enumerate(the_plan.steps(), 1):
        console.print(f"    {number}. {escape(step)}")


def _service_why(the_plan: Plan) -> str:
    if the_plan.service_name != the_plan.settings.service_name:
        return "OTEL_SERVICE_NAME set in the container"
    return the_plan.service_reason


def _print_outcome(console: Any, the_plan: Plan, outcome: Outcome) -> None:
    from rich.markup import escape

    service = the_plan.service_name
    if outcome.arrival is None:
        console.print(
            f"[green]✓[/] {escape(the_plan.name)} runs with OpenTelemetry ({the_plan.language}); "
            "not verified (--no-verify)"
        )
    else:
        first = outcome.arrival
        console.print(
            f"[green]✓[/] {escape(the_plan.name)} is instrumented: its first telemetry arrived "
            f"after {first.waited_s:.1f}s as service [bold]{escape(first.service_name)}[/]"
        )
        console.print(f"  first: {first.signal} {escape(first.what)!r} at {first.at}")
        service = first.service_name
    console.print(f"  look at it: ophion traces --service {escape(service)}")
    console.print(f"  take it out: ophion uninstrument {escape(the_plan.name)}")


def _print_removal(console: Any, removal: Removal) -> None:
    from rich.markup import escape

    record = removal.record
    console.print(
        f"[bold]{escape(str(removal.container.name))}[/]: {record.language} instrumentation "
        f"{record.instrumentation_id} from {record.instrumented_at}"
    )
    if removal.sidecar is not None:
        console.print(f"  remove the sidecar {escape(str(removal.sidecar.name))}")
        return
    for name, before in sorted(record.env_before.items()):
        restored = "unset" if before is None else f"back to {before!r}"
        console.print(f"  {name}: {escape(restored)}")
    if record.target:
        console.print(f"  unmount {record.target}")
