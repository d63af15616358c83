"""Where the daemon's time goes during ingest: CPU per thread, and py-spy's hot functions.

Two views, because neither is enough alone:

- CPU per thread, from /proc/PID/task/*/stat before and after a replay, named with the Python
  thread names py-spy reports (``py-spy dump``). This counts native work too: DuckDB appending
  without the GIL, grpcio's C core, DuckDB's own threads (shown as ``native: <comm>``).
- ``py-spy record --gil -f raw --threads``: samples of whichever thread holds the GIL, i.e. the
  Python work that serializes the daemon. Without ``--gil`` py-spy counts threads blocked in
  ``Condition.wait`` or ``select`` as running, which buries the real work. The share of
  samples out of the samples possible is how much of the time the GIL was held.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

SAMPLE_RATE = 100  # py-spy's default, samples per second
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_LINE_NUMBER = re.compile(r":\d+\)$")
_THREAD = re.compile(r"^thread \((?:0x)?([0-9A-Fa-f]+)\):?\s*(.*)$")
# Frames every thread has at its base; they would top the inclusive ranking and say nothing.
_PLUMBING = ("/threading.py)", "(threading.py)", "futures/thread.py)")


class ProfilerMissing(RuntimeError):
    """py-spy is not installed."""


def _py_spy() -> str:
    path = shutil.which("py-spy")
    if path is None:
        raise ProfilerMissing("py-spy is not installed: python3 -m pip install py-spy")
    return path


def start_recording(
    pid: int, seconds: int, output: Path, gil: bool = True
) -> subprocess.Popen[bytes]:
    """Start ``py-spy record`` (``--gil``: only the GIL holder) on ``pid`` for ``seconds``; wait
    on the returned process. A decode worker has one thread: there ``gil=False`` counts the
    samples where it is running, so the share of samples is how busy it was."""
    command = [_py_spy(), "record", "--pid", str(pid), "--duration", str(seconds)]
    command += ["--gil"] if gil else []
    command += ["--rate", str(SAMPLE_RATE), "--format", "raw", "--threads"]
    return subprocess.Popen(
        [*command, "--output", str(output)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def thread_names(pid: int) -> dict[int, str]:
    """OS thread id -> Python thread name, from ``py-spy dump``."""
    result = subprocess.run(
        [_py_spy(), "dump", "--json", "--pid", str(pid)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return {
        int(thread["os_thread_id"]): str(thread["thread_name"] or "(unnamed)")
        for thread in json.loads(result.stdout)
        if thread.get("os_thread_id") is not None
    }


def thread_cpu(pid: int) -> dict[int, tuple[str, float]]:
    """OS thread id -> (comm, user + system CPU seconds) of every thread of ``pid``."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue  # the thread ended meanwhile
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        out[int(task.name)] = (comm, (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS)
    return out


def tree_thread_cpu(pid: int, children: list[int]) -> dict[int, tuple[str, float]]:
    """:func:`thread_cpu` of ``pid`` and of its child processes (decode workers)."""
    out = thread_cpu(pid)
    for child in children:
        try:
            out.update(thread_cpu(child))
        except OSError:
            pass  # the worker ended meanwhile
    return out


def _group(name: str) -> str:
    """Thread pools number their threads (``ophion-grpc_3``); count them as one."""
    return re.sub(r"_\d+$", "_N", name)


def cores_by_thread(
    before: dict[int, tuple[str, float]],
    after: dict[int, tuple[str, float]],
    names: dict[int, str],
    elapsed_s: float,
) -> list[tuple[str, float]]:
    """CPU seconds per second of each thread group between two :func:`thread_cpu` readings."""
    cores: dict[str, float] = {}
    for tid, (comm, cpu) in after.items():
        used = cpu - before.get(tid, (comm, 0.0))[1]
        name = _group(names[tid]) if tid in names else f"native: {_group(comm)}"
        cores[name] = cores.get(name, 0.0) + used / elapsed_s
    ranked = sorted(cores.items(), key=lambda item: item[1], reverse=True)
    return [(name, value) for name, value in ranked if value >= 0.005]


@dataclass
class ProfileSummary:
    """CPU per thread group (cores), and shares (0..1) of the GIL samples."""

    seconds: float
    cores_by_thread: list[tuple[str, float]]
    gil_samples: int
    gil_held: float  # share of the time some thread held the GIL
    gil_by_thread: list[tuple[str, float]]
    self_time: list[tuple[str, float]]
    inclusive: list[tuple[str, float]]


def _function(frame: str) -> str:
    """``name (path/file.py:123)`` without the line number, so a function's lines add up."""
    return _LINE_NUMBER.sub(")", frame.strip())


def summarize(
    raw: Path, seconds: float, cores: list[tuple[str, float]], top: int = 15
) -> ProfileSummary:
    """Read py-spy's raw output and rank threads and functions by their share of samples."""
    threads: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        thread, *frames = stack.split(";")
        match = _THREAD.match(thread)
        total += count
        threads[_group(match.group(2) if match and match.group(2) else thread)] += count
        functions = [_function(frame) for frame in frames]
        if functions:
            self_time[functions[-1]] += count
        for function in set(functions):
            if not function.endswith(_PLUMBING):
                inclusive[function] += count

    def shares(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(name, n / total) for name, n in counter.most_common(top)] if total else []

    return ProfileSummary(
        seconds=seconds,
        cores_by_thread=cores,
        gil_samples=total,
        gil_held=min(total / (seconds * SAMPLE_RATE), 1.0),
        gil_by_thread=shares(threads),
        self_time=shares(self_time),
        inclusive=shares(inclusive),
    )
