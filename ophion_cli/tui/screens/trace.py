"""One trace: a waterfall of its spans as a collapsible tree, the selected span's details, and
the trace's log records; Enter on a log record moves to its span."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from typing import Any

from rich.text import Text
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widget import Widget
from textual.widgets import DataTable, Static, Tree
from textual.widgets.tree import TreeNode

from ophion_cli.output.views import human_ns, service_colors
from ophion_cli.tui.screens.base import TuiScreen
from ophion_cli.tui.widgets.table import Table, record_cells

# Columns of a span's line in the tree before its bar: name (indented) and duration.
_NAME_WIDTH = 34
_DURATION_WIDTH = 9


def _bar(span: dict[str, Any], start: int, total: int, width: int, critical: bool) -> Text:
    """The span's place in the trace, ``width`` cells for the whole trace."""
    total = max(total, 1)
    left = min(width - 1, int((span["start_ns"] - start) / total * width))
    length = max(1, round((span["end_ns"] - span["start_ns"]) / total * width))
    length = min(length, width - left)
    style = "red" if span["status_code"] == "ERROR" else ("bold" if critical else "dim")
    return Text(" " * left + ("█" if critical else "▄") * length, style=style)


def span_label(
    span: dict[str, Any], depth: int, trace: dict[str, Any], colors: dict[str, str], width: int
) -> Text:
    name_width = max(8, _NAME_WIDTH - 4 * depth)
    name = span["name"] or "(no name)"
    if len(name) > name_width:
        name = name[: name_width - 1] + "…"
    label = Text(name.ljust(name_width), style=colors.get(span["service_name"] or "", ""))
    if span["status_code"] == "ERROR":
        label.append("✗", style="bold red")
    else:
        label.append(" ")
    label.append(human_ns(span["duration_ns"]).rjust(_DURATION_WIDTH) + " ")
    label.append_text(
        _bar(
            span,
            trace["start_ns"],
            trace["duration_ns"],
            width,
            span["span_id"] in trace["critical_path"],
        )
    )
    if span["events"]:
        label.append(" ◆", style="yellow")
    return label


def _value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def span_details(span: dict[str, Any], trace_start: int, colors: dict[str, str]) -> Text:
    """What a span holds: its identity, timing, status, attributes, events and links."""
    text = Text()
    text.append(span["name"] or "(no name)", style="bold")
    text.append("  ")
    text.append(span["service_name"] or "(no service)", style=colors.get(span["service_name"], ""))
    text.append(f"\n{span['kind'] or ''}  span {span['span_id']}", style="dim")
    if span["parent_span_id"]:
        text.append(f"  parent {span['parent_span_id']}", style="dim")
    text.append(
        f"\nstarts +{human_ns(span['start_ns'] - trace_start)}, "
        f"lasts {human_ns(span['duration_ns'])}"
    )
    status = span["status_code"] or "UNSET"
    text.append("\nstatus ")
    text.append(status, style="bold red" if status == "ERROR" else "")
    if span["status_message"]:
        text.append(f": {span['status_message']}")
    for title, values in (
        ("attributes", span["attributes"]),
        ("resource", span["resource_attributes"]),
    ):
        if values:
            text.append(f"\n\n{title}\n", style="bold underline")
            for key, value in sorted(values.items()):
                text.append(f"  {key}", style="cyan")
                text.append(f" = {_value(value)}\n")
    if span["events"]:
        text.append("\n\nevents\n", style="bold underline")
        for event in span["events"]:
            text.append(f"  +{human_ns(event['time_ns'] - trace_start)} ", style="dim")
            text.append(event["name"] or "(no name)", style="yellow")
            for key, value in sorted((event["attributes"] or {}).items()):
                text.append(f"\n      {key}", style="cyan")
                text.append(f" = {_value(value)}")
            text.append("\n")
    if span["links"]:
        text.append("\n\nlinks\n", style="bold underline")
        for link in span["links"]:
            text.append(f"  trace {link['linked_trace_id']} span {link['linked_span_id']}\n")
    return text


