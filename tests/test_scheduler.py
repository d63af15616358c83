"""The daemon's one scheduler: named jobs, their runs, and what ``ophion status`` shows of them."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from conftest import RunningDaemon, ophion

from ophiond.errors import StoreError
from ophiond.scheduler import Scheduler


def _wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.02)


@pytest.fixture
def scheduler() -> Any:
    running = Scheduler()
    yield running
    running.stop()


def _job(scheduler: Scheduler, name: str) -> dict[str, Any]:
    [job] = [j for j in scheduler.jobs() if j["name"] == name]
    return job


def test_a_job_runs_first_when_asked_then_every_interval(scheduler: Scheduler) -> None:
    runs: list[float] = []
    scheduler.every("tick", 0.2, lambda: runs.append(time.monotonic()), "counts")
    scheduler.start()
    _wait_for(lambda: len(runs) >= 3)
    assert all(b - a >= 0.1 for a, b in zip(runs, runs[1:], strict=False))
    job = _job(scheduler, "tick")
    assert job["runs"] >= 3 and job["failures"] == 0 and job["last_error"] is None
    assert job["description"] == "counts" and job["interval_s"] == 0.2
    assert job["last_run"] is not None and job["next_run"] is not None


def test_a_failing_run_is_recorded_and_the_job_keeps_its_schedule(scheduler: Scheduler) -> None:
    calls = [0]

    def flaky() -> None:
        calls[0] += 1
        if calls[0] == 1:
            raise StoreError("disk full (simulated)")
        if calls[0] == 2:
            raise ValueError("a bug")

    scheduler.every("flaky", 0.2, flaky, "fails twice")
    scheduler.start()
    _wait_for(lambda: _job(scheduler, "flaky")["failures"] == 1)
    assert _job(scheduler, "flaky")["last_error"] == "disk full (simulated)"
    _wait_for(lambda: _job(scheduler, "flaky")["failures"] == 2)
    assert _job(scheduler, "flaky")["last_error"] == "ValueError: a bug"
    _wait_for(lambda: _job(scheduler, "flaky")["runs"] >= 3)
    _wait_for(lambda: _job(scheduler, "flaky")["last_error"] is None)  # the third run worked


def test_a_job_never_runs_twice_at_once(scheduler: Scheduler) -> None:
    inside = [0]
    most = [0]
    release = threading.Event()

    def slow() -> None:
        inside[0] += 1
        most[0] = max(most[0], inside[0])
        release.wait(1.0)
        inside[0] -= 1

    scheduler.every("slow", 0.05, slow, "slower than its interval")
    scheduler.start()
    _wait_for(lambda: _job(scheduler, "slow")["runs"] >= 2)
    release.set()
    assert most[0] == 1


def test_run_now_brings_the_next_run_forward(scheduler: Scheduler) -> None:
    runs = [0]
    scheduler.every(
        "hourly", 3600, lambda: runs.__setitem__(0, runs[0] + 1), "rare", first_run_in_s=3600
    )
    scheduler.start()
    time.sleep(0.2)
    assert runs[0] == 0 and _job(scheduler, "hourly")["last_run"] is None
    scheduler.run_now("hourly")
    _wait_for(lambda: runs[0] == 1)


def test_two_jobs_cannot_share_a_name(scheduler: Scheduler) -> None:
    scheduler.every("once", 60, lambda: None, "first")
    with pytest.raises(ValueError, match="exists already"):
        scheduler.every("once", 60, lambda: None, "second")


def test_ophion_status_lists_the_housekeeping_job_with_its_last_and_next_run(
    daemon_factory: Any,
) -> None:
    daemon: RunningDaemon = daemon_factory(env={"OPHION_HOUSEKEEPING_INTERVAL": "1s"})

    def housekeeping() -> dict[str, Any]:
        [job] = [j for j in daemon.status()["jobs"] if j["name"] == "housekeeping"]
        return job

    _wait_for(lambda: housekeeping()["runs"] >= 2)
    job = housekeeping()
    assert job["interval_s"] == 1.0 and job["failures"] == 0 and job["last_error"] is None
    assert job["next_run"] > job["last_run"]
    shown = ophion("status")
    assert shown.returncode == 0, shown.stderr
    line = next(line for line in shown.stdout.splitlines() if line.startswith("housekeeping"))
    assert "1s" in line and "ok in" in line


def test_housekeeping_asked_of_a_stopped_writer_fails_instead_of_passing_for_done(
    tmp_path: Any,
) -> None:
    from ophiond.store.partitions import PartitionSet, connect
    from ophiond.store.writer import Writer
    from ophiond.telemetry import Telemetry

    partitions = PartitionSet(connect(256 << 20, tmp_path), tmp_path)
    partitions.open()
    writer = Writer(partitions, Telemetry(), 1000, 10**12, 86400)
    writer.start()
    writer.housekeep()  # a working writer does it
    writer.stop()
    with pytest.raises(StoreError, match="the writer has stopped"):
        writer.housekeep(timeout=5)
    partitions.close()
