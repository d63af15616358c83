"""``ophion tui``: a Textual terminal UI over the daemon's API (imported only by that command)."""

from __future__ import annotations


def run(api: str | None, token: str | None, since: str) -> None:
    """Open the terminal UI on the daemon named by ``api`` (the local one by default)."""
    from ophion_cli.tui.app import OphionTui
    from ophion_cli.tui.source import ApiSource

    OphionTui(ApiSource(api, token), since=since).run()
