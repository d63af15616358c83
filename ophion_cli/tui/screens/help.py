"""The help screen: every key, by screen (docs/tui.md lists the same keys, and a test holds
the two together)."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import ModalScreen
from textual.widgets import Static

from ophion_cli.tui.host import WINDOWS


class HelpScreen(ModalScreen[None]):
    """Every key, by screen."""

    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "close")]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > Static { width: auto; max-width: 90%; border: round $accent; padding: 1 2;
                          background: $surface; }
    """

    def compose(self) -> ComposeResult:
        yield Static(help_text())


KEYS: list[tuple[str, str, str]] = [
    ("everywhere", "q", "back to the previous screen; quit on the first"),
    ("everywhere", "?", "this help"),
    ("everywhere", "w / W", "next / previous time window (" + ", ".join(WINDOWS) + ")"),
    ("everywhere", "r", "ask the daemon again now"),
    ("everywhere", "1 / 2 / 3 / 4 / 5", "services / all traces / logs / metrics / service map"),
    ("everywhere", "ctrl+c", "quit"),
    ("tables", "↑ ↓ PgUp PgDn Home End", "move; the mouse scrolls and clicks too"),
    ("services", "enter", "the service's traces"),
    ("services", "l", "the service's logs, live"),
    ("traces", "enter", "the trace's waterfall"),
    ("traces", "f or /", "filters: service, operation, min duration, attribute, errors only"),
    ("traces", "e", "errors only, or all again"),
    ("traces", "o", "newest first, or slowest first"),
    ("traces", "c", "clear the filters"),
    ("trace", "↑ ↓", "move between spans; the selected span's details show beside"),
    ("trace", "enter / space", "collapse or expand a span's children"),
    ("trace", "shift+←", "to the parent span"),
    ("trace", "shift+↑ / shift+↓", "to the previous / next sibling span"),
    ("trace", "tab", "to the trace's log records; enter on one moves to its span"),
    ("logs", "space", "pause; again to resume (records keep arriving meanwhile)"),
    ("logs", "f", "filters: service, lowest severity, text in the body"),
    ("logs", "/", "highlight a text; n / N to the next / previous record holding it"),
    ("logs", "G", "back to the newest record, following"),
    ("logs", "enter", "the record's trace"),
    ("metrics", "enter", "chart the metric"),
    ("metric", "s, then space", "choose the series charted (histograms: p50, p95, p99)"),
    ("map", "enter", "on an edge: the traces of the called service"),
    ("map", "tab", "to the drawing, to scroll it with the arrows"),
]


def help_text() -> Text:
    text = Text("Keys\n\n", style="bold")
    width = max(len(key) for _, key, _ in KEYS)
    scope = ""
    for where, key, what in KEYS:
        if where != scope:
            text.append(f"{where}\n", style="bold underline")
            scope = where
        text.append(f"  {key:<{width}}  ", style="bold cyan")
        text.append(f"{what}\n")
    return text
