"""The vocabulary every layer shares: the signals, a decoded request, and the column layout
of each stored table.

The receivers (:mod:`ophiond.otlp`) make decoded batches (:class:`DecodedBatch`) and hand
them to a :class:`BatchSink`; the store (:mod:`ophiond.store`) is one. Neither imports the other: both
import this module (and :mod:`ophiond.batchio` for the bytes of a batch), and the daemon wires
them together.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import pyarrow as pa


class Signal(StrEnum):
    """The three kinds of OTLP telemetry, named as in the OTLP/HTTP paths (``/v1/traces``)."""

    TRACES = "traces"
    METRICS = "metrics"
    LOGS = "logs"


@dataclass
class DecodedBatch:
    """What one request became: Arrow tables to append, and what had to be rejected."""

    signal: Signal
    tables: Mapping[str, pa.Table]
    accepted: int
    rejected: int = 0
    problems: list[str] = field(default_factory=list)
    # The tables as Arrow IPC streams, when a decode worker already made them (the journal
    # stores these bytes as they are).
    streams: Mapping[str, bytes | memoryview] | None = None

    @property
    def message(self) -> str:
        """The ``partial_success.error_message`` for the client ('' when all was well)."""
        return "; ".join(self.problems)


@dataclass(frozen=True)
class IngestLimits:
    """The most ingest stores of one record (set by the configuration, applied by the
    receivers); the settings of the same names say why."""

    attribute_value_size: int = 64 << 10
    """Bytes of one string or bytes attribute value (``max_attribute_value_size``)."""
    attributes_size: int = 1 << 20
    """Bytes of one record's attributes as stored JSON (``max_attributes_size``)."""
    log_body_size: int = 256 << 10
    """Bytes of one log body (``max_log_body_size``)."""
    events_per_span: int = 128
    """Events kept per span (``max_span_events``)."""
    links_per_span: int = 128
    """Links kept per span (``max_span_links``)."""


DEFAULT_LIMITS = IngestLimits()


class Commit(Protocol):
    """A batch handed to the store, to be waited on until it is durable."""

    def wait(self) -> None:
        """Return once the batch is durable; raise ``StoreError`` if it could not be written."""


class BatchSink(Protocol):
    """Where the receivers put what they decoded (the store's writer)."""

    def submit(self, batch: DecodedBatch) -> Commit:
        """Queue ``batch``; raise ``QueueFull`` or ``WriterStopped`` when it cannot be taken."""


class Recorder(Protocol):
    """Where a part of the daemon records what it did that changed something (the audit log,
    :class:`ophiond.state.audit.AuditLog`)."""

    def record(self, actor: str, action: str, subject: str | None = None, **detail: Any) -> None:
        """Append an entry; never raises."""


# ---------------------------------------------------------------------------------------------
# The Arrow schema of each table's batches: what the decoder produces, the journal keeps and
# the store inserts by name.


def arrow_schemas() -> dict[str, pa.Schema]:
    """The Arrow schema of each table's batches, built on first use (pyarrow loads lazily)."""
    global _ARROW
    if _ARROW is None:
        _ARROW = _build_arrow_schemas()
    return _ARROW


_ARROW: dict[str, pa.Schema] | None = None


def _build_arrow_schemas() -> dict[str, pa.Schema]:
    import pyarrow as pa

    s, u32, i32, i64, u64, f64 = (
        pa.string(),
        pa.uint32(),
        pa.int32(),
        pa.int64(),
        pa.uint64(),
        pa.float64(),
    )
    ts = pa.timestamp("ns")
    # The same for every record of a (resource, scope) run: dictionary-encoded, so that a batch
    # carries each run's values once.
    d = pa.dictionary(pa.int32(), pa.string())
    origin = [
        ("service_name", d),
        ("resource_attributes", d),
        ("resource_dropped_attributes_count", u32),
        ("resource_schema_url", d),
        ("scope_name", d),
        ("scope_version", d),
        ("scope_attributes", d),
        ("scope_dropped_attributes_count", u32),
        ("scope_schema_url", d),
    ]
    return {
        "spans": pa.schema(
            [
                ("trace_id", s),
                ("span_id", s),
                ("parent_span_id", s),
                ("trace_state", s),
                ("flags", u32),
                ("name", s),
                ("kind", s),
                ("start_time", ts),
                ("end_time", ts),
                ("duration_ns", i64),
                ("status_code", s),
                ("status_message", s),
                ("http_method", s),
                ("http_route", s),
                ("http_status_code", i32),
                ("db_system", s),
                ("attributes", s),
                ("dropped_attributes_count", u32),
                ("dropped_events_count", u32),
                ("dropped_links_count", u32),
                *origin,
            ]
        ),
        "span_events": pa.schema(
            [
                ("trace_id", s),
                ("span_id", s),
                ("span_name", s),
                ("time", ts),
                ("name", s),
                ("attributes", s),
                ("dropped_attributes_count", u32),
                ("service_name", s),
            ]
        ),
        "span_links": pa.schema(
            [
                ("trace_id", s),
                ("span_id", s),
                ("linked_trace_id", s),
                ("linked_span_id", s),
                ("trace_state", s),
                ("flags", u32),
                ("attributes", s),
                ("dropped_attributes_count", u32),
                ("service_name", s),
            ]
        ),
        "logs": pa.schema(
            [
                ("timestamp", ts),
                ("observed_timestamp", ts),
                ("severity_number", i32),
                ("severity_text", s),
                ("body", s),
                ("body_type", s),
                ("trace_id", s),
                ("span_id", s),
                ("flags", u32),
                ("event_name", s),
                ("attributes", s),
                ("dropped_attributes_count", u32),
                *origin,
            ]
        ),
        "metric_points": pa.schema(
            [
                ("metric_name", s),
                ("description", s),
                ("unit", s),
                ("metric_type", s),
                ("temporality", s),
                ("is_monotonic", pa.bool_()),
                ("metadata", s),
                ("start_time", ts),
                ("timestamp", ts),
                ("attributes", s),
                ("value", f64),
                ("value_int", i64),
                ("count", u64),
                ("sum", f64),
                ("min", f64),
                ("max", f64),
                ("bucket_counts", pa.list_(u64)),
                ("explicit_bounds", pa.list_(f64)),
                ("scale", i32),
                ("zero_count", u64),
                ("zero_threshold", f64),
                ("positive_offset", i32),
                ("positive_bucket_counts", pa.list_(u64)),
                ("negative_offset", i32),
                ("negative_bucket_counts", pa.list_(u64)),
                ("quantiles", pa.list_(f64)),
                ("quantile_values", pa.list_(f64)),
                ("flags", u32),
                ("exemplars", s),
                *origin,
            ]
        ),
    }
