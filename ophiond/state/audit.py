"""The audit log: what the daemon did or was told to do that changed something.

Entries are only ever appended. Today they say when the daemon started and stopped, who
created or revoked an API token, which partitions retention deleted, which records were moved
to the dead-letter directory or found lost, and which partitions were set aside as damaged;
the coming engines add alert notifications and healing actions.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ophiond.errors import StoreError
from ophiond.state.store import CATALOG

if TYPE_CHECKING:
    from ophiond.state.store import StateStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AuditEntry:
    """One thing done: when, by whom, what, to what, and the rest in ``detail``."""

    id: int
    time: dt.datetime
    actor: str
    action: str
    subject: str | None
    detail: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "time": self.time.isoformat(),
            "actor": self.actor,
            "action": self.action,
            "subject": self.subject,
            "detail": self.detail,
        }


class AuditLog:
    """Appends to and reads the state store's ``audit_log`` table."""

    def __init__(self, store: StateStore) -> None:
        self._store = store

    def record(self, actor: str, action: str, subject: str | None = None, **detail: Any) -> None:
        """Append an entry; a failure to write it is logged, never raised: what was done is
        done, and the daemon's log still says so."""
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        try:
            with self._store.transaction() as cursor:
                cursor.execute(
                    f"INSERT INTO {CATALOG}.audit_log (time, actor, action, subject, detail) "
                    "VALUES (?, ?, ?, ?, ?)",
                    [now, actor, action, subject, json.dumps(detail, default=str)],
                )
        except StoreError as e:
            log.error("audit log: cannot record %s %s by %s: %s", action, subject, actor, e)

    def entries(
        self, since: dt.datetime, action: str | None = None, limit: int = 100
    ) -> list[AuditEntry]:
        """The newest ``limit`` entries at or after ``since`` (optionally one action, or a
        prefix ending in ``.``: ``token.``), newest first."""
        where = ["time >= ?"]
        params: list[Any] = [since.astimezone(dt.UTC).replace(tzinfo=None)]
        if action:
            if action.endswith("."):
                where.append("starts_with(action, ?)")
            else:
                where.append("action = ?")
            params.append(action)
        with self._store.reading() as cursor:
            rows = cursor.execute(
                f"SELECT id, time, actor, action, subject, detail FROM {CATALOG}.audit_log "
                f"WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ?",
                [*params, limit],
            ).fetchall()
        return [
            AuditEntry(
                id_,
                time.replace(tzinfo=dt.UTC),
                actor,
                action_,
                subject,
                json.loads(detail or "{}"),
            )
            for id_, time, actor, action_, subject, detail in rows
        ]
