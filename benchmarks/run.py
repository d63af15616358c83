"""Benchmark ophiond: ingest throughput and its ceiling, CPU, memory, disk, and query times.

Run from the repository root, after ``python3 -m pip install '.[test]'``::

    python3 -m benchmarks.run            # the full run: 10 M spans and 10 M log records
    python3 -m benchmarks.run --quick    # a few minutes: 200 k of each, 10 s replays

What it does, in order (docs/performance.md says more):

1. builds pre-encoded OTLP trace and log requests shaped like real traffic (seeded);
2. measures the ceiling: one Python process parsing and flattening the same requests;
3. starts ophiond in a temporary OPHION_HOME and replays trace requests over OTLP/gRPC, then
   over OTLP/HTTP, from several sender processes for a fixed time; reports acknowledged
   spans/s, the daemon's CPU seconds per 100k spans, its peak RSS, and disk bytes per span
   after a clean stop (optionally with py-spy attached during an extra gRPC replay);
4. loads N spans, then N log records, into a fresh daemon over gRPC, and times four queries
   through the API (median of repeated runs);
5. compares with the targets of design section 9, prints pass/fail, and writes the results to
   benchmarks/results/ and a row of the table in docs/performance.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import pickle
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks import report
from benchmarks.ceiling import Ceiling, measure_ceiling
from benchmarks.daemon import Daemon, directory_bytes, peak_rss_bytes, running
from benchmarks.profile import (
    ProfileSummary,
    cores_by_thread,
    start_recording,
    summarize,
    thread_cpu,
    thread_names,
)
from benchmarks.queries import time_queries
from benchmarks.senders import ReplayResult, replay
from benchmarks.workload import RARE_LOG_TEXT, PayloadStream, Pool, build_pool

_MB = 1_000_000
_DATA_WINDOW_NS = 23 * 3600 * 10**9  # data spans the 23 h before the run: all of it is in "1d"
_POOL_TEMPLATES = 250  # distinct requests per signal; see docs/performance.md
_QUICK_POOL_TEMPLATES = 40


def _count(text: str) -> int:
    """``10M``, ``200k``, ``1_000_000`` -> an integer."""
    text = text.strip().lower().replace("_", "")
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    number = text[:-1] if scale > 1 else text
    try:
        return int(float(number) * scale)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a count: {text!r} (e.g. 10M, 200k)") from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python3 -m benchmarks.run",
        description="Benchmark ophiond's ingest, disk use and queries against design section 9.",
    )
    parser.add_argument(
        "--size",
        type=_count,
        default=None,
        help="spans, and as many log records, loaded before timing the queries "
        "(default 10M; --quick: 200k; 0 skips the load and the queries)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a development run: 200k records, 10 s replays, fewer distinct requests",
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=None,
        help="seconds of each throughput replay (default 30; --quick: 10)",
    )
    parser.add_argument(
        "--senders", type=int, default=4, help="concurrent sender processes (default 4)"
    )
    parser.add_argument("--runs", type=int, default=7, help="timed runs per query (default 7)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the generated traffic")
    parser.add_argument(
        "--profile",
        type=int,
        metavar="SECONDS",
        default=0,
        help="also replay over gRPC for SECONDS with py-spy attached to the daemon, and "
        "summarize where its time goes (not counted in the figures)",
    )
    parser.add_argument(
        "--no-record",
        action="store_true",
        help="print only: write no JSON and no row in docs/performance.md",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary OPHION_HOMEs and their logs"
    )
    args = parser.parse_args(argv)
    if args.size is None:
        args.size = 200_000 if args.quick else 10_000_000
    if args.duration is None:
        args.duration = 10.0 if args.quick else 30.0
    if args.senders < 1 or args.runs < 1:
        parser.error("--senders and --runs must be at least 1")
    return args


# ---------------------------------------------------------------------------------------------
# Output


def say(text: str = "") -> None:
    print(text, flush=True)


def _mb(value: float) -> str:
    return f"{value / _MB:,.0f} MB"


def _describe(result: ReplayResult) -> str:
    what = "spans" if result.signal == "traces" else "log records"
    text = (
        f"{result.records_per_s:,.0f} {what}/s ({result.acknowledged:,} acknowledged in "
        f"{result.elapsed_s:.1f} s, {result.senders} senders)\n"
        f"         daemon CPU {result.cpu_s_per_100k:.2f} s per 100k, {result.daemon_cores:.2f} "
        f"cores busy (senders {result.senders_cpu_s / result.elapsed_s:.2f}); peak RSS "
        f"{_mb(result.peak_rss_bytes)}; request latency p50 {result.latency_p50_ms:.0f} ms, "
        f"p99 {result.latency_p99_ms:.0f} ms"
    )
    if result.retries or result.rejected or result.abandoned:
        text += (
            f"; {result.retries} retries, {result.rejected} rejected, "
            f"{result.abandoned} abandoned at the deadline"
        )
    return text


@contextmanager
def _phase(title: str) -> Iterator[None]:
    say(f"\n== {title}")
    began = time.monotonic()
    yield
    say(f"   ({time.monotonic() - began:.0f} s)")


# ---------------------------------------------------------------------------------------------
# Phases


def build_pools(workdir: Path, templates: int, seed: int) -> dict[str, Path]:
    """Build and pickle the trace and log pools; the sender processes load them from disk."""
    end_ns = time.time_ns()
    paths = {}
    for signal in ("traces", "logs"):
        pool = build_pool(signal, templates, end_ns, _DATA_WINDOW_NS, seed)
        path = workdir / f"{signal}.pool"
        path.write_bytes(pickle.dumps(pool, protocol=pickle.HIGHEST_PROTOCOL))
        paths[signal] = path
        size = sum(t.size for t in pool.templates) / len(pool.templates)
        say(
            f"   {signal}: {templates} distinct requests of {pool.records_per_request:,} records, "
            f"{size / 1000:,.0f} kB each"
        )
    return paths


def _load_pool(path: Path) -> Pool:
    pool: Pool = pickle.loads(path.read_bytes())
    return pool


def _warm_up(daemon: Daemon, pool_path: Path) -> None:
    """One request per transport, so the replays do not pay for first-call imports."""
    for transport in ("grpc", "http"):
        replay(daemon, transport, pool_path, "traces", 1, records=1)


def throughput_phase(
    workdir: Path, pools: dict[str, Path], args: argparse.Namespace
) -> dict[str, Any]:
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
                args.senders,
                duration_s=args.duration,
            )
            say(f"   {transport:4}: {_describe(result)}")
            results[transport] = result
        if args.profile:
            results["profile"] = profile_phase(daemon, pools["traces"], args, workdir)
        stored = daemon.stored()["traces"]
        counted = daemon.count("spans")
        results["vm_hwm_bytes"] = peak_rss_bytes(daemon.pid)
    data = directory_bytes(daemon.data_dir)
    results.update(stored_spans=stored, counted_spans=counted, data_bytes=data)
    results["bytes_per_span"] = data / stored if stored else math.nan
    say(
        f"   stored {stored:,} spans (the spans view counts {counted:,}); "
        f"{data / _MB:,.1f} MB on disk after a clean stop = "
        f"{results['bytes_per_span']:.1f} bytes/span; VmHWM {_mb(results['vm_hwm_bytes'])}"
    )
    return results


def profile_phase(
    daemon: Daemon, pool_path: Path, args: argparse.Namespace, workdir: Path
) -> dict[str, Any]:
    """py-spy and per-thread CPU during an extra gRPC replay (its figures are not counted)."""
    raw = workdir / "py-spy-ingest.txt"
    seconds = args.profile
    with ThreadPoolExecutor(1) as background:
        # The replay outlasts the recording on both sides, so the samples see only full load.
        running_replay = background.submit(
            replay, daemon, "grpc", pool_path, "traces", args.senders, duration_s=seconds + 6.0
        )
        time.sleep(3)
        before, began = thread_cpu(daemon.pid), time.monotonic()
        recorder = start_recording(daemon.pid, seconds, raw)
        _, errors = recorder.communicate(timeout=seconds + 60)
        elapsed = time.monotonic() - began
        after = thread_cpu(daemon.pid)
        names = thread_names(daemon.pid)
        result = running_replay.result()
    if recorder.returncode != 0 or not raw.exists():
        raise RuntimeError(f"py-spy failed: {errors.decode(errors='replace')[-2000:]}")
    summary = summarize(raw, elapsed, cores_by_thread(before, after, names, elapsed))
    say(
        f"   profiled gRPC replay (py-spy attached, {seconds} s): "
        f"{result.records_per_s:,.0f} spans/s"
    )
    _print_profile(summary)
    return {"replay": asdict(result), "summary": asdict(summary), "raw": raw.read_text()}


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


def _progress(daemon: Daemon, signal: str, target: int) -> Callable[[], None]:
    began = time.monotonic()

    def show() -> None:
        stored = daemon.stored()[signal]
        rate = stored / max(time.monotonic() - began, 1e-9)
        left = (target - stored) / rate if rate else math.inf
        say(f"   ... {stored:,} of {target:,} stored, {rate:,.0f}/s, about {left:,.0f} s left")

    return show


def _load(
    home: Path, pools: dict[str, Path], signal: str, args: argparse.Namespace
) -> dict[str, Any]:
    """Start the daemon on ``home``, load ``args.size`` records of ``signal``, stop cleanly."""
    with running(home) as daemon:
        result = replay(
            daemon,
            "grpc",
            pools[signal],
            signal,
            args.senders,
            records=args.size,
            progress=_progress(daemon, signal, args.size),
        )
        stored = daemon.stored()[signal]
        hwm = peak_rss_bytes(daemon.pid)
    say(f"   {signal}: {_describe(result)}; VmHWM {_mb(hwm)}")
    if stored != result.acknowledged:
        raise RuntimeError(
            f"acknowledged {result.acknowledged:,} {signal} but /status says {stored:,} stored"
        )
    return {"replay": asdict(result), "stored": stored, "vm_hwm_bytes": hwm}


def load_and_query_phase(
    workdir: Path, pools: dict[str, Path], args: argparse.Namespace
) -> dict[str, Any]:
    """Load spans, then logs (a clean stop after each, to size the files), then time queries."""
    home = workdir / "load"
    results: dict[str, Any] = {"spans": _load(home, pools, "traces", args)}
    after_spans = directory_bytes(home / "data")
    results["logs"] = _load(home, pools, "logs", args)
    after_logs = directory_bytes(home / "data")
    results["bytes_per_span"] = after_spans / results["spans"]["stored"]
    results["bytes_per_log"] = (after_logs - after_spans) / results["logs"]["stored"]
    say(
        f"   on disk: {after_spans / _MB:,.0f} MB after the spans "
        f"({results['bytes_per_span']:.1f} bytes/span), {after_logs / _MB:,.0f} MB after the "
        f"logs ({results['bytes_per_log']:.1f} bytes/log record)"
    )

    trace_id, customer = _known_trace(pools["traces"], args)
    with running(home) as daemon:
        spans, logs = daemon.count("spans"), daemon.count("logs")
        last_hour = daemon.api.post(
            "/sql",
            {"sql": ("SELECT count(*) FROM spans WHERE start_time >= now() - INTERVAL 1 HOUR")},
        )
        results["stored_spans"], results["stored_logs"] = spans, logs
        results["spans_last_hour"] = int(last_hour["rows"][0][0])
        say(
            f"   querying {spans:,} spans ({results['spans_last_hour']:,} in the last hour) "
            f"and {logs:,} log records; median of {args.runs} runs after one warm-up:"
        )
        timings = time_queries(
            daemon.api, trace_id, ("app.customer.id", customer), RARE_LOG_TEXT, args.runs
        )
        results["vm_hwm_bytes"] = peak_rss_bytes(daemon.pid)
    for timing in timings:
        say(
            f"   {timing.name:17} {timing.median_ms:8.1f} ms  (min {timing.min_ms:.1f}, "
            f"max {timing.max_ms:.1f}; {timing.items} items)  {timing.request}"
        )
    results["queries"] = [asdict(t) for t in timings]
    return results


def _known_trace(pool_path: Path, args: argparse.Namespace) -> tuple[str, str]:
    """A trace id the load sent (sender 0's middle request) and its root span's customer."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    pool = _load_pool(pool_path)
    stream = PayloadStream(pool, 0, args.senders)
    requests = max(1, args.size // pool.records_per_request // args.senders)
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


# ---------------------------------------------------------------------------------------------
# Putting it together


def figures(
    ceiling: Ceiling, throughput: dict[str, Any], load: dict[str, Any] | None
) -> dict[str, float | None]:
    """The headline figures, keyed as the targets and the docs table name them."""
    grpc: ReplayResult = throughput["grpc"]
    http: ReplayResult = throughput["http"]
    ingest_peaks = [grpc.peak_rss_bytes, http.peak_rss_bytes, throughput["vm_hwm_bytes"]]
    out: dict[str, float | None] = {
        "ingest_grpc": grpc.records_per_s,
        "ingest_http": http.records_per_s,
        "ceiling": ceiling.spans_per_s,
        "ratio_grpc": grpc.records_per_s / ceiling.spans_per_s,
        "ratio_http": http.records_per_s / ceiling.spans_per_s,
        "cpu_s_per_100k": grpc.cpu_s_per_100k,
        "bytes_per_span": throughput["bytes_per_span"],
        "bytes_per_log": None,
        "load_spans_per_s": None,
    }
    if load is not None:
        ingest_peaks += [load["spans"]["vm_hwm_bytes"], load["logs"]["vm_hwm_bytes"]]
        # At the loaded size the fixed cost of a file weighs less: the fairer disk figure.
        out["bytes_per_span"] = load["bytes_per_span"]
        out["bytes_per_log"] = load["bytes_per_log"]
        out["load_spans_per_s"] = load["spans"]["replay"]["records_per_s"]
        out.update({q["name"]: q["median_ms"] for q in load["queries"]})
    out["peak_rss"] = max(ingest_peaks) / _MB
    return out


def _print_targets(evaluated: list[dict[str, Any]]) -> None:
    say("\n== targets (design section 9)")
    for item in evaluated:
        verdict = {True: "PASS", False: "FAIL", None: "n/a "}[item["passed"]]
        measured = (
            "not measured"
            if item["measured"] is None
            else (f"{item['measured']:,.1f} {item['unit']}")
        )
        note = f"  ({item['note']})" if item["note"] else ""
        say(f"   {verdict}  {item['label']:34} {measured:>18}   target {item['target']}{note}")


def _size_label(size: int, quick: bool) -> str:
    def short(n: int) -> str:
        return f"{n / 1e6:g}M" if n >= 1_000_000 else f"{n / 1e3:g}k"

    label = f"{short(size)} spans + {short(size)} logs" if size else "no load"
    return label + (" (quick)" if quick else "")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = dt.datetime.now(dt.UTC)
    info = report.machine()
    say(
        f"ophion benchmark, {started:%Y-%m-%d %H:%M} UTC on {info['host']}: "
        f"{report.machine_label(info)}, load average {info['load_average'][0]:.2f}"
    )
    say(
        f"The load generator ({args.senders} sender processes) shares the "
        f"{info['cores']} cores with the daemon, so the ingest figures are a floor."
    )
    workdir = Path(tempfile.mkdtemp(prefix="ophion-bench-"))
    try:
        with _phase("building requests"):
            templates = _QUICK_POOL_TEMPLATES if args.quick else _POOL_TEMPLATES
            pools = build_pools(workdir, templates, args.seed)
        with _phase("ceiling: one process parsing and flattening the same requests"):
            ceiling = measure_ceiling(
                _load_pool(pools["traces"]), min_seconds=3 if args.quick else 10
            )
            say(
                f"   parse {ceiling.parse_spans_per_s:,.0f} spans/s, flatten (decode_traces) "
                f"{ceiling.flatten_spans_per_s:,.0f} spans/s, both {ceiling.spans_per_s:,.0f} "
                "spans/s"
            )
        with _phase(f"throughput: {args.duration:g} s per transport"):
            throughput = throughput_phase(workdir, pools, args)
        load = None
        if args.size:
            with _phase(f"load {args.size:,} spans and {args.size:,} log records, then query"):
                load = load_and_query_phase(workdir, pools, args)
    finally:
        if args.keep:
            say(f"\nkept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    headline = figures(ceiling, throughput, load)
    say(
        f"\n   ingest / ceiling: gRPC {headline['ratio_grpc']:.2f}, "
        f"HTTP {headline['ratio_http']:.2f}"
    )
    stored = load["stored_spans"] if load else 0
    evaluated = report.evaluate(headline, stored)
    _print_targets(evaluated)
    info["load_average_after"] = list(os.getloadavg())
    raw_profile = throughput["profile"].pop("raw") if "profile" in throughput else None
    results = {
        "date": started.isoformat(),
        "size_label": _size_label(args.size, args.quick),
        "machine": info,
        "settings": {k: v for k, v in vars(args).items()},
        "figures": headline,
        "targets": evaluated,
        "ceiling": {**asdict(ceiling), "spans_per_s": ceiling.spans_per_s},
        "throughput": {
            key: asdict(value) if isinstance(value, ReplayResult) else value
            for key, value in throughput.items()
        },
        "load": load,
    }
    if not args.no_record:
        path = report.save_json(results, started)
        if raw_profile is not None:
            kept = path.with_name(path.stem + "-py-spy.txt")
            kept.write_text(raw_profile)
            say(f"py-spy samples: {kept.relative_to(report.REPO)}")
        report.add_table_row(report.table_row(results))
        say(f"\nresults: {path.relative_to(report.REPO)}; a row added to docs/performance.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
