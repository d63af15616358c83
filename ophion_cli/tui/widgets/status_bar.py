"""The status bar at the foot of every screen: the daemon's connection, its ingest rates and the
time window, on one line."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from ophion_cli.tui.host import SIGNALS, DaemonState

_UNITS = {"traces": "spans", "logs": "logs", "metrics": "points"}


class StatusBar(Static):
    """Daemon connection, ingest rates and the time window, on one line."""

    DEFAULT_CSS = "StatusBar { dock: bottom; height: 1; background: $panel; padding: 0 1; }"

    def show(self, state: DaemonState) -> None:
        text = Text()
        if state.daemon_error is None:
            text.append("● ", style="green")
            text.append(f"ophiond {state.daemon_version}", style="bold")
            rates = "  ".join(
                f"{state.ingest_rates[s]:,.0f} {_UNITS[s]}/s"
                for s in SIGNALS
                if s in state.ingest_rates
            )
            if rates:
                text.append(f" │ {rates}")
        elif state.daemon_refused:
            text.append("● ", style="yellow")
            text.append(f"ophiond refuses: {state.daemon_error}", style="bold yellow")
        else:
            text.append("● ", style="red")
            text.append(f"daemon down: {state.daemon_error} (retrying)", style="bold red")
        text.append(f" │ window {state.window}")
        text.append(" │ ? help", style="dim")
        self.update(text)
