"""What ophiond answers to bad, hostile or half-valid OTLP input, and that it keeps serving.

Every case checks the exact answer a client sees (HTTP status, google.rpc.Status body, gRPC
code, ``partial_success``) and then that a good request sent right after is stored: one bad
client must never take the receiver down for the others.
"""

from __future__ import annotations

import gzip
import http.client
import itertools
import json
import random
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from conftest import RunningDaemon, make_sdk_spans
from google.rpc import status_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult

SERVICE = "bad-input-test"
TRACE_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
PROTOBUF = "application/x-protobuf"
INVALID_ARGUMENT = 3  # google.rpc.Code values carried in HTTP error bodies
UNAUTHENTICATED = 16
MiB = 1 << 20

_ids = itertools.count(1)


# ---------------------------------------------------------------------------------------------
# Building requests


def new_trace_id() -> bytes:
    return next(_ids).to_bytes(16, "big")


def new_span_id() -> bytes:
    return (0xB0 << 56 | next(_ids)).to_bytes(8, "big")


def make_span(
    name: str,
    *,
    trace_id: bytes | None = None,
    span_id: bytes | None = None,
    start_ns: int | None = None,
    end_ns: int | None = None,
    kind: int = trace_pb2.Span.SPAN_KIND_SERVER,
    status_code: int = 0,
) -> trace_pb2.Span:
    """A span with valid ids and times unless the caller overrides them."""
    start = time.time_ns() if start_ns is None else start_ns
    return trace_pb2.Span(
        trace_id=new_trace_id() if trace_id is None else trace_id,
        span_id=new_span_id() if span_id is None else span_id,
        name=name,
        kind=kind,  # proto3 enums are open: any number is sent as is
        start_time_unix_nano=start,
        end_time_unix_nano=start + 1_000_000 if end_ns is None else end_ns,
        status=trace_pb2.Status(code=status_code),
    )


def _resource() -> resource_pb2.Resource:
    return resource_pb2.Resource(
        attributes=[
            common_pb2.KeyValue(key="service.name", value=common_pb2.AnyValue(string_value=SERVICE))
        ]
    )


def traces_request(*spans: trace_pb2.Span) -> trace_service_pb2.ExportTraceServiceRequest:
    return trace_service_pb2.ExportTraceServiceRequest(
        resource_spans=[
            trace_pb2.ResourceSpans(
                resource=_resource(), scope_spans=[trace_pb2.ScopeSpans(spans=spans)]
            )
        ]
    )


def logs_request(*records: logs_pb2.LogRecord) -> logs_service_pb2.ExportLogsServiceRequest:
    return logs_service_pb2.ExportLogsServiceRequest(
        resource_logs=[
            logs_pb2.ResourceLogs(
                resource=_resource(), scope_logs=[logs_pb2.ScopeLogs(log_records=records)]
            )
        ]
    )


def log_record(body: str, trace_id: bytes = b"") -> logs_pb2.LogRecord:
    return logs_pb2.LogRecord(
        time_unix_nano=time.time_ns(),
        severity_number=logs_pb2.SEVERITY_NUMBER_INFO,
        severity_text="INFO",
        body=common_pb2.AnyValue(string_value=body),
        trace_id=trace_id,
    )


def span_hex(span: ReadableSpan) -> str:
    assert span.context is not None
    return format(span.context.span_id, "016x")


# ---------------------------------------------------------------------------------------------
# Talking to the daemon


@dataclass
class HttpReply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def rpc_status(self) -> status_pb2.Status:
        """The google.rpc.Status protobuf body of an error answer."""
        assert self.headers["Content-Type"] == PROTOBUF, self.headers["Content-Type"]
        return status_pb2.Status.FromString(self.body)

    def json(self) -> Any:
        assert self.headers["Content-Type"] == "application/json", self.headers["Content-Type"]
        return json.loads(self.body)

    def trace_response(self) -> trace_service_pb2.ExportTraceServiceResponse:
        assert self.status == 200, (self.status, self.body[:300])
        return trace_service_pb2.ExportTraceServiceResponse.FromString(self.body)


