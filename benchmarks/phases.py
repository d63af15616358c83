"""The benchmark's phases: build the requests, replay them, load and query; each prints as it goes.

Every phase starts its own ophiond (``benchmarks.daemon.running``) in a directory under the
run's temporary work directory, and stops it cleanly before sizing its files.
"""

from __future__ import annotations

import math
import pickle
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.daemon import Daemon, directory_bytes, peak_rss_bytes, process_tree, running
from benchmarks.profile import (
    ProfileSummary,
    cores_by_thread,
    start_recording,
    summarize,
    thread_cpu,
    thread_names,
    tree_thread_cpu,
)
from benchmarks.queries import time_queries
from benchmarks.senders import ReplayResult, replay
from benchmarks.workload import RARE_LOG_TEXT, PayloadStream, Pool, build_pool
from ophiond.api.contract import SqlRequest

MB = 1_000_000
# The data covers the 23 hours before the run, so "since=1d" sees all of it and the last hour
# about 1/23 of it.
DATA_WINDOW_NS = 23 * 3600 * 10**9


@dataclass(frozen=True)
class Settings:
    """What the command line chose."""

    size: int  # spans, and as many log records, to load before the queries (0: none)
    duration_s: float  # each throughput replay
    senders: int  # concurrent sender processes
    runs: int  # timed runs per query
    seed: int  # of the generated traffic
    profile_s: int  # seconds of the py-spy replay (0: none)
    templates: int  # distinct requests per signal
    quick: bool  # a development run (--quick)


# ---------------------------------------------------------------------------------------------
# Output


def say(text: str = "") -> None:
    print(text, flush=True)


def _mb(value: float) -> str:
    return f"{value / MB:,.0f} MB"


def describe(result: ReplayResult) -> str:
    what = "spans" if result.signal == "traces" else "log records"
    text = (
        f"{result.records_per_s:,.0f} {what}/s ({result.acknowledged:,} acknowledged in "
        f"{result.elapsed_s:.1f} s, {result.senders} senders)\n"
        f"         daemon CPU {result.cpu_s_per_100k:.2f} s per 100k, {result.daemon_cores:.2f} "
        f"cores busy (senders {result.senders_cpu_s / result.elapsed_s:.2f}, whole machine "
        f"{result.machine_busy_cores:.2f}); peak RSS "
        f"{_mb(result.peak_rss_bytes)} (PSS {_mb(result.peak_pss_bytes)}); request latency p50 {result.latency_p50_ms:.0f} ms, "
        f"p99 {result.latency_p99_ms:.0f} ms"
    )
    if result.retries or result.rejected or result.abandoned:
        text += (
            f"; {result.retries} retries, {result.rejected} rejected, "
            f"{result.abandoned} abandoned at the deadline"
        )
    return text


@contextmanager
def phase(title: str) -> Iterator[None]:
    say(f"\n== {title}")
    began = time.monotonic()
    yield
    say(f"   ({time.monotonic() - began:.0f} s)")


# ---------------------------------------------------------------------------------------------
# Phases


def build_pools(workdir: Path, settings: Settings) -> dict[str, Path]:
    """Build and pickle the trace and log pools; the sender processes load them from disk."""
    end_ns = time.time_ns()
    paths = {}
    for signal in ("traces", "logs"):
        pool = build_pool(signal, settings.templates, end_ns, DATA_WINDOW_NS, settings.seed)
        path = workdir / f"{signal}.pool"
        path.write_bytes(pickle.dumps(pool, protocol=pickle.HIGHEST_PROTOCOL))
        paths[signal] = path
        size = sum(t.size for t in pool.templates) / len(pool.templates)
        say(
            f"   {signal}: {settings.templates} distinct requests of {pool.records_per_request:,} records, "
            f"{size / 1000:,.0f} kB each"
        )
    return paths


def load_pool(path: Path) -> Pool:
    pool: Pool = pickle.loads(path.read_bytes())
    return pool


def _warm_up(daemon: Daemon, pool_path: Path) -> None:
    """One request per transport, so the replays do not pay for first-call imports."""
    for transport in ("grpc", "http"):
        replay(daemon, transport, pool_path, "traces", 1, records=1)


