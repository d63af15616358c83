"""The service map: who calls whom, drawn left to right from the services nobody calls, each
edge labelled with its call rate, error rate and p95; the edges again as a table below, where
Enter opens the traces of the called service."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rich.text import Text
from textual.containers import ScrollableContainer
from textual.widget import Widget
from textual.widgets import DataTable, Static

from ophion_cli.output.views import human_ns, service_colors
from ophion_cli.tui.screens.base import DataScreen


def edge_label(edge: dict[str, Any], window_s: float) -> Text:
    rate = edge["calls"] / window_s if window_s > 0 else 0.0
    return Text.assemble(
        (f"{rate:.2f}/s", "bold"),
        " ",
        (f"{edge['error_rate'] * 100:.1f}%", "red" if edge["errors"] else "dim"),
        " ",
        (f"p95 {human_ns(edge['p95_ns'])}", "dim"),
    )


def draw(doc: dict[str, Any], window_s: float) -> Text:
    """The graph as text: a service, then an arrow per call it makes (fanning out with ┬ ├ └)
    to the called service, whose own calls continue to the right. A service reached a second
    time is named, marked ``↑``, and not drawn again; a call back into the path, ``↺``."""
    services = doc["services"]
    if not services:
        return Text("no spans in the window", style="dim")
    colors = service_colors(services)
    outgoing: dict[str, list[dict[str, Any]]] = {}
    called = set()
    for edge in doc["edges"]:
        outgoing.setdefault(edge["source"] or "", []).append(edge)
        called.add(edge["target"] or "")
    drawn: set[str] = set()

    def name(service: str) -> Text:
        return Text(service or "(no service)", style=f"bold {colors.get(service, '')}")

    def block(service: str, path: tuple[str, ...]) -> list[Text]:
        head = name(service)
        if service in path:
            return [head + Text(" ↺", style="yellow")]
        if service in drawn:
            return [head + Text(" ↑", style="dim")]
        drawn.add(service)
        edges = outgoing.get(service, [])
        if not edges:
            return [head]
        lines: list[Text] = []
        indent = " " * (head.cell_len + 1)
        for i, edge in enumerate(edges):
            last = i == len(edges) - 1
            if len(edges) == 1:
                fork = "──"
            else:
                fork = "┬─" if i == 0 else ("└─" if last else "├─")
            arrow = Text(f"{fork}─ ") + edge_label(edge, window_s) + Text(" ─▶ ")
            sub = block(edge["target"] or "", (*path, service))
            first = (head + Text(" ")) if i == 0 else Text(indent)
            lines.append(first + arrow + sub[0])
            rail = " " if last or len(edges) == 1 else "│"
            for line in sub[1:]:
                lines.append(Text(indent + rail + " " * (arrow.cell_len - 1)) + line)
        return lines

    roots = [s for s in services if s not in called]
    out = Text()
    for service in [*roots, *services]:  # (then any left in cycles nobody enters from outside)
        if service in drawn:
            continue
        for line in block(service, ()):
            out.append_text(line)
            out.append("\n")
    return out


class MapScreen(DataScreen):
    """``ophion map`` in the terminal UI."""

    CSS = """
    MapScreen #graph { height: 2fr; border-bottom: solid $panel; }
    MapScreen #graph Static { width: auto; }
    MapScreen DataTable { height: 1fr; }
    """

    def body(self) -> Iterable[Widget]:
        yield ScrollableContainer(Static(id="drawing"), id="graph")
        yield from super().body()

    def setup(self, table: DataTable[Any]) -> None:
        for label in ("caller", "called", "calls/s", "errors", "p95"):
            table.add_column(label, key=label)
        table.focus()  # (tab to the drawing to scroll it)

    def fetch(self) -> dict[str, Any]:
        return self.tui.source.service_map(self.tui.window)

    def show(self, doc: dict[str, Any]) -> None:
        window_s = (self.window_ns() or 0) / 1e9
        self.set_title(
            ("Service map", "bold"),
            f"  last {self.tui.window}, {len(doc['services'])} services, "
            f"{len(doc['edges'])} calls between them",
        )
        self.query_one("#drawing", Static).update(draw(doc, window_s))
        rows = {}
        for edge in doc["edges"]:
            rate = edge["calls"] / window_s if window_s else 0.0
            rows[f"{edge['source']}\x00{edge['target']}"] = (
                edge["source"] or "(no service)",
                edge["target"] or "(no service)",
                Text(f"{rate:.2f}", justify="right"),
                Text(
                    f"{edge['error_rate'] * 100:.1f}%",
                    style="red" if edge["errors"] else "",
                    justify="right",
                ),
                Text(human_ns(edge["p95_ns"]), justify="right"),
            )
        self.put_rows(rows)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        """Enter on an edge: the traces of the called service."""
        target = (event.row_key.value or "").split("\x00")[-1]
        self.tui.open_traces(target or None)
