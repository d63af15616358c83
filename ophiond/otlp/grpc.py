"""OTLP/gRPC receiver: TraceService, MetricsService and LogsService ``Export`` on :4317.

Requests are registered as raw bytes so that a malformed message is answered with
INVALID_ARGUMENT by our decoder, not INTERNAL by grpcio's deserializer. gzip is handled by
grpcio; ``grpc.max_receive_message_length`` bounds the decompressed size.
"""

from __future__ import annotations

import logging
from concurrent import futures
from typing import Any

import grpc

from ophiond.config import ListenAddress
from ophiond.errors import InvalidPayload, OphionError, QueueFull, StoreError, WriterStopped
from ophiond.model import Signal
from ophiond.otlp.decode import encode_response
from ophiond.otlp.ingest import Ingest

log = logging.getLogger(__name__)

_SERVICES = {
    Signal.TRACES: "opentelemetry.proto.collector.trace.v1.TraceService",
    Signal.METRICS: "opentelemetry.proto.collector.metrics.v1.MetricsService",
    Signal.LOGS: "opentelemetry.proto.collector.logs.v1.LogsService",
}
# Requests handled at once; more wait in grpcio's queue up to _MAX_CONCURRENT, then are refused
# with RESOURCE_EXHAUSTED. Workers mostly wait for the group commit, so there are several.
_WORKERS = 16
_MAX_CONCURRENT = 64
# How long a stop waits for calls in flight; they only wait for a commit, so this is generous.
_STOP_GRACE_S = 30.0


def _handler(ingest: Ingest, signal: Signal) -> Any:
    def export(body: bytes, context: grpc.ServicerContext) -> bytes:
        metadata = dict(context.invocation_metadata())
        if not ingest.authorized(metadata.get("authorization")):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong ingest key")
        try:
            batch = ingest.export(signal, body, as_json=False)
        except InvalidPayload as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, e.message)
        except (QueueFull, WriterStopped) as e:
            context.abort(grpc.StatusCode.UNAVAILABLE, f"{e.message}; retry later")
        except StoreError as e:
            context.abort(grpc.StatusCode.UNAVAILABLE, f"not stored: {e.message}; retry later")
        return encode_response(signal, batch, as_json=False)

    return grpc.unary_unary_rpc_method_handler(export)


class GrpcReceiver:
    """The gRPC server; :attr:`address` is the bound address (port 0 resolved)."""

    def __init__(self, ingest: Ingest, listen: ListenAddress, max_request_size: int) -> None:
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix="ophion-grpc"),
            handlers=[
                grpc.method_handlers_generic_handler(service, {"Export": _handler(ingest, signal)})
                for signal, service in _SERVICES.items()
            ],
            options=[
                ("grpc.max_receive_message_length", max_request_size),
                ("grpc.so_reuseport", 0),
            ],
            maximum_concurrent_rpcs=_MAX_CONCURRENT,
        )
        try:
            port = self.server.add_insecure_port(str(listen))
        except RuntimeError as e:
            port = 0
            reason = str(e)
        else:
            reason = "address in use or not available"
        if port == 0:
            raise OphionError(
                f"cannot listen for OTLP/gRPC on {listen}: {reason}",
                hint="another collector may hold the port; choose one with --grpc-listen",
            )
        self.address = ListenAddress(listen.host, port)

    def start(self) -> None:
        self.server.start()
        log.info("OTLP/gRPC listening on %s", self.address)

    def stop(self) -> None:
        """Refuse new calls; let running ones finish (they wait for their commit)."""
        self.server.stop(_STOP_GRACE_S).wait()