def throughput_phase(workdir: Path, pools: dict[str, Path], settings: Settings) -> dict[str, Any]:
    """Replay over gRPC then HTTP into one daemon; then disk per span after a clean stop."""
    with running(workdir / "throughput") as daemon:
        _warm_up(daemon, pools["traces"])
        results: dict[str, Any] = {}
        for transport in ("grpc", "http"):
            result = replay(
                daemon,
                transport,
                pools["traces"],
                "traces",
                settings.senders,
                duration_s=settings.duration_s,
            )
            say(f"   {transport:4}: {describe(result)}")
            results[transport] = result
        if settings.profile_s:
            results["profile"] = profile_phase(daemon, pools["traces"], settings, workdir)
        stored = daemon.accepted()["traces"]
        counted = daemon.count("spans")
        results["vm_hwm_bytes"] = peak_rss_bytes(daemon.pid)
    data = directory_bytes(daemon.data_dir)
    results.update(stored_spans=stored, counted_spans=counted, data_bytes=data)
    results["bytes_per_span"] = data / stored if stored else math.nan
    if counted != stored:
        say(f"   WARNING: /status says {stored:,} spans stored, the spans view has {counted:,}")
    say(
        f"   stored {stored:,} spans (the spans view counts {counted:,}); "
        f"{data / MB:,.1f} MB on disk after a clean stop = "
        f"{results['bytes_per_span']:.1f} bytes/span; VmHWM {_mb(results['vm_hwm_bytes'])}"
    )
    return results


def profile_phase(
    daemon: Daemon, pool_path: Path, settings: Settings, workdir: Path
) -> dict[str, Any]:
    """py-spy and per-thread CPU during an extra gRPC replay (its figures are not counted)."""
    raw, raw_worker = workdir / "py-spy-ingest.txt", workdir / "py-spy-worker.txt"
    seconds = settings.profile_s
    workers = [p for p in process_tree(daemon.pid) if p != daemon.pid]
    with ThreadPoolExecutor(1) as background:
        # The replay outlasts the recording on both sides, so the samples see only full load.
        running_replay = background.submit(
            replay, daemon, "grpc", pool_path, "traces", settings.senders, duration_s=seconds + 6.0
        )
        time.sleep(3)
        before, began = tree_thread_cpu(daemon.pid, workers), time.monotonic()
        recorders = [(start_recording(daemon.pid, seconds, raw), raw)]
        if workers:  # one decode worker is enough: they all run the same code
            worker_recorder = start_recording(workers[0], seconds, raw_worker, gil=False)
            recorders.append((worker_recorder, raw_worker))
        errors = [recorder.communicate(timeout=seconds + 60)[1] for recorder, _ in recorders]
        elapsed = time.monotonic() - began
        after = tree_thread_cpu(daemon.pid, workers)
        names = thread_names(daemon.pid)
        for worker in workers:
            names.update({tid: "decode workers (processes)" for tid in thread_cpu(worker)})
        result = running_replay.result()
    for (recorder, path), error in zip(recorders, errors, strict=True):
        if recorder.returncode != 0 or not path.exists():
            raise RuntimeError(f"py-spy failed: {error.decode(errors='replace')[-2000:]}")
    summary = summarize(raw, elapsed, cores_by_thread(before, after, names, elapsed))
    say(
        f"   profiled gRPC replay (py-spy attached, {seconds} s): "
        f"{result.records_per_s:,.0f} spans/s"
    )
    _print_profile(summary)
    out = {"replay": asdict(result), "summary": asdict(summary), "raw": raw.read_text()}
    if workers:
        worker = summarize(raw_worker, elapsed, [])
        _print_worker_profile(worker)
        out.update(worker_summary=asdict(worker), worker_raw=raw_worker.read_text())
    return out


def _print_profile(summary: ProfileSummary) -> None:
    say("   CPU by thread (cores busy):")
    for name, cores in summary.cores_by_thread[:10]:
        say(f"     {cores:5.2f}  {name}")
    say(
        f"   the GIL was held {summary.gil_held * 100:.0f}% of the time "
        f"({summary.gil_samples:,} samples); by thread:"
    )
    for name, share in summary.gil_by_thread[:5]:
        say(f"     {share * 100:5.1f}%  {name}")
    for title, rows in (
        ("self (function holding the GIL)", summary.self_time),
        ("inclusive (anywhere on the GIL holder's stack)", summary.inclusive),
    ):
        say(f"   top {title}:")
        for name, share in rows[:12]:
            say(f"     {share * 100:5.1f}%  {name}")