class TraceScreen(TuiScreen):
    """``ophion trace`` in the terminal UI."""

    CSS = """
    TraceScreen #panes { height: 1fr; }
    TraceScreen Tree { width: 3fr; height: 1fr; }
    TraceScreen #side { width: 2fr; }
    TraceScreen #details { height: 2fr; border-left: solid $panel; padding: 0 1; }
    TraceScreen #trace-logs { height: 1fr; border-left: solid $panel; }
    TraceScreen.-narrow #panes { layout: vertical; }
    TraceScreen.-narrow Tree { width: 1fr; height: 2fr; }
    TraceScreen.-narrow #side { width: 1fr; height: 1fr; }
    """
    REFRESH = None  # (a trace does not change: asked for once)

    def __init__(self, trace_id: str) -> None:
        super().__init__()
        self.trace_id = trace_id
        self.doc: dict[str, Any] | None = None
        self.logs: list[dict[str, Any]] = []
        self.nodes: dict[str, TreeNode[dict[str, Any]]] = {}
        self.palette: dict[str, str] = {}

    def body(self) -> Iterable[Widget]:
        yield Horizontal(
            Tree[dict[str, Any]]("trace", id="spans"),
            Vertical(
                VerticalScroll(Static(id="span"), id="details"),
                Table(id="trace-logs", cursor_type="row"),
                id="side",
            ),
            id="panes",
        )

    def prepare(self) -> None:
        self.set_title((f"Trace {self.trace_id}", "bold"))
        self.on_resize()
        tree = self.query_one(Tree)
        tree.show_root = False
        tree.guide_depth = 4
        logs = self.query_one(DataTable)
        for label in ("time", "severity", "service", "body"):
            logs.add_column(label, key=label)

    def on_resize(self) -> None:
        self.set_class(self.app.size.width < 120, "-narrow")

    def fetch(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        doc = self.tui.source.trace(self.trace_id)
        since = dt.datetime.fromtimestamp(doc["start_ns"] / 1e9 - 60, dt.UTC)
        logs = self.tui.source.logs(
            {"trace": doc["trace_id"], "since": since.isoformat(), "limit": 1000}
        )
        return doc, logs["logs"]

    def show(self, answer: tuple[dict[str, Any], list[dict[str, Any]]]) -> None:
        doc, logs = self.doc, self.logs = answer
        spans = doc["spans"]
        self.palette = service_colors([s["service_name"] or "" for s in spans])
        self.set_title(
            ("Trace ", "bold"),
            (doc["trace_id"], "bold"),
            f"  {human_ns(doc['duration_ns'])}, {len(spans)} spans, {', '.join(doc['services'])}",
            ("  error" if doc["error"] else "", "bold red"),
        )
        tree = self.query_one(Tree)
        tree.clear()
        self.nodes = {}
        width = max(10, tree.size.width - _NAME_WIDTH - _DURATION_WIDTH - 6)
        known = {s["span_id"] for s in spans}
        children: dict[str | None, list[dict[str, Any]]] = {}
        for span in spans:  # (in start order)
            parent = span["parent_span_id"] if span["parent_span_id"] in known else None
            children.setdefault(parent, []).append(span)

        def add(node: TreeNode[dict[str, Any]], parent: str | None, depth: int) -> None:
            for span in children.get(parent, []):
                label = span_label(span, depth, doc, self.palette, width)
                if children.get(span["span_id"]):
                    child = node.add(label, data=span, expand=True)
                    add(child, span["span_id"], depth + 1)
                else:
                    child = node.add_leaf(label, data=span)
                self.nodes[span["span_id"]] = child

        add(tree.root, None, 0)
        tree.root.expand()
        if spans:
            self._details(spans[0])
        table = self.query_one(DataTable)
        table.clear()
        for i, record in enumerate(logs):
            table.add_row(*record_cells(record, self.palette), key=str(i))
        tree.focus()

    def _details(self, span: dict[str, Any]) -> None:
        assert self.doc is not None
        self.query_one("#span", Static).update(
            span_details(span, self.doc["start_ns"], self.palette)
        )

    def on_tree_node_highlighted(self, event: Tree.NodeHighlighted[dict[str, Any]]) -> None:
        if event.node.data is not None:
            self._details(event.node.data)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        """Enter on a log record: to its span in the tree."""
        record = self.logs[int(event.row_key.value or 0)]
        node = self.nodes.get(record.get("span_id") or "")
        if node is None:
            self.notify("this record names no span of the trace")
            return
        parent = node.parent
        while parent is not None:
            parent.expand()
            parent = parent.parent
        tree = self.query_one(Tree)
        tree.focus()
        self.call_after_refresh(tree.move_cursor, node)
