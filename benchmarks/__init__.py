"""The ophion benchmark: ingest throughput, its ceiling, disk use and query times.

Run it from the repository root with ``python3 -m benchmarks.run`` (see docs/performance.md).
It is not part of the test suite: timings belong here, never in unit tests.
"""
