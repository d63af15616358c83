"""Where the daemon's time goes during ingest: py-spy samples, summarized.

``py-spy record -f raw --threads`` writes one line per distinct stack: the thread, the frames from
the outermost in, and how many samples had that stack. Only threads that were running (not
waiting) are sampled. The summary gives the share of samples per thread, per function where the
sample was taken (self), and per function anywhere on the stack (inclusive).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

_LINE_NUMBER = re.compile(r":\d+\)$")
_THREAD_ID = re.compile(r"^thread \(0x[0-9A-Fa-f]+\)|^thread \(\d+\)")
# Frames every thread has at its base; they would top the inclusive ranking and say nothing.
_PLUMBING = ("/threading.py)", "(threading.py)", "futures/thread.py)")


class ProfilerMissing(RuntimeError):
    """py-spy is not installed."""


def start_recording(pid: int, seconds: int, output: Path) -> subprocess.Popen[bytes]:
    """Start ``py-spy record`` on ``pid`` for ``seconds``; wait on the returned process."""
    py_spy = shutil.which("py-spy")
    if py_spy is None:
        raise ProfilerMissing("py-spy is not installed: python3 -m pip install py-spy")
    command = [py_spy, "record", "--pid", str(pid), "--duration", str(seconds)]
    command += ["--format", "raw", "--threads", "--output", str(output)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@dataclass
class ProfileSummary:
    """Sample shares (0..1) of the busiest threads and functions."""

    samples: int
    threads: list[tuple[str, float]]
    self_time: list[tuple[str, float]]
    inclusive: list[tuple[str, float]]


def _function(frame: str) -> str:
    """``name (path/file.py:123)`` without the line number, so a function's lines add up."""
    return _LINE_NUMBER.sub(")", frame.strip())


def _thread(frame: str) -> str:
    """``thread (1234): ophion-writer`` as ``ophion-writer``; thread pools share one name."""
    name = _THREAD_ID.sub("", frame).lstrip(": ").strip() or "(unnamed)"
    return re.sub(r"_\d+$", "_N", name)


def summarize(raw: Path, top: int = 12) -> ProfileSummary:
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
        total += count
        threads[_thread(thread)] += count
        functions = [_function(frame) for frame in frames]
        if functions:
            self_time[functions[-1]] += count
        for function in set(functions):
            if not function.endswith(_PLUMBING):
                inclusive[function] += count

    def shares(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(name, n / total) for name, n in counter.most_common(top)] if total else []

    return ProfileSummary(total, shares(threads), shares(self_time), shares(inclusive))
