"""The daemon's one scheduler: every recurring job by name, with its last and next run.

APScheduler's background scheduler runs the jobs in a small thread pool. Each job is added once,
by the part that owns it (the store's housekeeping now; the insights, alerting, healing and LLM
engines theirs), with a name, an interval and what to do when a run is missed: a run that is
late past ``misfire_grace_s`` (the machine slept, the pool was busy) is skipped and counted,
several missed runs are *coalesced* into one, and a job never runs twice at once. ``ophion
status`` lists the jobs with :meth:`Scheduler.jobs`.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ophiond.errors import OphionError

if TYPE_CHECKING:
    from apscheduler.schedulers.background import BackgroundScheduler

log = logging.getLogger(__name__)


@dataclass
class JobRecord:
    """What the scheduler knows of a job beyond its trigger: its runs so far."""

    name: str
    description: str
    interval_s: float
    runs: int = 0
    failures: int = 0
    missed: int = 0
    last_run: dt.datetime | None = None
    last_duration_s: float | None = None
    last_error: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


class Scheduler:
    """Named recurring jobs on one APScheduler ``BackgroundScheduler``."""

    def __init__(self, workers: int = 4) -> None:
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.schedulers.background import BackgroundScheduler

        self._scheduler: BackgroundScheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(workers)},
            job_defaults={"coalesce": True, "max_instances": 1},
            timezone=dt.UTC,
        )
        self._records: dict[str, JobRecord] = {}
        from apscheduler.events import EVENT_JOB_MISSED

        self._scheduler.add_listener(self._missed, EVENT_JOB_MISSED)

    def every(
        self,
        name: str,
        interval_s: float,
        run: Callable[[], None],
        description: str,
        *,
        first_run_in_s: float = 0.0,
        misfire_grace_s: float | None = None,
    ) -> None:
        """Run ``run()`` every ``interval_s`` seconds, first after ``first_run_in_s``.

        An expected failure (:class:`OphionError`) is the run's outcome, shown by
        :meth:`jobs` and logged as an error; anything else is logged with its traceback too.
        A run more than ``misfire_grace_s`` late (default: half the interval) is skipped.
        """
        if name in self._records:
            raise ValueError(f"a job named {name!r} exists already")
        record = JobRecord(name, description, interval_s)
        self._records[name] = record
        grace = misfire_grace_s if misfire_grace_s is not None else max(1.0, interval_s / 2)
        first = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=first_run_in_s)
        self._scheduler.add_job(
            self._run,
            "interval",
            args=(record, run),
            seconds=interval_s,
            id=name,
            name=name,
            next_run_time=first,
            misfire_grace_time=max(1, round(grace)),
        )

    def start(self) -> None:
        self._scheduler.start()

    def stop(self) -> None:
        """Stop scheduling and wait for the runs in progress to end."""
        if self._scheduler.running:
            self._scheduler.shutdown(wait=True)

    def run_now(self, name: str) -> None:
        """Bring a job's next run forward to now (it still never runs twice at once)."""
        self._scheduler.modify_job(name, next_run_time=dt.datetime.now(dt.UTC))

    def jobs(self) -> list[dict[str, Any]]:
        """Each job: name, what it does, its interval, runs, failures and missed runs, its last
        run (time, seconds it took, error) and its next run."""
        listed = []
        for name, record in list(self._records.items()):
            job = self._scheduler.get_job(name)
            next_run = getattr(job, "next_run_time", None) if job is not None else None
            with record.lock:
                listed.append(
                    {
                        "name": name,
                        "description": record.description,
                        "interval_s": record.interval_s,
                        "runs": record.runs,
                        "failures": record.failures,
                        "missed": record.missed,
                        "last_run": record.last_run.isoformat() if record.last_run else None,
                        "last_duration_s": record.last_duration_s,
                        "last_error": record.last_error,
                        "next_run": next_run.isoformat() if next_run else None,
                    }
                )
        return listed

    @staticmethod
    def _run(record: JobRecord, run: Callable[[], None]) -> None:
        started_at = dt.datetime.now(dt.UTC)
        started = time.monotonic()
        error = None
        try:
            run()
        except OphionError as e:
            error = e.message
            log.error("job %s failed: %s", record.name, e.message)
        except Exception as e:
            error = f"{type(e).__name__}: {e}"
            log.exception("job %s failed", record.name)
        with record.lock:
            record.runs += 1
            record.failures += error is not None
            record.last_run = started_at
            record.last_duration_s = round(time.monotonic() - started, 3)
            record.last_error = error

    def _missed(self, event: Any) -> None:
        record = self._records.get(event.job_id)
        if record is not None:
            with record.lock:
                record.missed += 1
            log.warning("job %s missed a run (more than its grace time late)", event.job_id)
