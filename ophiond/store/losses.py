"""Journal losses: what the ingest journal lost on disk before DuckDB had it.

The writer finds them when it starts (the journal's records DuckDB lacks are read back, and
:func:`~ophiond.store.journal.find_losses` names what is missing) and at a flush (a segment
that reads back fewer requests than were appended to it). Each is named in the log, in the
audit log and in ``<data>/losses.jsonl``, which is read again at the next start, so that
``ophion status`` still names a loss after a restart (until someone deletes the file). A
damaged segment is kept under a second name, ``<segment>.journal.damaged``, for a look.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
from typing import TYPE_CHECKING

from ophiond.store.journal import JournalLoss

if TYPE_CHECKING:
    from pathlib import Path

    from ophiond.model import Recorder
    from ophiond.store.journal import Journal

log = logging.getLogger(__name__)


class LossLog:
    """The journal's losses, this run's and earlier runs' (:attr:`losses`): recorded, kept in
    ``losses_file`` and read from it again at the next start."""

    def __init__(self, losses_file: Path, journal: Journal) -> None:
        self.journal = journal  # (whose damaged segments are kept)
        # What the journal lost on disk before DuckDB had it, found at start or at a flush,
        # this run or an earlier one (kept in losses.jsonl until someone deletes it).
        self.losses: list[JournalLoss] = []
        self._losses_file = losses_file
        # The audit log, where each loss is recorded too (set through Writer.audit).
        self.audit: Recorder | None = None
        self._load_losses()

    def record(self, loss: JournalLoss) -> None:
        """Count and name a loss: in the log, in :attr:`losses` and in the data directory's
        ``losses.jsonl``, so that ``ophion status`` still names it after a restart."""
        self.losses.append(loss)
        if loss.acknowledged is False:
            log.info("%s", loss.describe())
        else:
            log.error("%s", loss.describe())
        entry = {**dataclasses.asdict(loss), "at": dt.datetime.now(dt.UTC).isoformat()}
        if self.audit is not None:
            self.audit.record(
                "ophiond",
                "journal.loss",
                f"segment {loss.segment:012d}",
                requests=loss.requests,
                acknowledged=loss.acknowledged,
                reason=loss.reason,
            )
        try:
            with self._losses_file.open("a") as f:
                f.write(json.dumps(entry) + "\n")
        except OSError as e:
            log.warning("cannot record the loss in %s: %s", self._losses_file, e)

    def _load_losses(self) -> None:
        try:
            lines = self._losses_file.read_text().splitlines()
        except FileNotFoundError:
            return
        except OSError as e:
            log.warning("cannot read %s: %s", self._losses_file, e)
            return
        for line in lines:
            try:
                entry = json.loads(line)
                self.losses.append(
                    JournalLoss(
                        entry["segment"], entry["requests"], entry["acknowledged"], entry["reason"]
                    )
                )
            except (ValueError, KeyError, TypeError):
                log.warning("%s: a line cannot be read: %.80s", self._losses_file, line)

    def keep_damaged(self, segment: int) -> None:
        """Keep a copy of a damaged segment (a second name for the same file) for a look; the
        journal deletes its own name as usual once DuckDB has what could be read."""
        path = self.journal.path(segment)
        try:
            os.link(path, path.with_name(path.name + ".damaged"))
        except (FileNotFoundError, FileExistsError):
            pass
        except OSError as e:
            log.warning("cannot keep damaged journal segment %s: %s", path.name, e)
