"""Rich views of the query results: services, traces, the waterfall, logs, metrics, the map.

Each view takes the API's JSON document and prints it; ``--json`` prints the same document.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

if TYPE_CHECKING:
    from ophiond.api.contract import (
        LogsPage,
        MetricSeries,
        MetricsPage,
        ServiceMapDoc,
        ServicesPage,
        TracesPage,
    )

_out = Console(highlight=False, soft_wrap=False)

# Services get colours in the order of their names, so a service keeps its colour everywhere.
_PALETTE = ("cyan", "magenta", "green", "yellow", "blue", "bright_red", "bright_cyan", "orange3")
_SEVERITY_STYLES = (
    (21, "bold white on red", "FATAL"),
    (17, "bold red", "ERROR"),
    (13, "yellow", "WARN"),
    (9, "green", "INFO"),
    (5, "blue", "DEBUG"),
    (1, "dim", "TRACE"),
)
_SPARKS = "▁▂▃▄▅▆▇█"


def human_ns(ns: int | float | None) -> str:
    """A duration for people: 850 µs, 12.3 ms, 1.52 s, 2m 03s."""
    if ns is None:
        return "-"
    if ns < 1_000:
        return f"{ns:.0f} ns"
    if ns < 1_000_000:
        return f"{ns / 1e3:.0f} µs"
    if ns < 1_000_000_000:
        return f"{ns / 1e6:.1f} ms"
    if ns < 60_000_000_000:
        return f"{ns / 1e9:.2f} s"
    minutes, seconds = divmod(ns / 1e9, 60)
    return f"{minutes:.0f}m {seconds:02.0f}s"


def service_colors(services: list[str]) -> dict[str, str]:
    return {s: _PALETTE[i % len(_PALETTE)] for i, s in enumerate(sorted(set(services)))}


def _service(name: str | None, colors: dict[str, str]) -> Text:
    return Text(name or "(no service)", style=colors.get(name or "", "white"))


def _since(doc: Mapping[str, Any]) -> str:
    """The window start of a document, as people read it: ``2026-11-23 10:00:01 UTC``."""
    return str(doc["since"])[:19].replace("T", " ") + " UTC"


def clock_time(iso: str | None) -> str:
    """``2026-11-23T10:00:01.234567Z`` -> ``10:00:01.234``."""
    if not iso:
        return "-"
    time_part = iso.split("T", 1)[-1].rstrip("Z")
    return time_part[:12]


# -- services ----------------------------------------------------------------------------------


def services(doc: ServicesPage) -> None:
    rows = doc["services"]
    if not rows:
        _out.print(f"[dim]no spans since {_since(doc)}[/]")
        return
    colors = service_colors([r["service"] or "" for r in rows])
    table = Table(header_style="bold", box=None, pad_edge=False)
    for column, justify in (
        ("service", "left"),
        ("req/s", "right"),
        ("errors", "right"),
        ("p50", "right"),
        ("p95", "right"),
        ("p99", "right"),
        ("spans", "right"),
        ("last seen", "left"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for row in rows:
        error_style = "red" if row["error_rate"] > 0.05 else ("yellow" if row["error_rate"] else "")
        table.add_row(
            _service(row["service"], colors),
            f"{row['request_rate']:.2f}",
            Text(f"{row['error_rate'] * 100:.1f}%", style=error_style),
            human_ns(row["p50_ns"]),
            human_ns(row["p95_ns"]),
            human_ns(row["p99_ns"]),
            f"{row['spans']:,}",
            clock_time(row["last_seen"]),
        )
    _out.print(table)
    if any(r["measured_by"] == "root_spans" for r in rows):
        _out.print("[dim]services without server spans are measured by their root spans[/]")


# -- traces ------------------------------------------------------------------------------------


def traces(doc: TracesPage) -> None:
    rows = doc["traces"]
    if not rows:
        _out.print(f"[dim]no traces match since {_since(doc)}[/]")
        return
    colors = service_colors([s for r in rows for s in r["services"]])
    table = Table(header_style="bold", box=None, pad_edge=False)
    for column, justify in (
        ("trace", "left"),
        ("start", "left"),
        ("duration", "right"),
        ("spans", "right"),
        ("root", "left"),
        ("services", "left"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    table.columns[0].no_wrap = True
    table.columns[0].min_width = 16
    table.columns[1].no_wrap = True
    for row in rows:
        root = Text.assemble(
            _service(row["root_service"], colors), " ", row["root_name"] or "", style=""
        )
        if row["error"]:
            root.append(" ✗ error", style="bold red")
        table.add_row(
            row["trace_id"][:16],  # a unique start is enough for `ophion trace`
            clock_time(row["start"]),
            human_ns(row["duration_ns"]),
            str(row["spans"]),
            root,
            Text(", ").join(_service(s, colors) for s in row["services"]),
        )
    _out.print(table)


# -- one trace: the waterfall ------------------------------------------------------------------


def waterfall(doc: dict[str, Any], focus: str | None = None) -> None:
    spans = doc["spans"]
    colors = service_colors(doc["services"])
    critical = set(doc["critical_path"])
    by_id = {s["span_id"]: s for s in spans}
    children: dict[str | None, list[dict[str, Any]]] = {}
    for span in spans:
        parent = span["parent_span_id"] if span["parent_span_id"] in by_id else None
        children.setdefault(parent, []).append(span)
    for group in children.values():
        group.sort(key=lambda s: s["start_ns"])

    roots = [by_id[focus]] if focus else children.get(None, [])
    start = min(s["start_ns"] for s in roots) if focus else doc["start_ns"]
    total = max(max(s["end_ns"] for s in roots) - start, 1) if focus else max(doc["duration_ns"], 1)

    width = _out.width
    label_width = min(48, max(24, width // 3))
    bar_width = max(10, width - label_width - 12)

    header = Text.assemble(
        ("trace ", "bold"),
        (doc["trace_id"], "bold"),
        f"  {human_ns(doc['duration_ns'])}  {len(spans)} spans  ",
        Text(", ").join(_service(s, colors) for s in doc["services"]),
    )
    if doc["error"]:
        header.append("  ✗ has errors", style="bold red")
    _out.print(header)
    _out.print(
        Text(
            f"{'':{label_width}} {'':>9} |0{' ' * (bar_width - 2 - len(human_ns(total)))}{human_ns(total)}|",
            style="dim",
        )
    )

    def line(span: dict[str, Any], prefix: str, last: bool, depth: int) -> None:
        branch = "" if depth == 0 else ("└─ " if last else "├─ ")
        name = f"{prefix}{branch}{span['name']}"
        label = Text(
            name[: label_width - 1].ljust(label_width),
            style="bold" if span["span_id"] in critical else "",
        )
        if span["status_code"] == "ERROR":
            label = Text(name[: label_width - 3].ljust(label_width - 2), style="bold red")
            label.append("✗ ", style="bold red")
        offset = int((span["start_ns"] - start) / total * bar_width)
        length = max(1, int(span["duration_ns"] / total * bar_width))
        offset = min(max(offset, 0), bar_width - 1)
        length = min(length, bar_width - offset)
        glyph = "█" if span["span_id"] in critical else "▄"
        bar = [" "] * bar_width
        for i in range(offset, offset + length):
            bar[i] = glyph
        for event in span["events"]:
            at = int((event["time_ns"] - start) / total * bar_width)
            if 0 <= at < bar_width:
                bar[at] = "◆"
        style = colors.get(span["service_name"] or "", "white")
        if span["status_code"] == "ERROR":
            style = f"{style} on grey23"
        _out.print(
            Text.assemble(
                label,
                (f"{human_ns(span['duration_ns']):>9} ", "dim"),
                ("|", "dim"),
                ("".join(bar), style),
                ("|", "dim"),
            )
        )
        child_prefix = prefix + ("" if depth == 0 else ("   " if last else "│  "))
        for event in span["events"]:
            summary = _event_summary(event)
            _out.print(
                Text(
                    f"{child_prefix}   ◆ {summary}"[: width - 1],
                    style="red" if event["name"] == "exception" else "dim",
                )
            )
        kids = children.get(span["span_id"], [])
        for i, child in enumerate(kids):
            line(child, child_prefix, i == len(kids) - 1, depth + 1)

    for root in roots:
        line(root, "", True, 0)
    _out.print(
        Text.assemble(
            ("█", "bold"),
            (" critical path  ", "dim"),
            ("▄", ""),
            (" other spans  ", "dim"),
            ("◆", ""),
            (" event  ", "dim"),
            ("✗", "bold red"),
            (" error", "dim"),
        )
    )
    if focus:
        span_details(by_id[focus], colors)


def _event_summary(event: dict[str, Any]) -> str:
    attributes = event["attributes"]
    if event["name"] == "exception":
        kind = attributes.get("exception.type", "exception")
        message = attributes.get("exception.message", "")
        return f"exception {kind}: {message}"
    shown = ", ".join(f"{k}={json.dumps(v)}" for k, v in list(attributes.items())[:3])
    return f"{event['name']} {shown}".strip()


def span_details(span: dict[str, Any], colors: dict[str, str]) -> None:
    _out.print()
    _out.print(
        Text.assemble(
            ("span ", "bold"),
            (span["span_id"], "bold"),
            "  ",
            _service(span["service_name"], colors),
            f"  {span['kind']}  {span['status_code']}",
            f"  {human_ns(span['duration_ns'])}",
        )
    )
    if span["status_message"]:
        _out.print(Text(f"status: {span['status_message']}", style="red"))
    table = Table(box=None, pad_edge=False, show_header=False)
    table.add_column(style="dim")
    table.add_column(overflow="fold")
    for key, value in sorted(span["attributes"].items()):
        table.add_row(escape(key), escape(json.dumps(value, ensure_ascii=False)))
    _out.print(table)
    for link in span["links"]:
        _out.print(f"[dim]link →[/] trace {link['linked_trace_id']} span {link['linked_span_id']}")


# -- logs --------------------------------------------------------------------------------------


def severity(number: int | None, text: str | None) -> tuple[str, str]:
    """A log record's severity as shown (its text, else the level's name) and its style."""
    for floor, style, name in _SEVERITY_STYLES:
        if (number or 0) >= floor:
            return text or name, style
    return text or "-", "dim"


def _severity(number: int | None, text: str | None) -> Text:
    label, style = severity(number, text)
    return Text(f"{label[:5]:<5}", style=style)


def note_error(text: str) -> None:
    """A warning on stderr, apart from the results on stdout."""
    Console(stderr=True, highlight=False).print(f"[yellow]warning:[/] {escape(text)}")


def log_line(record: Mapping[str, Any], colors: dict[str, str]) -> None:
    line = Text.assemble(
        (clock_time(record["time"]), "dim"),
        " ",
        _severity(record["severity_number"], record["severity"]),
        " ",
        _service(record["service"], colors),
        " ",
        record["body"] or "",
    )
    if record["trace_id"]:
        line.append(f"  trace={record['trace_id'][:12]}", style="dim")
    _out.print(line, soft_wrap=True)


def logs(doc: LogsPage) -> None:
    records = doc["logs"]
    if not records:
        _out.print("[dim]no log records match[/]")
        return
    colors = service_colors([r["service"] or "" for r in records])
    for record in records:
        log_line(record, colors)


def live_logs() -> Callable[[dict[str, Any]], None]:
    """A printer for records as they stream in (``logs -f``): a service seen for the first time
    gets its colour among the services seen so far."""
    colors: dict[str, str] = {}

    def show(record: dict[str, Any]) -> None:
        nonlocal colors
        service_name = record["service"] or ""
        if service_name not in colors:
            colors = service_colors([*colors, service_name])
        log_line(record, colors)

    return show


# -- metrics -----------------------------------------------------------------------------------


def metric_list(doc: MetricsPage) -> None:
    rows = doc["metrics"]
    if not rows:
        _out.print(f"[dim]no metrics since {_since(doc)}[/]")
        return
    table = Table(header_style="bold", box=None, pad_edge=False)
    for column in ("metric", "type", "unit", "series", "services"):
        table.add_column(column, justify="right" if column == "series" else "left")
    for row in rows:
        table.add_row(
            row["name"],
            row["type"],
            row["unit"] or "",
            str(row["series"]),
            ", ".join(row["services"]),
        )
    _out.print(table)


def sparkline(values: list[float | None]) -> str:
    present = [v for v in values if v is not None]
    if not present:
        return ""
    low, high = min(present), max(present)
    span = (high - low) or 1.0
    return "".join(
        " " if v is None else _SPARKS[min(7, int((v - low) / span * 7.999))] for v in values
    )


def format_value(value: float | None, unit: str | None) -> str:
    if value is None:
        return "-"
    text = f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return f"{text} {unit}".strip() if unit and unit not in ("1",) else text


def metric_series(doc: MetricSeries) -> None:
    unit = doc["unit"]
    _out.print(
        Text.assemble(
            (doc["name"], "bold"),
            f"  {doc['type']}  ",
            (f"step {human_ns(doc['step_ns'])}", "dim"),
            (f"  since {_since(doc)}", "dim"),
        )
    )
    width = max(20, _out.width - 40)
    for series in doc["series"]:
        labels = ", ".join(f"{k}={v}" for k, v in series["attributes"].items())
        _out.print(
            Text.assemble("\n", (series["service"] or "(no service)", "cyan"), f"  {{{labels}}}")
        )
        points = series["points"][-width:]
        if not points:
            continue
        if series["kind"] == "quantiles":
            for key in ("p50", "p95", "p99"):
                values = [p.get(key) for p in points]
                _out.print(
                    f"  {key}  {sparkline(values)}  last {format_value(values[-1], unit)}  max {format_value(max((v for v in values if v is not None), default=None), unit)}"
                )
        else:
            values = [p["value"] for p in points]
            suffix = "/s" if series["kind"] == "rate" else ""
            _out.print(
                f"  {'rate' if suffix else 'value'}  {sparkline(values)}  "
                f"last {format_value(values[-1], unit)}{suffix}  "
                f"min {format_value(min(values), unit)}{suffix}  max {format_value(max(values), unit)}{suffix}"
            )
        _out.print(
            Text(
                f"        {clock_time(points[0]['time'])} … {clock_time(points[-1]['time'])}",
                style="dim",
            )
        )


# -- the service map ---------------------------------------------------------------------------


def service_map(doc: ServiceMapDoc) -> None:
    services_ = doc["services"]
    if not services_:
        _out.print(f"[dim]no spans since {_since(doc)}[/]")
        return
    colors = service_colors(services_)
    outgoing: dict[str, list[dict[str, Any]]] = {}
    called = set()
    for edge in doc["edges"]:
        outgoing.setdefault(edge["source"] or "", []).append(edge)
        called.add(edge["target"])
    tree = Tree("[bold]service map[/]", guide_style="dim")
    roots = [s for s in services_ if s not in called] or services_[:1]

    def add(node: Tree, service: str, path: tuple[str, ...]) -> None:
        for edge in outgoing.get(service, []):
            target = edge["target"] or "(no service)"
            label = Text.assemble(
                "→ ",
                _service(target, colors),
                (f"  {edge['calls']:,} calls", "dim"),
                (f"  {edge['error_rate'] * 100:.1f}% errors", "red" if edge["errors"] else "dim"),
                (f"  p95 {human_ns(edge['p95_ns'])}", "dim"),
            )
            child = node.add(label)
            if target not in path:  # a cycle is shown once, not followed for ever
                add(child, target, (*path, target))

    shown: set[str] = set()

    def reach(service: str) -> None:
        if service not in shown:
            shown.add(service)
            for edge in outgoing.get(service, []):
                reach(edge["target"] or "")

    # Services nobody calls first; then any left over (calls among themselves, a cycle).
    for root in [*roots, *services_]:
        if root not in shown:
            reach(root)
            add(tree.add(_service(root, colors)), root, (root,))
    _out.print(tree)