def send_http(
    daemon: RunningDaemon,
    body: bytes,
    *,
    path: str = "/v1/traces",
    content_type: str | None = PROTOBUF,
    headers: dict[str, str] | None = None,
    method: str = "POST",
    timeout: float = 60,
) -> HttpReply:
    """One request on a fresh connection; any status is returned, none raised."""
    host, port = daemon.listen["http"].rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    all_headers = dict(headers or {})
    if content_type is not None:
        all_headers["Content-Type"] = content_type
    try:
        conn.request(method, path, body=body if method == "POST" else None, headers=all_headers)
        response = conn.getresponse()
        return HttpReply(response.status, response.headers, response.read())
    finally:
        conn.close()


@pytest.fixture
def grpc_channel(daemon: RunningDaemon) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(daemon.grpc_endpoint) as channel:
        yield channel


def stored_span_ids(daemon: RunningDaemon, *span_ids: bytes) -> set[str]:
    wanted = ", ".join(f"'{s.hex()}'" for s in span_ids)
    rows = daemon.sql(f"SELECT span_id FROM spans WHERE span_id IN ({wanted})")
    return {row["span_id"] for row in rows}


def assert_still_serving(daemon: RunningDaemon, headers: dict[str, str] | None = None) -> None:
    """A good OTLP/HTTP request right after the bad one is answered 200 and stored."""
    span = make_span("after-bad-input")
    reply = send_http(daemon, traces_request(span).SerializeToString(), headers=headers)
    assert reply.status == 200, (reply.status, reply.body[:300])
    assert not reply.trace_response().HasField("partial_success")
    assert stored_span_ids(daemon, span.span_id) == {span.span_id.hex()}


def assert_grpc_still_serving(daemon: RunningDaemon, channel: grpc.Channel) -> None:
    """A good OTLP/gRPC export right after the bad one is answered OK and stored."""
    span = make_span("after-bad-grpc-input")
    stub = trace_service_pb2_grpc.TraceServiceStub(channel)
    response = stub.Export(traces_request(span), timeout=30)
    assert not response.HasField("partial_success")
    assert stored_span_ids(daemon, span.span_id) == {span.span_id.hex()}


def good_body() -> bytes:
    return traces_request(make_span("good")).SerializeToString()


# ---------------------------------------------------------------------------------------------
# OTLP/HTTP: whole requests refused


def test_http_random_bytes_is_400_with_rpc_status(daemon: RunningDaemon) -> None:
    garbage = random.Random(20240611).randbytes(4096)
    reply = send_http(daemon, garbage)
    assert reply.status == 400
    status = reply.rpc_status()
    assert status.code == INVALID_ARGUMENT
    assert "malformed protobuf ExportTraceServiceRequest" in status.message
    assert daemon.status()["signals"]["traces"]["invalid_requests"] == 1
    assert_still_serving(daemon)


