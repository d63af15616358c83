"""``ophion instrument`` and ``ophion uninstrument``: progress, the plan, the outcome.

Rich is imported when something is printed; the plan's types only for the type checker, so
importing this module loads neither Rich nor the container engine.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

    from ophiond.containers.operation import Outcome, Plan, Removal


def _console() -> Console:
    from rich.console import Console

    return Console(highlight=False)


def progress() -> Callable[[str], None]:
    """A callback that prints each step the engine reports, dimmed."""
    console = _console()

    def say(message: str) -> None:
        console.print(f"[dim]… {message}[/]")

    return say


def plan(the_plan: Plan) -> None:
    """The container, its language, bundle, service, endpoint, environment changes and steps."""
    from rich.markup import escape

    console = _console()
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


def dry_run() -> None:
    """The last line of ``--dry-run``."""
    _console().print("[dim]dry run: nothing was changed[/]")


def outcome(the_plan: Plan, the_outcome: Outcome) -> None:
    """Instrumented (with the first telemetry that arrived, unless --no-verify), and what next."""
    from rich.markup import escape

    console = _console()
    service = the_plan.service_name
    if the_outcome.arrival is None:
        console.print(
            f"[green]✓[/] {escape(the_plan.name)} runs with OpenTelemetry ({the_plan.language}); "
            "not verified (--no-verify)"
        )
    else:
        first = the_outcome.arrival
        console.print(
            f"[green]✓[/] {escape(the_plan.name)} is instrumented: its first telemetry arrived "
            f"after {first.waited_s:.1f}s as service [bold]{escape(first.service_name)}[/]"
        )
        console.print(f"  first: {first.signal} {escape(first.what)!r} at {first.at}")
        service = first.service_name
    console.print(f"  look at it: ophion traces --service {escape(service)}")
    console.print(f"  take it out: ophion uninstrument {escape(the_plan.name)}")


def removal(the_removal: Removal) -> None:
    """What ``ophion uninstrument`` takes out: the sidecar, or each variable and the mount."""
    from rich.markup import escape

    console = _console()
    record = the_removal.record
    console.print(
        f"[bold]{escape(str(the_removal.container.name))}[/]: {record.language} instrumentation "
        f"{record.instrumentation_id} from {record.instrumented_at}"
    )
    if the_removal.sidecar is not None:
        console.print(f"  remove the sidecar {escape(str(the_removal.sidecar.name))}")
        return
    for name, before in sorted(record.env_before.items()):
        restored = "unset" if before is None else f"back to {before!r}"
        console.print(f"  {name}: {escape(restored)}")
    if record.target:
        console.print(f"  unmount {record.target}")


def removed(the_removal: Removal) -> None:
    """The last line of ``ophion uninstrument``."""
    _console().print(
        f"[green]✓[/] {the_removal.container.name} runs without ophion's instrumentation"
    )
