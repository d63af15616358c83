"""The DuckDB store: partition files, migrations, the single writer, read-only queries."""