def test_http_truncated_protobuf_is_400(daemon: RunningDaemon) -> None:
    whole = traces_request(*(make_span(f"cut-{i}") for i in range(20))).SerializeToString()
    reply = send_http(daemon, whole[: len(whole) // 2])
    assert reply.status == 400
    assert reply.rpc_status().code == INVALID_ARGUMENT
    assert daemon.sql("SELECT count(*) AS n FROM spans WHERE name LIKE 'cut-%'") == [{"n": 0}]
    assert_still_serving(daemon)


def test_http_invalid_json_is_400_with_json_status(daemon: RunningDaemon) -> None:
    reply = send_http(daemon, b'{"resourceSpans": [', content_type="application/json")
    assert reply.status == 400
    document = reply.json()
    assert document["code"] == INVALID_ARGUMENT
    assert document["message"].startswith("invalid JSON")
    assert_still_serving(daemon)


def test_http_json_trace_id_not_hex_is_400(daemon: RunningDaemon) -> None:
    now = time.time_ns()
    document = {
        "resourceSpans": [
            {
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": "not-a-hex-trace-id-at-all-zzzzzz",
                                "spanId": "00f067aa0ba902b7",
                                "name": "bad-hex",
                                "startTimeUnixNano": str(now),
                                "endTimeUnixNano": str(now + 1000),
                            }
                        ]
                    }
                ]
            }
        ]
    }
    reply = send_http(daemon, json.dumps(document).encode(), content_type="application/json")
    assert reply.status == 400
    document_reply = reply.json()
    assert document_reply["code"] == INVALID_ARGUMENT
    assert (
        "traceId" in document_reply["message"] and "not a hex string" in document_reply["message"]
    )
    assert daemon.sql("SELECT count(*) AS n FROM spans WHERE name = 'bad-hex'") == [{"n": 0}]
    assert_still_serving(daemon)


def test_http_wrong_content_type_is_415(daemon: RunningDaemon) -> None:
    reply = send_http(daemon, good_body(), content_type="text/plain")
    assert reply.status == 415
    assert "text/plain" in reply.rpc_status().message
    assert_still_serving(daemon)


def test_http_unsupported_content_encoding_is_415(daemon: RunningDaemon) -> None:
    reply = send_http(daemon, good_body(), headers={"Content-Encoding": "br"})
    assert reply.status == 415
    assert "'br'" in reply.rpc_status().message
    assert_still_serving(daemon)


def test_http_wrong_path_is_404(daemon: RunningDaemon) -> None:
    reply = send_http(daemon, good_body(), path="/v1/trace")
    assert reply.status == 404
    assert "/v1/trace" in reply.rpc_status().message
    assert_still_serving(daemon)


def test_http_get_is_405(daemon: RunningDaemon) -> None:
    reply = send_http(daemon, b"", method="GET")
    assert reply.status == 405
    assert reply.headers["Allow"] == "POST"
    assert_still_serving(daemon)


def test_http_50mb_body_is_413(daemon: RunningDaemon) -> None:
    reply = send_http(daemon, b"\x00" * (50 * MiB))
    assert reply.status == 413
    status = reply.rpc_status()
    assert "max_request_size" in status.message
    assert str(20 * MiB) in status.message
    assert_still_serving(daemon)


def gzip_of_zeros(size: int) -> bytes:
    """``size`` zero bytes gzip-compressed, built in slices so the test stays small too."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = b"\x00" * MiB
    parts = [compressor.compress(block) for _ in range(size // MiB)]
    parts.append(compressor.flush())
    return b"".join(parts)


def peak_rss_bytes(pid: int) -> int:
    """The highest resident set size the process ever had (VmHWM), in bytes."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM in /proc/{pid}/status")


def test_http_gzip_bomb_is_413_without_memory_blowup(daemon: RunningDaemon) -> None:
    bomb = gzip_of_zeros(200 * MiB)
    assert len(bomb) < 1 * MiB  # the point: a small body that inflates 200-fold and more
    reply = send_http(daemon, bomb, headers={"Content-Encoding": "gzip"})
    assert reply.status == 413
    assert "gzip body expands more than 300 times" in reply.rpc_status().message
    # The peak, not the current value: a bomb inflated then freed would still have hit it.
    assert peak_rss_bytes(daemon.process.pid) < 300 * MiB
    assert_still_serving(daemon)


def test_http_gzip_over_max_request_size_once_inflated_is_413(daemon_factory: Any) -> None:
    daemon = daemon_factory("--max-request-size", "1MiB")
    text = random.Random(7).randbytes(768 * 1024).hex().encode()  # 1.5 MiB; gzip halves it
    body = gzip.compress(text)
    assert len(body) < MiB
    reply = send_http(daemon, body, headers={"Content-Encoding": "gzip"})
    assert reply.status == 413
    assert "after decompression (max_request_size)" in reply.rpc_status().message
    assert_still_serving(daemon)


