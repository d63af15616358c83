"""The daemon's local API (HTTP + JSON on a Unix socket) and its client."""
