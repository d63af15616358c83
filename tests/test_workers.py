"""Decode worker processes: a worker that dies, or cannot be started again, costs one request a
retryable error and never leaves later requests waiting."""

from __future__ import annotations

import os
import signal
import subprocess
from typing import Any

import pytest
from test_store import _trace_request

from ophiond.errors import DecodeFailed, InvalidPayload
from ophiond.model import Signal
from ophiond.otlp import workers
from ophiond.otlp.workers import DecodePool


def _body(spans: int) -> bytes:
    return _trace_request(spans).SerializeToString()  # type: ignore[attr-defined]


def test_a_worker_decodes_and_rejects_like_the_daemon_would() -> None:
    pool = DecodePool(1)
    pool.start()
    try:
        batch = pool.decode(Signal.TRACES, _body(3), False, 0)
        assert batch.accepted == 3 and batch.tables["spans"].num_rows == 3
        with pytest.raises(InvalidPayload, match="malformed protobuf"):
            pool.decode(Signal.TRACES, b"\xff\xff\xff", False, 0)
    finally:
        pool.stop()


def test_a_dead_worker_is_replaced_even_after_a_failed_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pool = DecodePool(1)
    pool.start()
    try:
        os.kill(pool.pids()[0], signal.SIGKILL)
        real_popen = subprocess.Popen

        def no_processes(*args: Any, **kwargs: Any) -> Any:
            raise OSError(11, "Resource temporarily unavailable")

        monkeypatch.setattr(workers.subprocess, "Popen", no_processes)
        with pytest.raises(DecodeFailed):  # retryable for the client
            pool.decode(Signal.TRACES, _body(2), False, 0)
        monkeypatch.setattr(workers.subprocess, "Popen", real_popen)  # the pressure is over
        assert pool.decode(Signal.TRACES, _body(2), False, 0).accepted == 2
    finally:
        pool.stop()


def test_after_stop_requests_are_told_to_retry() -> None:
    pool = DecodePool(1)
    pool.start()
    pool.stop()
    with pytest.raises(DecodeFailed, match="shutting down"):
        pool.decode(Signal.TRACES, _body(1), False, 0)