def _print_worker_profile(summary: ProfileSummary) -> None:
    say(f"   one decode worker was busy {summary.gil_held * 100:.0f}% of the time; top self:")
    for name, share in summary.self_time[:12]:
        say(f"     {share * 100:5.1f}%  {name}")
    say("   top inclusive:")
    for name, share in summary.inclusive[:12]:
        say(f"     {share * 100:5.1f}%  {name}")


def _progress(daemon: Daemon, signal: str, target: int) -> Callable[[], None]:
    began = time.monotonic()

    def show() -> None:
        accepted = daemon.accepted()[signal]
        rate = accepted / max(time.monotonic() - began, 1e-9)
        left = (target - accepted) / rate if rate else math.inf
        say(f"   ... {accepted:,} of {target:,} accepted, {rate:,.0f}/s, about {left:,.0f} s left")

    return show


def _load(home: Path, pools: dict[str, Path], signal: str, settings: Settings) -> dict[str, Any]:
    """Start the daemon on ``home``, load ``settings.size`` records of ``signal``, stop cleanly."""
    with running(home) as daemon:
        result = replay(
            daemon,
            "grpc",
            pools[signal],
            signal,
            settings.senders,
            records=settings.size,
            progress=_progress(daemon, signal, settings.size),
        )
        stored = daemon.accepted()[signal]
        hwm = peak_rss_bytes(daemon.pid)
    say(f"   {signal}: {describe(result)}; VmHWM {_mb(hwm)}")
    if stored != result.acknowledged:
        say(
            f"   WARNING: {result.acknowledged:,} acknowledged but /status says {stored:,} accepted"
        )
    return {"replay": asdict(result), "stored": stored, "vm_hwm_bytes": hwm}


def load_and_query_phase(
    workdir: Path, pools: dict[str, Path], settings: Settings
) -> dict[str, Any]:
    """Load spans, then logs (a clean stop after each, to size the files), then time queries."""
    home = workdir / "load"
    results: dict[str, Any] = {"spans": _load(home, pools, "traces", settings)}
    after_spans = directory_bytes(home / "data")
    results["logs"] = _load(home, pools, "logs", settings)
    after_logs = directory_bytes(home / "data")
    results["bytes_per_span"] = after_spans / results["spans"]["stored"]
    results["bytes_per_log"] = (after_logs - after_spans) / results["logs"]["stored"]
    say(
        f"   on disk: {after_spans / MB:,.0f} MB after the spans "
        f"({results['bytes_per_span']:.1f} bytes/span), {after_logs / MB:,.0f} MB after the "
        f"logs ({results['bytes_per_log']:.1f} bytes/log record)"
    )

    trace_id, customer = _known_trace(pools["traces"], settings)
    with running(home) as daemon:
        spans, logs = daemon.count("spans"), daemon.count("logs")
        last_hour = daemon.api.sql(
            SqlRequest("SELECT count(*) FROM spans WHERE start_time >= now() - INTERVAL 1 HOUR")
        )
        results["stored_spans"], results["stored_logs"] = spans, logs
        results["spans_last_hour"] = int(last_hour["rows"][0][0])
        say(
            f"   querying {spans:,} spans ({results['spans_last_hour']:,} in the last hour) "
            f"and {logs:,} log records; median of {settings.runs} runs after one warm-up:"
        )
        timings = time_queries(
            daemon.api, trace_id, ("app.customer.id", customer), RARE_LOG_TEXT, settings.runs
        )
        results["vm_hwm_bytes"] = peak_rss_bytes(daemon.pid)
    for timing in timings:
        say(
            f"   {timing.name:17} {timing.median_ms:8.1f} ms  (min {timing.min_ms:.1f}, "
            f"max {timing.max_ms:.1f}; {timing.items} items)  {timing.request}"
        )
    results["queries"] = [asdict(t) for t in timings]
    return results


def _known_trace(pool_path: Path, settings: Settings) -> tuple[str, str]:
    """A trace id the load sent (sender 0's middle request) and its root span's customer."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    pool = load_pool(pool_path)
    stream = PayloadStream(pool, 0, settings.senders)
    requests = max(1, settings.size // pool.records_per_request // settings.senders)
    for _ in range(requests // 2):
        stream.next()
    request = ExportTraceServiceRequest.FromString(stream.next()[0])
    root = next(
        span
        for resource_spans in request.resource_spans
        for scope_spans in resource_spans.scope_spans
        for span in scope_spans.spans
        if not span.parent_span_id
    )
    attributes = {kv.key: kv.value.string_value for kv in root.attributes}
    return root.trace_id.hex(), attributes["app.customer.id"]
