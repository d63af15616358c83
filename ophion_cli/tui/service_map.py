"""The service map: who calls whom, drawn left to right from the services nobody calls, each
edge labelled with its call rate, error rate and p95; the edges again as a table below, where
Enter opens the traces of the called service."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import ScrollableContainer
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from ophion_cli.views import human_ns, service_colors
from ophiond.errors import OphionError

if TYPE_CHECKING:
    from ophion_cli.tui.app import OphionTui


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


class MapScreen(Screen[None]):
    """``ophion map`` in the terminal UI."""

    CSS = """
    MapScreen #graph { height: 2fr; border-bottom: solid $panel; }
    MapScreen #graph Static { width: auto; }
    MapScreen DataTable { height: 1fr; }
    """

    @property
    def tui(self) -> OphionTui:
        from ophion_cli.tui.app import OphionTui

        app = self.app
        assert isinstance(app, OphionTui)
        return app

    def compose(self) -> ComposeResult:
        from ophion_cli.tui.app import StatusBar

        yield Static(Text("Service map", style="bold"), id="title")
        with ScrollableContainer(id="graph"):
            yield Static(id="drawing")
        yield DataTable(cursor_type="row", zebra_stripes=True)
        yield Footer()
        yield StatusBar()

    def on_mount(self) -> None:
        from ophion_cli.tui.app import StatusBar

        table = self.query_one(DataTable)
        for label in ("caller", "called", "calls/s", "errors", "p95"):
            table.add_column(label, key=label)
        table.focus()  # (tab to the drawing to scroll it)
        self.query_one(StatusBar).show(self.tui)
        self.load()
        self._timer = self.set_interval(self.tui.refresh_s, self.load)

    def on_screen_suspend(self) -> None:
        self._timer.pause()

    def on_screen_resume(self) -> None:
        self._timer.resume()
        self.load()

    @work(thread=True, exclusive=True, group="load", exit_on_error=False)
    def load(self) -> None:
        try:
            doc = self.tui.source.service_map(self.tui.window)
        except OphionError as e:
            self.app.call_from_thread(self.tui.query_failed, e)
            return
        self.app.call_from_thread(self.show, doc)

    def window_s(self) -> float:
        from ophiond.timespec import TimeSpecError, parse_duration_ns

        try:
            return parse_duration_ns(self.tui.window) / 1e9
        except TimeSpecError:
            return 0.0

    def show(self, doc: dict[str, Any]) -> None:
        from ophion_cli.tui.app import put_rows

        window_s = self.window_s()
        self.query_one("#title", Static).update(
            Text.assemble(
                ("Service map", "bold"),
                f"  last {self.tui.window}, {len(doc['services'])} services, "
                f"{len(doc['edges'])} calls between them",
            )
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
        put_rows(self.query_one(DataTable), rows)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        """Enter on an edge: the traces of the called service."""
        from ophion_cli.tui.app import TracesScreen

        target = (event.row_key.value or "").split("\x00")[-1]
        self.app.push_screen(TracesScreen(service=target or None))
