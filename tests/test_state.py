"""The state store and its audit log: what the daemon remembers beyond the telemetry."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path
from typing import Any

import duckdb
import pytest
from conftest import RunningDaemon, ophion

from ophiond.api.client import ApiClient, TcpEndpoint
from ophiond.api.contract import AuditQuery
from ophiond.errors import ApiError, StoreError
from ophiond.state.audit import AuditLog
from ophiond.state.schema import MIGRATIONS
from ophiond.state.store import StateStore

LONG_AGO = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)


def test_entries_survive_a_reopen_and_the_migrations_run_once(tmp_path: Path) -> None:
    store = StateStore.open(tmp_path)
    audit = AuditLog(store)
    audit.record("ophiond", "daemon.start", None, pid=1)
    audit.record("token:ci", "token.create", "deploy", role="read")
    store.close()

    # One file holds everything committed: nothing waits in a write-ahead log.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.duckdb"]

    reopened = StateStore.open(tmp_path)
    entries = AuditLog(reopened).entries(LONG_AGO)
    assert [(e.actor, e.action, e.subject, e.detail) for e in entries] == [
        ("token:ci", "token.create", "deploy", {"role": "read"}),
        ("ophiond", "daemon.start", None, {"pid": 1}),
    ]
    with reopened.reading() as cursor:
        ran = cursor.execute("SELECT version FROM state.schema_migrations").fetchall()
    assert [row[0] for row in ran] == [version for version, _, _ in MIGRATIONS]
    reopened.close()


def test_the_file_stays_small_however_many_changes_are_checkpointed(tmp_path: Path) -> None:
    # Each change is checkpointed into the file; a result left unread on the store's connection
    # once kept a transaction open, so no checkpoint could give blocks back: 18 kB more a change.
    store = StateStore.open(tmp_path)
    audit = AuditLog(store)
    for n in range(200):
        audit.record("ophiond", "test.write", str(n), n=n)
    assert store.size() < 400_000, store.size()
    assert len(audit.entries(LONG_AGO, limit=1000)) == 200
    store.close()


def test_a_copy_of_the_file_is_a_backup(tmp_path: Path) -> None:
    (tmp_path / "live").mkdir()
    store = StateStore.open(tmp_path / "live")
    AuditLog(store).record("ophiond", "daemon.start", None)
    # Copied while the store is open, as a backup script would.
    (tmp_path / "restored").mkdir()
    shutil.copy(store.path, tmp_path / "restored" / "state.duckdb")
    store.close()
    restored = StateStore.open(tmp_path / "restored")
    assert [e.action for e in AuditLog(restored).entries(LONG_AGO)] == ["daemon.start"]
    restored.close()


def test_entries_by_action_or_prefix_newest_first_within_the_limit(tmp_path: Path) -> None:
    store = StateStore.open(tmp_path)
    audit = AuditLog(store)
    for action, subject in [
        ("token.create", "a"),
        ("partition.delete", "p1"),
        ("token.revoke", "a"),
        ("token.create", "b"),
    ]:
        audit.record("socket", action, subject)
    assert [e.subject for e in audit.entries(LONG_AGO, "token.")] == ["b", "a", "a"]
    assert [e.subject for e in audit.entries(LONG_AGO, "token.create")] == ["b", "a"]
    assert [e.subject for e in audit.entries(LONG_AGO, limit=2)] == ["b", "a"]
    future = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)
    assert audit.entries(future) == []
    store.close()


def test_a_store_written_by_a_newer_ophion_is_refused(tmp_path: Path) -> None:
    StateStore.open(tmp_path).close()
    con = duckdb.connect(str(tmp_path / "state.duckdb"))
    con.execute("INSERT INTO schema_migrations VALUES (999, 'from the future', now())")
    con.close()
    with pytest.raises(StoreError, match="written by a newer ophion") as refused:
        StateStore.open(tmp_path)
    assert refused.value.hint and "newer ophion" in refused.value.hint


def test_a_damaged_store_is_refused_with_what_to_do(tmp_path: Path) -> None:
    (tmp_path / "state.duckdb").write_bytes(b"not a database at all" * 100)
    with pytest.raises(StoreError, match="cannot open the state store") as refused:
        StateStore.open(tmp_path)
    assert refused.value.hint and "move it aside" in refused.value.hint


# ---------------------------------------------------------------------------------------------
# Through the daemon


def test_the_daemon_records_its_life_and_the_tokens_and_ophion_audit_shows_them(
    daemon_factory: Any,
) -> None:
    first: RunningDaemon = daemon_factory()
    created = ophion("token", "create", "ci", "--role", "read")
    assert created.returncode == 0, created.stderr
    assert ophion("token", "revoke", "ci").returncode == 0
    assert first.stop() == 0
    second: RunningDaemon = daemon_factory(home=first.home)

    result = ophion("audit", "--json")
    assert result.returncode == 0, result.stderr
    entries = json.loads(result.stdout)["entries"]
    assert [(e["action"], e["actor"], e["subject"]) for e in entries] == [
        ("daemon.start", "ophiond", None),
        ("daemon.stop", "ophiond", None),
        ("token.revoke", "socket", "ci"),
        ("token.create", "socket", "ci"),
        ("daemon.start", "ophiond", None),
    ]
    assert entries[3]["detail"] == {"role": "read"}
    assert entries[0]["detail"]["pid"] == second.process.pid

    tokens_only = json.loads(ophion("audit", "--action", "token.", "--json").stdout)["entries"]
    assert [e["action"] for e in tokens_only] == ["token.revoke", "token.create"]

    table = ophion("audit")
    assert table.returncode == 0, table.stderr
    assert "token.create" in table.stdout and "role=read" in table.stdout

    status = second.status()
    assert status["state"]["path"] == str(first.home / "data" / "state.duckdb")
    assert status["state"]["schema"] == MIGRATIONS[-1][0]


def test_the_audit_log_needs_the_admin_role_and_names_the_token_that_acted(
    daemon_factory: Any,
) -> None:
    daemon: RunningDaemon = daemon_factory("--api-listen", "127.0.0.1:0")
    host, _, port = daemon.listen["api_tcp"].rpartition(":")
    admin = ophion("token", "create", "ops", "--role", "admin").stdout.strip()
    reader = ophion("token", "create", "viewer", "--role", "read").stdout.strip()

    as_reader = ApiClient(endpoint=TcpEndpoint(host, int(port)), token=reader)
    with pytest.raises(ApiError, match="needs admin"):
        as_reader.audit(AuditQuery())

    as_admin = ApiClient(endpoint=TcpEndpoint(host, int(port)), token=admin)
    as_admin.revoke_token("viewer")
    newest = as_admin.audit(AuditQuery(action="token.revoke"))["entries"]
    assert [(e["actor"], e["subject"]) for e in newest] == [("token:ops", "viewer")]


def test_a_bad_audit_window_is_a_usage_error_without_a_daemon() -> None:
    result = ophion("audit", "--since", "last tuesday")
    assert result.returncode == 2
    assert "--since" in result.stderr and "15m" in result.stderr


def test_each_partition_retention_deletes_is_in_the_audit_log_with_its_reason(
    tmp_path: Path,
) -> None:
    from ophiond.store.partitions import PartitionSet, connect
    from ophiond.store.writer import Writer
    from ophiond.telemetry import Telemetry

    t0 = dt.datetime(2026, 11, 20, 10, 0, tzinfo=dt.UTC)
    data = tmp_path / "data"
    data.mkdir()
    partitions = PartitionSet(connect(256 << 20, data), data)
    partitions.open(t0)
    for day in (1, 2, 3):
        partitions.roll_over_if_due(t0 + dt.timedelta(days=day), 10**12, 30 * 86400)
    oldest = partitions.partitions[0].path.name
    store = StateStore.open(data)
    audit = AuditLog(store)
    # At t0 + 3 days with a 36 h limit, the partition that ended at t0 + 1 day is too old.
    clock = t0 + dt.timedelta(days=3)
    writer = Writer(partitions, Telemetry(), 1_000_000, 10**12, 36 * 3600, clock=lambda: clock)
    writer.audit = audit
    writer.start()  # its first round of housekeeping applies retention
    writer.housekeep()
    writer.stop()
    partitions.close()
    [entry] = audit.entries(LONG_AGO, "partition.delete")
    assert (entry.actor, entry.subject, entry.detail["reason"]) == ("retention", oldest, "age")
    assert entry.detail["bytes"] > 0
    store.close()


def test_recording_never_raises_when_the_store_cannot_be_written(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # What was done is done: a broken state store must not fail the flush, the start or the
    # token creation that records it (the daemon's log still says what happened).
    store = StateStore.open(tmp_path)
    audit = AuditLog(store)
    store.close()
    audit.record("socket", "token.create", "ci", role="read")
    assert "audit log: cannot record token.create ci by socket" in caplog.text
