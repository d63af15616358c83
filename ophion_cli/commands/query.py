"""The query commands: services, traces, trace, logs, metrics, map, and tui over them.

Each one checks its arguments (a bad time or duration is a usage error naming the accepted
forms), asks the daemon's API, and renders the answer, or prints it with ``--json``.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from ophion_cli.options import (
    ApiOption,
    JsonOption,
    SinceOption,
    TokenOption,
    client,
    usage_errors,
)
from ophion_cli.output import print_json, print_json_line, views

app = typer.Typer()

ServiceOption = Annotated[str | None, typer.Option("--service", "-s", help="Only this service.")]


@app.command()
def services(
    since: SinceOption = "1h",
    api: ApiOption = None,
    token: TokenOption = None,
    json_output: JsonOption = False,
) -> None:
    """Each service's request rate, error rate and p50/p95/p99 latency."""
    from ophiond.api.contract import ServicesQuery

    with usage_errors():
        doc = client(api, token).services(ServicesQuery(since))
    print_json(doc) if json_output else views.services(doc)


@app.command()
def traces(
    service: ServiceOption = None,
    name: Annotated[
        str | None, typer.Option("--name", "-n", help="Only traces with a span of this name.")
    ] = None,
    min_duration: Annotated[
        str | None, typer.Option("--min-duration", help="Traces at least this long (250ms, 1.5s).")
    ] = None,
    max_duration: Annotated[
        str | None, typer.Option("--max-duration", help="Traces at most this long.")
    ] = None,
    status: Annotated[
        str | None,
        typer.Option("--status", help="ok or error: traces without or with an error span."),
    ] = None,
    attr: Annotated[
        list[str] | None,
        typer.Option(
            "--attr", help="KEY=VALUE a span or resource attribute must have; repeatable."
        ),
    ] = None,
    since: SinceOption = "1h",
    limit: Annotated[
        int, typer.Option("--limit", min=1, max=10_000, help="At most this many traces.")
    ] = 20,
    api: ApiOption = None,
    token: TokenOption = None,
    json_output: JsonOption = False,
) -> None:
    """Recent traces, newest first, filtered by service, span name, duration, status, attributes."""
    from ophiond.api.contract import TraceQuery

    query = TraceQuery(
        since=since,
        service=service,
        name=name,
        min_duration=min_duration,
        max_duration=max_duration,
        status=status,
        attr=tuple(attr or ()),
        limit=limit,
    )
    with usage_errors():
        doc = client(api, token).traces(query)
    print_json(doc) if json_output else views.traces(doc)


@app.command()
def trace(
    trace_id: Annotated[str, typer.Argument(help="The trace id, or a unique start of it.")],
    span: Annotated[
        str | None, typer.Option("--span", help="Show this span's subtree and details.")
    ] = None,
    api: ApiOption = None,
    token: TokenOption = None,
    json_output: JsonOption = False,
) -> None:
    """One trace as a waterfall: the span tree, timing bars, errors, events, the critical path."""
    from ophiond.errors import OphionError

    doc: Any = client(api, token).trace(trace_id)
    if span is not None:
        matches = [s for s in doc["spans"] if s["span_id"].startswith(span.lower())]
        if len(matches) != 1:
            raise OphionError(
                f"no span {span} in trace {doc['trace_id']}"
                if not matches
                else f"{span} is the start of several span ids",
                hint="ophion trace " + doc["trace_id"] + " --json lists the span ids",
            )
        span = matches[0]["span_id"]
    if json_output:
        if span is not None:
            spans = _subtree(doc["spans"], span)
            kept = {s["span_id"] for s in spans}
            critical = [s for s in doc["critical_path"] if s in kept]
            doc = {**doc, "spans": spans, "critical_path": critical}
        print_json(doc)
    else:
        views.waterfall(doc, focus=span)


