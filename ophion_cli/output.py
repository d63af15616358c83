"""Printing for the CLI: results to stdout, errors as one line plus a hint to stderr."""

from __future__ import annotations

import json
import sys
from typing import Any

from ophiond.errors import OphionError


def print_json(document: Any) -> None:
    """One JSON document on stdout (the ``--json`` contract)."""
    sys.stdout.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")


def error_line(error: OphionError) -> None:
    """``error: <reason>`` and ``hint: <what to do>`` on stderr."""
    from rich.console import Console

    console = Console(stderr=True, highlight=False, soft_wrap=True)
    console.print(f"[bold red]error:[/] {_escape(error.message)}")
    if error.hint:
        console.print(f"[dim]hint:[/] {_escape(error.hint)}")
    for line in error.details:
        console.print(f"  | {_escape(line)}", style="dim")


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def human_bytes(n: int | float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def human_duration(seconds: float) -> str:
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    if minutes:
        return f"{minutes}m {secs}s" if secs else f"{minutes}m"
    return f"{secs}s"
