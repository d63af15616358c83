"""The ceiling: how fast one Python process turns the same requests into column batches.

It runs the daemon's own code (``ExportTraceServiceRequest.FromString`` and
``ophiond.otlp.decode.decode_traces``) in this process, with no network and no store, so
ingest / ceiling says how much of one core's decoding speed the daemon delivers end to end.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from benchmarks.workload import PayloadStream, Pool


@dataclass
class Ceiling:
    """Spans per second of one process: parsing alone, flattening alone, and both."""

    spans: int
    parse_s: float
    flatten_s: float

    @property
    def parse_spans_per_s(self) -> float:
        return self.spans / self.parse_s

    @property
    def flatten_spans_per_s(self) -> float:
        return self.spans / self.flatten_s

    @property
    def spans_per_s(self) -> float:
        """Parse and flatten together: the decode ceiling the daemon is compared with."""
        return self.spans / (self.parse_s + self.flatten_s)


def measure_ceiling(pool: Pool, requests: int = 20, min_seconds: float = 5.0) -> Ceiling:
    """Decode ``requests`` rendered requests over and over for at least ``min_seconds``."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    from ophiond.otlp.decode import decode_traces

    stream = PayloadStream(pool, 0, 1)
    bodies = [stream.next() for _ in range(requests)]
    decode_traces(ExportTraceServiceRequest.FromString(bodies[0][0]))  # imports, schema cache
    spans = 0
    parse_s = flatten_s = 0.0
    while parse_s + flatten_s < min_seconds:
        for body, records in bodies:
            began = time.perf_counter()
            request = ExportTraceServiceRequest.FromString(body)
            parsed = time.perf_counter()
            batch = decode_traces(request)
            flattened = time.perf_counter()
            if batch.accepted != records:
                raise RuntimeError(f"decode_traces accepted {batch.accepted} of {records} spans")
            parse_s += parsed - began
            flatten_s += flattened - parsed
            spans += records
    return Ceiling(spans, parse_s, flatten_s)
