"""ophiond: the ophion daemon and the core library (OTLP receivers, DuckDB store, local API).

Importing this package stays cheap: heavy modules (grpc, duckdb, pyarrow) are imported where
they are used, and nothing here ever imports the front ends (Typer, Rich, Textual).
"""

__version__ = "0.1.0"
