"""Concurrent OTLP senders in separate processes, counting only acknowledged records.

Each sender is its own process (so the load generator is not held back by one GIL), with one
connection: a gRPC channel calling ``Export`` with raw bytes, or a keep-alive HTTP connection
POSTing ``application/x-protobuf``. A sender waits for each answer before sending the next
request, as an SDK's batch exporter does. Records count once the daemon has acknowledged them:
gRPC OK or HTTP 200, minus any ``partial_success`` rejections. A retryable refusal (gRPC
UNAVAILABLE or RESOURCE_EXHAUSTED, HTTP 429 or 503, a dropped connection) is retried after the
delay the daemon asks for (``Retry-After``) or an exponential backoff, and counts only once
accepted. Any other answer stops the benchmark: it would be a bug, not a measurement.
"""

from __future__ import annotations

import http.client
import math
import multiprocessing
import pickle
import queue
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.daemon import Daemon, RssSampler, cpu_seconds, machine_busy_seconds
from benchmarks.workload import PayloadStream, Pool

_GRPC_METHODS = {
    "traces": "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    "logs": "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
}
_HTTP_PATHS = {"traces": "/v1/traces", "logs": "/v1/logs"}
_FIRST_BACKOFF_S = 0.1
_MAX_BACKOFF_S = 5.0
_REQUEST_TIMEOUT_S = 120.0


class Refused(Exception):
    """A retryable refusal; retry after ``delay`` seconds (None: use the backoff)."""

    def __init__(self, reason: str, delay: float | None = None) -> None:
        super().__init__(reason)
        self.delay = delay


class SendFailed(Exception):
    """An answer no OTLP client would retry: the benchmark stops."""


def _rejected(signal: str, answer: bytes) -> int:
    """The rejected count of an Export response's ``partial_success``."""
    if signal == "traces":
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceResponse,
        )

        return int(ExportTraceServiceResponse.FromString(answer).partial_success.rejected_spans)
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse

    return int(ExportLogsServiceResponse.FromString(answer).partial_success.rejected_log_records)


class GrpcTransport:
    """``Export`` over one gRPC channel, raw bytes in and out."""

    def __init__(self, address: str, signal: str) -> None:
        import grpc

        self._grpc = grpc
        self.signal = signal
        self.channel = grpc.insecure_channel(address)
        self._export = self.channel.unary_unary(_GRPC_METHODS[signal])

    def send(self, body: bytes) -> int:
        """Send one request; return the rejected count or raise Refused / SendFailed."""
        grpc = self._grpc
        try:
            answer = self._export(body, timeout=_REQUEST_TIMEOUT_S)
        except grpc.RpcError as e:
            code = e.code()
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED):
                raise Refused(f"{code.name}: {e.details()}") from None
            raise SendFailed(f"gRPC {code.name}: {e.details()}") from None
        return _rejected(self.signal, answer)

    def close(self) -> None:
        self.channel.close()


class HttpTransport:
    """``POST /v1/<signal>`` over one keep-alive HTTP/1.1 connection."""

    def __init__(self, address: str, signal: str) -> None:
        host, _, port = address.rpartition(":")
        self.signal = signal
        self.path = _HTTP_PATHS[signal]
        self.connection = http.client.HTTPConnection(host, int(port), timeout=_REQUEST_TIMEOUT_S)

    def send(self, body: bytes) -> int:
        """Send one request; return the rejected count or raise Refused / SendFailed."""
        headers = {"Content-Type": "application/x-protobuf"}
        try:
            self.connection.request("POST", self.path, body=body, headers=headers)
            response = self.connection.getresponse()
            answer = response.read()
        except (OSError, http.client.HTTPException) as e:
            self.connection.close()  # reconnects on the next request
            raise Refused(f"connection lost: {e!r}") from None
        if response.status == 200:
            return _rejected(self.signal, answer)
        if response.status in (429, 503):
            retry_after = response.getheader("Retry-After")
            delay = float(retry_after) if retry_after and retry_after.isdigit() else None
            raise Refused(f"HTTP {response.status}", delay)
        raise SendFailed(f"HTTP {response.status}: {answer[:300]!r}")

    def close(self) -> None:
        self.connection.close()


# ---------------------------------------------------------------------------------------------
# One sender process


@dataclass(frozen=True)
class SenderSpec:
    """What one sender process does."""

    transport: str  # "grpc" or "http"
    address: str
    signal: str
    index: int
    senders: int
    requests: int | None  # a fixed number of requests, or None: until the deadline


@dataclass
class SenderReport:
    """What one sender achieved."""

    acknowledged: int = 0
    requests: int = 0
    retries: int = 0
    rejected: int = 0
    abandoned: int = 0  # requests still refused when the time was up
    cpu_s: float = 0.0  # CPU time of this sender process (all its threads) while sending
    latencies_s: list[float] = field(default_factory=list)


def _send_until_accepted(
    transport: GrpcTransport | HttpTransport, body: bytes, report: SenderReport, deadline: float
) -> int | None:
    """Send ``body`` until it is accepted; the rejected count, or None if time ran out."""
    backoff = _FIRST_BACKOFF_S
    while True:
        try:
            return transport.send(body)
        except Refused as refusal:
            report.retries += 1
            delay = refusal.delay if refusal.delay is not None else backoff
            backoff = min(backoff * 2, _MAX_BACKOFF_S)
            if time.monotonic() + delay > deadline:
                return None
            time.sleep(delay)


