"""The targets of design section 9, the machine, and where results are written.

Results go to ``benchmarks/results/<date>-<host>.json`` (every figure, with the machine and the
software versions) and one row of the table in docs/performance.md; earlier rows stay.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import platform
import socket
import subprocess
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from benchmarks.daemon import REPO

RESULTS_DIR = REPO / "benchmarks" / "results"
PERFORMANCE_MD = REPO / "docs" / "performance.md"
TABLE_END = "<!-- results: new rows go above this line -->"
# The size the query targets are defined at (design section 9).
TARGET_SPANS = 10_000_000


@dataclass(frozen=True)
class Target:
    """One target of design section 9."""

    key: str
    label: str
    limit: float
    unit: str
    at_least: bool = False  # True: measured >= limit passes; False: measured < limit passes

    def passed(self, measured: float | None) -> bool | None:
        if measured is None or math.isnan(measured):
            return None
        return measured >= self.limit if self.at_least else measured < self.limit


TARGETS = (
    Target("ingest_grpc", "ingest over OTLP/gRPC", 100_000, "spans/s", at_least=True),
    # The daemon is a process tree (the daemon and its decode workers). Summed RSS counts each
    # shared library page once per process; PSS counts it once in all. Both are judged.
    Target("peak_rss", "daemon peak RSS (summed), gRPC ingest", 400, "MB"),
    Target("peak_pss", "daemon peak PSS, gRPC ingest", 400, "MB"),
    Target("bytes_per_span", "disk per stored span", 80, "bytes"),
    Target("trace_by_id", "trace by id", 20, "ms"),
    Target("services_1h", "per-service summary, last hour", 100, "ms"),
    Target("attribute_filter", "filter on any attribute", 300, "ms"),
    Target("log_search", "log text search", 500, "ms"),
)
_QUERY_TARGETS = {"trace_by_id", "services_1h", "attribute_filter", "log_search"}


def evaluate(measured: dict[str, float | None], stored_spans: int) -> list[dict[str, Any]]:
    """Each target with its measured value and pass/fail (None when not measured)."""
    out = []
    for target in TARGETS:
        value = measured.get(target.key)
        note = ""
        if target.key in _QUERY_TARGETS and value is not None and stored_spans < TARGET_SPANS:
            note = f"measured at {stored_spans:,} spans; the target is for {TARGET_SPANS:,}"
        out.append(
            {
                "key": target.key,
                "label": target.label,
                "target": f"{'>=' if target.at_least else '<'} {target.limit:g} {target.unit}",
                "measured": value,
                "unit": target.unit,
                "passed": target.passed(value),
                "note": note,
            }
        )
    return out


# ---------------------------------------------------------------------------------------------
# The machine and the software


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass  # not Linux: fall back to what platform knows
    return platform.processor() or platform.machine()


def _memory_bytes() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass  # not Linux
    return 0


def _package(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def _git(*args: str) -> str:
    try:
        result = subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, check=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return result.stdout.strip()


def machine() -> dict[str, Any]:
    """The host, its CPU, cores, memory and load, and the versions that shape the figures."""
    commit = _git("rev-parse", "--short", "HEAD")
    if commit and _git("status", "--porcelain", "--untracked-files=no", "--", "ophiond"):
        commit += " (ophiond modified)"
    return {
        "host": socket.gethostname(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_bytes": _memory_bytes(),
        "load_average": list(os.getloadavg()),
        "python": platform.python_version(),
        "packages": {
            name: _package(name) for name in ("duckdb", "grpcio", "protobuf", "pyarrow", "ophion")
        },
        "commit": commit,
    }


def machine_label(info: dict[str, Any]) -> str:
    return f"{info['cpu']}, {info['cores']} cores, {info['memory_bytes'] / 2**30:.0f} GiB"


# ---------------------------------------------------------------------------------------------
# Writing the results


def save_json(results: dict[str, Any], when: dt.datetime) -> Path:
    """Write ``results`` to benchmarks/results/<date>-<host>.json (a second run that day adds
    its time)."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    host = socket.gethostname().split(".")[0] or "host"
    path = RESULTS_DIR / f"{when:%Y-%m-%d}-{host}.json"
    if path.exists():
        path = RESULTS_DIR / f"{when:%Y-%m-%d-%H%M%S}-{host}.json"
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return path


def _number(value: float | None, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:,.{digits}f}"


def table_row(results: dict[str, Any]) -> str:
    """The docs/performance.md row of one run (the columns of the table there)."""
    figures = results["figures"]
    cells = [
        results["date"][:10],
        machine_label(results["machine"]),
        results["size_label"],
        _number(figures.get("ingest_grpc")),
        _number(figures.get("ingest_http")),
        _number(figures.get("ceiling")),
        _number(figures.get("ratio_grpc"), 2),
        _number(figures.get("cpu_s_per_100k"), 2),
        _number(figures.get("peak_rss")),
        _number(figures.get("peak_pss")),
        _number(figures.get("bytes_per_span"), 1),
        _number(figures.get("bytes_per_log"), 1),
        _number(figures.get("load_spans_per_s")),
        _number(figures.get("trace_by_id"), 1),
        _number(figures.get("services_1h"), 1),
        _number(figures.get("attribute_filter"), 1),
        _number(figures.get("log_search"), 1),
        results["machine"]["commit"] or "—",
    ]
    return "| " + " | ".join(cells) + " |"


def add_table_row(row: str, path: Path = PERFORMANCE_MD) -> None:
    """Insert ``row`` at the end of the results table, keeping the rows already there."""
    text = path.read_text()
    if TABLE_END not in text:
        raise RuntimeError(f"{path} has no line {TABLE_END!r} to put the results above")
    path.write_text(text.replace(TABLE_END, f"{row}\n{TABLE_END}", 1))
