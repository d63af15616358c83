"""Adding OpenTelemetry to a running Docker container and taking it out again (``ophion
instrument``, ``ophion uninstrument``). It lives in ophiond so the daemon can recreate and roll
back containers with the same code; it reports progress through a plain callback, never Rich."""
