"""ophion_cli: the front ends (Typer commands, Rich rendering, later the Textual TUI)."""