def test_http_gzip_of_200k_members_is_refused_at_once_without_delaying_others(
    daemon: RunningDaemon,
) -> None:
    members = gzip.compress(b"") * 200_000  # 4 MB of empty gzip members
    bombed: dict[str, Any] = {}

    def send_bomb() -> None:
        began = time.monotonic()
        bombed["reply"] = send_http(
            daemon, members, headers={"Content-Encoding": "gzip"}, timeout=300
        )
        bombed["took"] = time.monotonic() - began

    bomb = threading.Thread(target=send_bomb)
    bomb.start()
    began = time.monotonic()
    good = send_http(daemon, good_body())  # while the bomb is in the daemon
    good_took = time.monotonic() - began
    bomb.join(300)
    assert bombed["reply"].status == 400
    assert "more than 100 members" in bombed["reply"].rpc_status().message
    # Generous bounds: each takes milliseconds; with a copy of the body per member, the bomb
    # took half a minute and delayed every other request by seconds.
    assert bombed["took"] < 10
    assert good.status == 200 and good_took < 10


def test_http_invalid_gzip_is_400(daemon: RunningDaemon) -> None:
    reply = send_http(daemon, good_body(), headers={"Content-Encoding": "gzip"})
    assert reply.status == 400
    status = reply.rpc_status()
    assert status.code == INVALID_ARGUMENT
    assert "gzip" in status.message
    assert_still_serving(daemon)


