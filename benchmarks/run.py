"""Benchmark ophiond: ingest throughput and its ceiling, CPU, memory, disk, and query times.

Run from the repository root, after ``python3 -m pip install -c .ci/constraints.txt '.[test]'``::

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
import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks import report
from benchmarks.ceiling import Ceiling, measure_ceiling
from benchmarks.daemon import REPO
from benchmarks.phases import (
    MB,
    Settings,
    build_pools,
    load_and_query_phase,
    load_pool,
    phase,
    say,
    throughput_phase,
)
from benchmarks.senders import ReplayResult

# Distinct requests per signal. 250 requests of 1,000 spans cover more than a DuckDB row group
# (122,880 rows), so no row group holds the same request twice (see docs/performance.md).
_POOL_TEMPLATES = 250
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


def parse_args(argv: list[str] | None = None) -> tuple[Settings, argparse.Namespace]:
    """The settings of this run, and the options that are not settings (recording, keeping)."""
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
    settings = Settings(
        size=args.size,
        duration_s=args.duration,
        senders=args.senders,
        runs=args.runs,
        seed=args.seed,
        profile_s=args.profile,
        templates=_QUICK_POOL_TEMPLATES if args.quick else _POOL_TEMPLATES,
        quick=args.quick,
    )
    return settings, args


# ---------------------------------------------------------------------------------------------
# Putting it together


def figures(
    ceiling: Ceiling, throughput: dict[str, Any], load: dict[str, Any] | None
) -> dict[str, float | None]:
    """The headline figures, keyed as the targets and the docs table name them."""
    grpc: ReplayResult = throughput["grpc"]
    http: ReplayResult = throughput["http"]
    # The target is for gRPC ingest: the sampled peaks of the gRPC replay and of the loads (also
    # over gRPC). The HTTP replay's peak is reported beside it. Sampled totals of the process
    # tree, not VmHWM: the daemon and its decode workers peak at different moments.
    grpc_peaks = [grpc.peak_rss_bytes]
    pss_peaks = [grpc.peak_pss_bytes]
    out: dict[str, float | None] = {
        "ingest_grpc": grpc.records_per_s,
        "ingest_http": http.records_per_s,
        "ceiling": ceiling.spans_per_s,
        "ratio_grpc": grpc.records_per_s / ceiling.spans_per_s,
        "ratio_http": http.records_per_s / ceiling.spans_per_s,
        "cpu_s_per_100k": grpc.cpu_s_per_100k,
        "cpu_s_per_100k_http": http.cpu_s_per_100k,
        "peak_rss_http": http.peak_rss_bytes / MB,
        "bytes_per_span": throughput["bytes_per_span"],
        "bytes_per_log": None,
        "load_spans_per_s": None,
    }
    if load is not None:
        for signal in ("spans", "logs"):
            grpc_peaks.append(load[signal]["replay"]["peak_rss_bytes"])
            pss_peaks.append(load[signal]["replay"]["peak_pss_bytes"])
        # At the loaded size the fixed cost of a file weighs less: the fairer disk figure.
        out["bytes_per_span"] = load["bytes_per_span"]
        out["bytes_per_log"] = load["bytes_per_log"]
        out["load_spans_per_s"] = load["spans"]["replay"]["records_per_s"]
        out.update({q["name"]: q["median_ms"] for q in load["queries"]})
    out["peak_rss"] = max(grpc_peaks) / MB
    out["peak_pss"] = max(pss_peaks) / MB
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


def _record(results: dict[str, Any], raw_profile: str | None, started: dt.datetime) -> None:
    """Write the JSON (and py-spy's samples beside it) and add the row to the docs table."""
    path = report.save_json(results, started)
    if raw_profile is not None:
        kept = path.with_name(path.stem + "-py-spy.txt")
        kept.write_text(raw_profile)
        say(f"py-spy samples: {kept.relative_to(REPO)}")
    report.add_table_row(report.table_row(results))
    say(f"\nresults: {path.relative_to(REPO)}; a row added to docs/performance.md")


def main(argv: list[str] | None = None) -> int:
    settings, args = parse_args(argv)
    started = dt.datetime.now(dt.UTC)
    info = report.machine()
    say(
        f"ophion benchmark, {started:%Y-%m-%d %H:%M} UTC on {info['host']}: "
        f"{report.machine_label(info)}, load average {info['load_average'][0]:.2f}"
    )
    say(
        f"The load generator ({settings.senders} sender processes) runs on the same "
        f"{info['cores']} cores as the daemon; each replay shows what both took."
    )
    workdir = Path(tempfile.mkdtemp(prefix="ophion-bench-"))
    try:
        with phase("building requests"):
            pools = build_pools(workdir, settings)
        with phase("ceiling: one process parsing and flattening the same requests"):
            ceiling = measure_ceiling(
                load_pool(pools["traces"]), min_seconds=3 if settings.quick else 10
            )
            say(
                f"   parse {ceiling.parse_spans_per_s:,.0f} spans/s, flatten (decode_traces) "
                f"{ceiling.flatten_spans_per_s:,.0f} spans/s, both {ceiling.spans_per_s:,.0f} "
                "spans/s"
            )
        with phase(f"throughput: {settings.duration_s:g} s per transport"):
            throughput = throughput_phase(workdir, pools, settings)
        load = None
        if settings.size:
            count = f"{settings.size:,}"
            with phase(f"load {count} spans and {count} log records, then query"):
                load = load_and_query_phase(workdir, pools, settings)
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
        "size_label": _size_label(settings.size, settings.quick),
        "machine": info,
        "settings": asdict(settings),
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
        _record(results, raw_profile, started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
