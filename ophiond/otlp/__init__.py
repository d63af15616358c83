"""OTLP receivers (gRPC and HTTP) and the decoder they share."""