def _sender_main(
    spec: SenderSpec,
    pool_path: str,
    start: Any,
    deadline: Any,
    messages: Any,
) -> None:
    """A sender process: load the pool, connect, wait for the start, send, report."""
    try:
        pool: Pool = pickle.loads(Path(pool_path).read_bytes())
        stream = PayloadStream(pool, spec.index, spec.senders)
        make = GrpcTransport if spec.transport == "grpc" else HttpTransport
        transport = make(spec.address, spec.signal)
        report = SenderReport()
        messages.put(("ready", spec.index, None))
        start.wait()
        end = deadline.value
        cpu_before = time.process_time()
        budget = spec.requests if spec.requests is not None else math.inf
        while report.requests < budget and time.monotonic() < end:
            body, records = stream.next()
            sent = time.monotonic()
            rejected = _send_until_accepted(transport, body, report, end)
            if rejected is None:
                report.abandoned += 1
                break
            report.latencies_s.append(time.monotonic() - sent)
            report.requests += 1
            report.rejected += rejected
            report.acknowledged += records - rejected
        report.cpu_s = time.process_time() - cpu_before
        transport.close()
        messages.put(("done", spec.index, asdict(report)))
    except BaseException:
        messages.put(("failed", spec.index, traceback.format_exc()))


# ---------------------------------------------------------------------------------------------
# A replay: several senders against one daemon


@dataclass
class ReplayResult:
    """One replay's figures; CPU and memory are the daemon's (with any child processes)."""

    transport: str
    signal: str
    senders: int
    elapsed_s: float
    requests: int
    acknowledged: int
    retries: int
    rejected: int
    abandoned: int
    records_per_s: float
    daemon_cpu_s: float
    daemon_cores: float  # daemon CPU seconds per second: how many cores it kept busy
    senders_cpu_s: float  # what the load generator took from the same cores
    machine_busy_cores: float  # all processes on the machine, this benchmark's and others'
    cpu_s_per_100k: float
    peak_rss_bytes: int  # sampled during the replay: the processes' RSS summed
    peak_pss_bytes: int  # the same, with shared pages counted once
    latency_p50_ms: float
    latency_p99_ms: float


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def replay(
    daemon: Daemon,
    transport: str,
    pool_path: Path,
    signal: str,
    senders: int,
    *,
    duration_s: float | None = None,
    records: int | None = None,
    records_per_request: int = 1000,
    progress: Callable[[], None] | None = None,
) -> ReplayResult:
    """Run ``senders`` processes against ``daemon`` for ``duration_s`` or until ``records``."""
    address = daemon.listen["grpc" if transport == "grpc" else "http"]
    per_sender: list[int | None] = [None] * senders
    if records is not None:
        total = -(-records // records_per_request)
        per_sender = [total // senders + (i < total % senders) for i in range(senders)]
    context = multiprocessing.get_context("spawn")
    start, deadline, messages = context.Event(), context.Value("d", math.inf), context.Queue()
    processes = [
        context.Process(
            target=_sender_main,
            args=(
                SenderSpec(transport, address, signal, i, senders, per_sender[i]),
                str(pool_path),
                start,
                deadline,
                messages,
            ),
            name=f"sender-{transport}-{i}",
        )
        for i in range(senders)
    ]
    for process in processes:
        process.start()
    try:
        _await(messages, "ready", senders, processes)
        cpu_before, busy_before = cpu_seconds(daemon.pid), machine_busy_seconds()
        began = time.monotonic()
        if duration_s is not None:
            deadline.value = began + duration_s
        with RssSampler(daemon.pid) as rss:
            start.set()
            reports = _await(messages, "done", senders, processes, progress)
        elapsed = time.monotonic() - began
        cpu = cpu_seconds(daemon.pid) - cpu_before
        busy = machine_busy_seconds() - busy_before
    finally:
        for process in processes:
            process.join(10)
            if process.is_alive():
                process.kill()
    latencies = [latency for report in reports for latency in report.latencies_s]
    acknowledged = sum(r.acknowledged for r in reports)
    return ReplayResult(
        transport=transport,
        signal=signal,
        senders=senders,
        elapsed_s=elapsed,
        requests=sum(r.requests for r in reports),
        acknowledged=acknowledged,
        retries=sum(r.retries for r in reports),
        rejected=sum(r.rejected for r in reports),
        abandoned=sum(r.abandoned for r in reports),
        records_per_s=acknowledged / elapsed,
        daemon_cpu_s=cpu,
        daemon_cores=cpu / elapsed,
        senders_cpu_s=sum(r.cpu_s for r in reports),
        machine_busy_cores=busy / elapsed,
        cpu_s_per_100k=cpu / acknowledged * 100_000 if acknowledged else math.nan,
        peak_rss_bytes=rss.peak,
        peak_pss_bytes=rss.peak_pss,
        latency_p50_ms=_quantile(latencies, 0.50) * 1000,
        latency_p99_ms=_quantile(latencies, 0.99) * 1000,
    )


def _await(
    messages: Any,
    kind: str,
    count: int,
    processes: list[Any],
    progress: Callable[[], None] | None = None,
) -> list[SenderReport]:
    """Collect ``count`` messages of ``kind`` from the senders; raise if one failed or died."""
    reports: list[SenderReport] = []
    received = 0
    while received < count:
        try:
            got, index, payload = messages.get(timeout=10)
        except queue.Empty:
            if progress is not None:
                progress()
            dead = [p.name for p in processes if p.exitcode not in (None, 0)]
            if dead:
                raise RuntimeError(f"sender processes died: {', '.join(dead)}") from None
            continue
        if got == "failed":
            raise RuntimeError(f"sender {index} failed:\n{payload}")
        if got != kind:
            raise RuntimeError(f"sender {index} sent {got!r} while waiting for {kind!r}")
        if payload is not None:
            reports.append(SenderReport(**payload))
        received += 1
    return reports