def _subtree(spans: list[dict[str, Any]], root: str) -> list[dict[str, Any]]:
    keep = {root}
    changed = True
    while changed:
        changed = False
        for s in spans:
            if s["parent_span_id"] in keep and s["span_id"] not in keep:
                keep.add(s["span_id"])
                changed = True
    return [s for s in spans if s["span_id"] in keep]


@app.command()
def logs(
    service: ServiceOption = None,
    severity: Annotated[
        str | None,
        typer.Option(
            "--severity", help="This level and above: trace, debug, info, warn, error, fatal."
        ),
    ] = None,
    grep: Annotated[
        str | None,
        typer.Option("--grep", "-g", help="Only records whose body contains this text (any case)."),
    ] = None,
    trace_id: Annotated[
        str | None, typer.Option("--trace", help="Only records of this trace (id or its start).")
    ] = None,
    since: SinceOption = "1h",
    limit: Annotated[
        int,
        typer.Option("--limit", min=1, max=100_000, help="At most this many records (the newest)."),
    ] = 100,
    follow: Annotated[
        bool,
        typer.Option("--follow", "-f", help="Keep printing records as they arrive; Ctrl-C ends."),
    ] = False,
    api: ApiOption = None,
    token: TokenOption = None,
    json_output: JsonOption = False,
) -> None:
    """Log records, oldest first; with -f, new ones as the daemon receives them."""
    from ophiond.api.contract import LogQuery

    query = LogQuery(
        since=since, service=service, severity=severity, grep=grep, trace=trace_id, limit=limit
    )
    api_client = client(api, token)
    if not follow:
        with usage_errors():
            doc = api_client.logs(query)
        print_json(doc) if json_output else views.logs(doc)
        return
    show = print_json_line if json_output else views.live_logs()
    with usage_errors():
        stream = api_client.follow_logs(query)
    try:
        with stream:
            for record in stream:
                if "skipped" in record:
                    views.note_error(
                        f"{record['skipped']} record(s) skipped: this terminal could not keep up"
                    )
                    continue
                show(record)
    except KeyboardInterrupt:
        return


@app.command()
def metrics(
    name: Annotated[
        str | None, typer.Argument(help="A metric to chart; without it, list the metrics.")
    ] = None,
    service: ServiceOption = None,
    since: SinceOption = "1h",
    step: Annotated[
        str | None,
        typer.Option("--step", help="Width of a time step (30s, 5m); default: about 60 steps."),
    ] = None,
    api: ApiOption = None,
    token: TokenOption = None,
    json_output: JsonOption = False,
) -> None:
    """List metrics, or chart one over time per series (rates, values, p50/p95/p99)."""
    from ophiond.api.contract import MetricQuery

    with usage_errors():
        if name is None:
            names = client(api, token).metrics(since)
            print_json(names) if json_output else views.metric_list(names)
            return
        series = client(api, token).metric(MetricQuery(name, since, service, step))
    print_json(series) if json_output else views.metric_series(series)


@app.command("map")
def service_map(
    since: SinceOption = "1h",
    api: ApiOption = None,
    token: TokenOption = None,
    json_output: JsonOption = False,
) -> None:
    """Which services call which: calls, error rate and p95 latency per edge."""
    with usage_errors():
        doc = client(api, token).service_map(since)
    print_json(doc) if json_output else views.service_map(doc)


@app.command()
def tui(
    since: Annotated[
        str,
        typer.Option(
            "--since",
            help="The window to start with, back from now (15m, 2h); w in the app steps "
            "through 5m, 15m, 1h, 6h and 24h.",
        ),
    ] = "15m",
    api: ApiOption = None,
    token: TokenOption = None,
) -> None:
    """A terminal UI over the daemon: services, traces, logs, metrics, the map (keys: ? in the app)."""
    from ophion_cli import tui as terminal_ui
    from ophiond.api.contract import check_since

    with usage_errors():
        check_since(since)
    terminal_ui.run(api, token, since)
