"""What ophiond must remember across restarts, outside the telemetry: the state store.

Telemetry lives in time partitions that retention deletes; this lives in one DuckDB file,
``<data_dir>/state.duckdb``, that retention never touches, written by the daemon only, with its
own append-only migrations (:mod:`ophiond.state.schema`). It holds the audit log now
(:mod:`ophiond.state.audit`); alert states, silences, incidents, notification deliveries and
healing runs get their tables here as their engines arrive.
"""
