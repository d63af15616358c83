"""What the ``ophion`` command prints, one module per area of output.

This module holds the parts every area shares: the JSON of ``--json`` on stdout, errors as one
line plus a hint on stderr, the Rich consoles they print with, and numbers for people. The
areas: :mod:`.status` (``ophion status``, ``ophion daemon``), :mod:`.views` (the query
results), :mod:`.sql`, :mod:`.tokens` and :mod:`.instrument`. Rich is imported only when
something is printed, so ``ophion --help`` does not pay for it here.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

from ophiond.errors import OphionError

if TYPE_CHECKING:
    from rich.console import Console


def stdout_console() -> Console:
    """A console for results on stdout; soft_wrap: paths and commands are printed whole, so
    they can be copied."""
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True)


def stderr_console() -> Console:
    """A console for notes and errors on stderr, apart from the results on stdout."""
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def print_json(document: Any) -> None:
    """One JSON document on stdout (the ``--json`` contract)."""
    sys.stdout.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")


def print_json_line(document: Any) -> None:
    """One compact JSON document on its own line, flushed at once (NDJSON for ``--follow``)."""
    sys.stdout.write(json.dumps(document, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def error_line(error: OphionError) -> None:
    """``error: <reason>`` and ``hint: <what to do>`` on stderr."""
    console = stderr_console()
    console.print(f"[bold red]error:[/] {_escape(error.message)}")
    if error.hint:
        console.print(f"[dim]hint:[/] {_escape(error.hint)}")
    for line in error.details:
        console.print(f"  | {_escape(line)}", style="dim")


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def human_bytes(n: int | float) -> str:
    """A size for people, in powers of 1000: ``512 B``, ``1.5 MB``."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def human_duration(seconds: float) -> str:
    """A length of time for people, its two largest units: ``2d 3h``, ``5m 10s``."""
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
