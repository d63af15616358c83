"""The daemon never loads the front ends, and the CLI stays quick to start.

import-linter (`lint-imports` in .ci/run, contracts in pyproject.toml) checks the static import
graph: who may import whom, imports inside functions included. These tests check what that
graph cannot: which modules a start-up actually loads, so that the heavy imports stay lazy.
"""

from __future__ import annotations

import subprocess
import sys


def _modules_after(statement: str) -> set[str]:
    code = f"import sys\n{statement}\nprint('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_import_ophiond_does_not_load_typer_rich_or_textual() -> None:
    loaded = _modules_after(
        "import ophiond, ophiond.daemon, ophiond.otlp.grpc, ophiond.otlp.http, ophiond.store.writer, "
        "ophiond.store.query, ophiond.api.server, ophiond.api.client, ophiond.containers.operation, "
        "ophiond.containers.recreate, ophiond.control, ophiond.systemd"
    )
    assert not {m for m in loaded if m.split(".")[0] in ("typer", "rich", "textual", "ophion_cli")}


def test_cli_help_does_not_load_the_store_or_grpc() -> None:
    loaded = _modules_after("import ophion_cli.main")
    assert not {m for m in loaded if m.split(".")[0] in ("duckdb", "grpc", "pyarrow", "textual")}
