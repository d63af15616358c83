"""ophion instrument: add OpenTelemetry to a running Docker container."""
