"""The documentation names what exists, and everything that exists is documented."""

from __future__ import annotations

import re
from pathlib import Path

from ophiond.daemon import build_parser
from ophiond.store.partitions import PartitionSet, connect
from ophiond.store.schema import TABLES

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_every_view_column_is_in_sql_md(tmp_path: Path) -> None:
    doc = (DOCS / "sql.md").read_text()
    partitions = PartitionSet(connect(128 << 20, tmp_path), tmp_path)
    partitions.open()
    for view in TABLES:
        assert f"### `{view}`" in doc
        columns = [row[0] for row in partitions.con.execute(f"DESCRIBE {view}").fetchall()]
        missing = [c for c in columns if f"`{c}`" not in doc]
        assert not missing, f"docs/sql.md does not describe {view}.{missing}"
    partitions.close()


def test_ophiond_flags_match_daemon_md() -> None:
    doc = (DOCS / "daemon.md").read_text()
    flags = {
        option
        for action in build_parser()._actions
        for option in action.option_strings
        if option.startswith("--") and option != "--help"
    }
    documented = set(re.findall(r"^\| `(--[a-z-]+)", doc, flags=re.M))
    assert documented == flags