def test_http_truncated_gzip_is_400(daemon: RunningDaemon) -> None:
    compressed = gzip.compress(good_body())
    reply = send_http(
        daemon, compressed[: len(compressed) // 2], headers={"Content-Encoding": "gzip"}
    )
    assert reply.status == 400
    assert "gzip" in reply.rpc_status().message
    assert_still_serving(daemon)


# ---------------------------------------------------------------------------------------------
# Partial success: the bad records are rejected, the good ones stored


def test_http_bad_ids_are_rejected_one_by_one(daemon: RunningDaemon) -> None:
    good = make_span("partial-good")
    short_trace = make_span("partial-short-trace", trace_id=b"\x01\x02\x03\x04")
    short_span = make_span("partial-short-span", span_id=b"\x01\x02\x03\x04\x05")
    reply = send_http(daemon, traces_request(good, short_trace, short_span).SerializeToString())

    partial = reply.trace_response().partial_success
    assert partial.rejected_spans == 2
    assert "trace_id is 4 bytes, not 16" in partial.error_message
    assert "span_id is 5 bytes, not 8" in partial.error_message
    names = daemon.sql("SELECT name FROM spans WHERE name LIKE 'partial-%'")
    assert names == [{"name": "partial-good"}]
    counters = daemon.status()["signals"]["traces"]
    assert (counters["received"], counters["rejected"], counters["stored"]) == (3, 2, 1)
    assert_still_serving(daemon)


def test_grpc_bad_ids_are_rejected_one_by_one(
    daemon: RunningDaemon, grpc_channel: grpc.Channel
) -> None:
    good = make_span("grpc-partial-good")
    short_trace = make_span("grpc-partial-short-trace", trace_id=b"\x01\x02\x03\x04")
    short_span = make_span("grpc-partial-short-span", span_id=b"\x01\x02\x03\x04\x05")
    stub = trace_service_pb2_grpc.TraceServiceStub(grpc_channel)

    response = stub.Export(traces_request(good, short_trace, short_span), timeout=30)

    assert response.partial_success.rejected_spans == 2
    assert "trace_id is 4 bytes, not 16" in response.partial_success.error_message
    assert "span_id is 5 bytes, not 8" in response.partial_success.error_message
    names = daemon.sql("SELECT name FROM spans WHERE name LIKE 'grpc-partial-%'")
    assert names == [{"name": "grpc-partial-good"}]
    assert_grpc_still_serving(daemon, grpc_channel)


def test_logs_with_short_trace_id_are_rejected(
    daemon: RunningDaemon, grpc_channel: grpc.Channel
) -> None:
    request = logs_request(log_record("log-good"), log_record("log-bad", trace_id=b"\xaa\xbb\xcc"))

    stub = logs_service_pb2_grpc.LogsServiceStub(grpc_channel)
    response = stub.Export(request, timeout=30)
    assert response.partial_success.rejected_log_records == 1
    assert "trace_id is 3 bytes, not 16" in response.partial_success.error_message

    reply = send_http(daemon, request.SerializeToString(), path="/v1/logs")
    assert reply.status == 200
    http_partial = logs_service_pb2.ExportLogsServiceResponse.FromString(reply.body).partial_success
    assert http_partial.rejected_log_records == 1

    bodies = daemon.sql("SELECT body FROM logs ORDER BY body")
    assert bodies == [{"body": "log-good"}, {"body": "log-good"}]
    assert_still_serving(daemon)


def test_span_ending_before_it_starts_is_stored_with_zero_duration(daemon: RunningDaemon) -> None:
    start = time.time_ns()
    backwards = make_span("backwards", start_ns=start, end_ns=start - 5_000_000)
    reply = send_http(daemon, traces_request(backwards).SerializeToString())

    partial = reply.trace_response().partial_success
    assert partial.rejected_spans == 0
    assert "ends before it starts" in partial.error_message
    rows = daemon.sql(
        "SELECT duration_ns, start_time_unix_nano, end_time_unix_nano FROM spans WHERE name = 'backwards'"
    )
    assert rows == [
        {"duration_ns": 0, "start_time_unix_nano": start, "end_time_unix_nano": start - 5_000_000}
    ]
    assert_still_serving(daemon)


def test_unknown_kind_and_status_are_kept_as_numbers(daemon: RunningDaemon) -> None:
    future = make_span("from-a-newer-spec", kind=9, status_code=7)
    reply = send_http(daemon, traces_request(future).SerializeToString())

    assert not reply.trace_response().HasField("partial_success")
    rows = daemon.sql("SELECT kind, status_code FROM spans WHERE name = 'from-a-newer-spec'")
    assert rows == [{"kind": "9", "status_code": "7"}]
    assert_still_serving(daemon)


def test_timestamp_past_int64_rejects_that_span(daemon: RunningDaemon) -> None:
    good = make_span("time-good")
    too_late = make_span("time-too-late", start_ns=2**63, end_ns=2**63 + 10)
    reply = send_http(daemon, traces_request(good, too_late).SerializeToString())

    partial = reply.trace_response().partial_success
    assert partial.rejected_spans == 1
    assert "start_time_unix_nano" in partial.error_message
    rows = daemon.sql("SELECT name FROM spans WHERE name LIKE 'time-%'")
    assert rows == [{"name": "time-good"}]
    assert_still_serving(daemon)


# ---------------------------------------------------------------------------------------------
# OTLP/gRPC


def test_grpc_random_bytes_is_invalid_argument(
    daemon: RunningDaemon, grpc_channel: grpc.Channel
) -> None:
    export_raw = grpc_channel.unary_unary(
        TRACE_EXPORT, request_serializer=None, response_deserializer=None
    )
    with pytest.raises(grpc.RpcError) as caught:
        export_raw(random.Random(20240611).randbytes(4096), timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "malformed protobuf" in (caught.value.details() or "")
    assert_grpc_still_serving(daemon, grpc_channel)
    assert_still_serving(daemon)


def test_grpc_message_over_max_request_size_is_resource_exhausted(daemon_factory: Any) -> None:
    daemon = daemon_factory("--max-request-size", "1MiB")
    huge = make_span("huge")
    huge.attributes.add(key="blob", value=common_pb2.AnyValue(string_value="x" * (2 * MiB)))
    with grpc.insecure_channel(daemon.grpc_endpoint) as channel:
        stub = trace_service_pb2_grpc.TraceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.Export(traces_request(huge), timeout=30)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert_grpc_still_serving(daemon, channel)
    assert daemon.sql("SELECT count(*) AS n FROM spans WHERE name = 'huge'") == [{"n": 0}]


def test_grpc_gzip_request_is_accepted(daemon: RunningDaemon, grpc_channel: grpc.Channel) -> None:
    spans = [make_span(f"gzipped-{i}") for i in range(50)]
    stub = trace_service_pb2_grpc.TraceServiceStub(grpc_channel)
    response = stub.Export(traces_request(*spans), timeout=30, compression=grpc.Compression.Gzip)
    assert not response.HasField("partial_success")
    assert stored_span_ids(daemon, *(s.span_id for s in spans)) == {s.span_id.hex() for s in spans}


# ---------------------------------------------------------------------------------------------
# Ingest key

KEY = "secret"
BEARER = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture
def keyed_daemon(daemon_factory: Any) -> RunningDaemon:
    result: RunningDaemon = daemon_factory("--ingest-key", KEY)
    return result


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}],
    ids=["none", "wrong-key", "no-bearer-scheme"],
)
def test_http_without_the_ingest_key_is_401(
    keyed_daemon: RunningDaemon, headers: dict[str, str]
) -> None:
    span = make_span("unauthorized")
    reply = send_http(keyed_daemon, traces_request(span).SerializeToString(), headers=headers)
    assert reply.status == 401
    assert reply.rpc_status().code == UNAUTHENTICATED
    assert stored_span_ids(keyed_daemon, span.span_id) == set()
    assert_still_serving(keyed_daemon, headers=BEARER)


