"""Dead letters: acknowledged requests DuckDB refused to store, kept aside with the reason.

When a flush fails, the writer finds the request(s) that make it fail (:mod:`inserting`) and
moves each here instead of retrying the whole flush for ever, which would stop all storage.
A dead letter is one file, ``<data>/dead-letter/<segment>-<sequence>.journal``: one journal
record (the request's tables as Arrow IPC streams, see :mod:`journal`) whose header also holds
the reason, the time and where the request came from in the journal. The name makes writing
one twice (a crash between the dead letter and the flush's commit) a no-op. Nothing deletes
them: ``ophion status`` counts them until someone looks.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ophiond.batchio import pack, unpack, write_all
from ophiond.errors import StoreError
from ophiond.store.journal import (
    Frame,
    JournalRecord,
    header_of,
    single_record,
    sync_directory,
)

log = logging.getLogger(__name__)

_SUFFIX = ".journal"
_HEAD_READ = 64 << 10  # enough for a record's head and its JSON header


@dataclass
class DeadLetter:
    signal: str
    records: int
    reason: str
    at: str


class DeadLetters:
    """The dead-letter directory and a tally of what it holds."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._tally: dict[str, int] = {}  # records by signal
        self._requests = 0
        self._last: DeadLetter | None = None
        self._load()

    def _load(self) -> None:
        """Count what earlier runs left (the headers only)."""
        try:
            names = sorted(n for n in os.listdir(self.directory) if n.endswith(_SUFFIX))
        except FileNotFoundError:
            return
        for name in names:
            try:
                letter = read_dead_letter(self.directory / name)
            except (OSError, ValueError, KeyError) as e:
                log.warning("dead letter %s cannot be read: %s", name, e)
                continue
            self._count(letter)

    def _count(self, letter: DeadLetter) -> None:
        self._tally[letter.signal] = self._tally.get(letter.signal, 0) + letter.records
        self._requests += 1
        self._last = letter

    def _path(self, segment: int, record: JournalRecord) -> Path:
        return self.directory / f"{segment:012d}-{record.sequence:08d}{_SUFFIX}"

    def put(self, segment: int, record: JournalRecord, reason: str) -> bool:
        """Write ``record`` aside, durably; False when it already was (a flush retried)."""
        path = self._path(segment, record)
        if path.exists():
            return False
        letter = DeadLetter(
            record.signal, record.records, reason, dt.datetime.now(dt.UTC).isoformat()
        )
        header = {
            "signal": letter.signal,
            "records": letter.records,
            "reason": reason,
            "at": letter.at,
            "segment": segment,
            "sequence": record.sequence,
        }
        frame = Frame(pack(header, record.streams))
        scratch = path.with_suffix(".tmp")
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                write_all(fd, [frame.head(1), *frame.parts])
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(scratch, path)
            sync_directory(self.directory)
        except OSError as e:
            with contextlib.suppress(OSError):
                scratch.unlink()
            raise StoreError(f"cannot write the dead letter {path}: {e}") from e
        with self._lock:
            self._count(letter)
        return True

    def withdraw(self, segment: int, record: JournalRecord) -> None:
        """Take back a dead letter :meth:`put` wrote (its flush failed and is retried whole)."""
        try:
            self._path(segment, record).unlink()
        except FileNotFoundError:
            return
        except OSError as e:
            log.warning("cannot take back dead letter %s: %s", self._path(segment, record), e)
            return
        with self._lock:
            self._tally[record.signal] -= record.records
            self._requests -= 1

    def summary(self) -> dict[str, Any]:
        """What ``ophion status`` shows: counts, the newest reason, where they are."""
        with self._lock:
            return {
                "requests": self._requests,
                "records": dict(self._tally),
                "last_reason": self._last.reason if self._last else None,
                "last_at": self._last.at if self._last else None,
                "directory": str(self.directory),
            }


def read_dead_letter(path: Path, whole: bool = False) -> DeadLetter:
    """The header of a dead-letter file: read from its first bytes only (a dead letter can be
    megabytes), or from the whole record, checked, when ``whole``."""
    if whole:
        header, _streams = unpack(single_record(path.read_bytes()))
    else:
        with path.open("rb") as f:
            head = f.read(_HEAD_READ)
        header = json.loads(header_of(head))
    return DeadLetter(header["signal"], header["records"], header["reason"], header["at"])