def test_http_with_the_ingest_key_is_stored(keyed_daemon: RunningDaemon) -> None:
    assert_still_serving(keyed_daemon, headers=BEARER)


def test_grpc_ingest_key(keyed_daemon: RunningDaemon) -> None:
    refused, accepted = make_span("grpc-no-key"), make_span("grpc-with-key")
    with grpc.insecure_channel(keyed_daemon.grpc_endpoint) as channel:
        stub = trace_service_pb2_grpc.TraceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.Export(traces_request(refused), timeout=30)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as caught:
            stub.Export(
                traces_request(refused), timeout=30, metadata=[("authorization", "Bearer wrong")]
            )
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        stub.Export(
            traces_request(accepted), timeout=30, metadata=[("authorization", f"Bearer {KEY}")]
        )
    stored = stored_span_ids(keyed_daemon, refused.span_id, accepted.span_id)
    assert stored == {accepted.span_id.hex()}


def test_sdk_exporters_send_the_ingest_key(keyed_daemon: RunningDaemon) -> None:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
        OTLPSpanExporter as GrpcExporter,
    )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpExporter,
    )

    http_spans, grpc_spans = _sdk_spans(5, "sdk-http-keyed"), _sdk_spans(5, "sdk-grpc-keyed")
    http_exporter = HttpExporter(
        endpoint=keyed_daemon.http_url("/v1/traces"), headers={"authorization": f"Bearer {KEY}"}
    )
    grpc_exporter = GrpcExporter(
        endpoint=keyed_daemon.grpc_endpoint,
        insecure=True,
        headers={"authorization": f"Bearer {KEY}"},
    )
    try:
        assert http_exporter.export(http_spans) == SpanExportResult.SUCCESS
        assert grpc_exporter.export(grpc_spans) == SpanExportResult.SUCCESS
    finally:
        http_exporter.shutdown()
        grpc_exporter.shutdown()
    rows = keyed_daemon.sql("SELECT span_id FROM spans WHERE name LIKE 'sdk-%-keyed-%'")
    assert {row["span_id"] for row in rows} == {span_hex(s) for s in [*http_spans, *grpc_spans]}


def _sdk_spans(count: int, name: str) -> Sequence[ReadableSpan]:
    return make_sdk_spans(count, name, SERVICE)


# ---------------------------------------------------------------------------------------------
# Chunked bodies and gzip members


def _raw_http(daemon: RunningDaemon, head: bytes, body_parts: list[bytes]) -> bytes:
    """Send a hand-written request on a raw socket and return the start of the answer."""
    import socket

    host, port = daemon.listen["http"].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head)
        for part in body_parts:
            try:
                sock.sendall(part)
            except OSError:
                break  # the daemon answered and closed before the body ended
        return sock.recv(65536)


_CHUNKED_HEAD = (
    b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)


def test_http_chunked_body_is_stored(daemon: RunningDaemon) -> None:
    span = make_span("chunked")
    body = traces_request(span).SerializeToString()
    half = len(body) // 2
    chunks = [b"%x\r\n%s\r\n" % (len(p), p) for p in (body[:half], body[half:])]
    answer = _raw_http(daemon, _CHUNKED_HEAD, [*chunks, b"0\r\n\r\n"])
    assert answer.startswith(b"HTTP/1.1 200")
    assert stored_span_ids(daemon, span.span_id) == {span.span_id.hex()}


def test_http_negative_chunk_size_is_400_and_reads_nothing_more(daemon: RunningDaemon) -> None:
    before = peak_rss_bytes(daemon.process.pid)
    answer = _raw_http(daemon, _CHUNKED_HEAD + b"-1\r\n", [b"\0" * (1 << 20)] * 100)
    assert answer.startswith(b"HTTP/1.1 400")
    assert b"bad chunked encoding" in answer
    assert peak_rss_bytes(daemon.process.pid) - before < 50 << 20
    assert_still_serving(daemon)


def _refusal(daemon: RunningDaemon, request: bytes) -> bytes:
    """Send a hand-written request on a raw socket; return the whole answer (a refusal,
    after which the daemon closes the connection)."""
    import socket

    host, port = daemon.listen["http"].rsplit(":", 1)
    answer = b""
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(request)
        while part := sock.recv(65536):
            answer += part
    return answer


@pytest.mark.parametrize(
    ("framing", "status", "reason"),
    [
        (b"Content-Length: %d\r\nContent-Length: %d\r\n", 400, b"more than one Content-Length"),
        (
            b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n",
            400,
            b"both Content-Length and Transfer-Encoding",
        ),
        (b"Transfer-Encoding: gzip, chunked\r\n", 501, b"'gzip, chunked' is not supported"),
    ],
    ids=["two-content-lengths", "content-length-and-chunked", "gzip-transfer-coding"],
)
def test_http_body_framing_that_reads_two_ways_is_refused(
    daemon: RunningDaemon, framing: bytes, status: int, reason: bytes
) -> None:
    # A proxy in front might take the other reading and smuggle a request past it.
    body = good_body()
    head = b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
    framing = framing.replace(b"%d", str(len(body)).encode())
    answer = _refusal(daemon, head + framing + b"\r\n" + body)
    assert answer.startswith(b"HTTP/1.1 %d " % status), answer[:200]
    assert reason in answer
    assert_still_serving(daemon)


def test_http_gzip_with_several_members_is_stored_whole(daemon: RunningDaemon) -> None:
    first, second = make_span("member-1"), make_span("member-2")
    # Protobuf messages concatenate: two members hold one request with both spans.
    body = gzip.compress(traces_request(first).SerializeToString()) + gzip.compress(
        traces_request(second).SerializeToString()
    )
    reply = send_http(daemon, body, headers={"Content-Encoding": "gzip"})
    assert reply.status == 200
    assert stored_span_ids(daemon, first.span_id, second.span_id) == {
        first.span_id.hex(),
        second.span_id.hex(),
    }


def test_http_bearer_scheme_is_case_insensitive(keyed_daemon: RunningDaemon) -> None:
    assert (
        send_http(keyed_daemon, good_body(), headers={"Authorization": "bearer secret"}).status
        == 200
    )
