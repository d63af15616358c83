"""Stands in for the OpenTelemetry Go eBPF agent in the sidecar tests (its image cannot be pulled
here). It keeps the agent's contract with ophion: it reads the same variables, finds the target
process the way the agent does (``/proc/<pid>/exe`` equal to OTEL_GO_AUTO_TARGET_EXE, which needs
the application's PID namespace), and exports a span over OTLP/HTTP with the resource attributes
it was given. It cannot attach uprobes, so the span only says which process it found."""

import json
import os
import sys
import time
import urllib.request

target = os.environ["OTEL_GO_AUTO_TARGET_EXE"]
endpoint = os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"].rstrip("/") + "/v1/traces"


def find() -> int | None:
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if os.readlink(f"/proc/{pid}/exe") == target:
                    return int(pid)
            except OSError:
                continue
    return None


pid = None
while pid is None:
    pid = find()
    if pid is None:
        print(f"waiting for a process running {target}", flush=True)
        time.sleep(0.5)
print(f"found {target} as pid {pid}", flush=True)

attributes = [{"key": "service.name", "value": {"stringValue": os.environ["OTEL_SERVICE_NAME"]}}]
for pair in os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "").split(","):
    key, _, value = pair.partition("=")
    if key:
        attributes.append({"key": key, "value": {"stringValue": value}})
now = time.time_ns()
span = {
    "traceId": os.urandom(16).hex(),
    "spanId": os.urandom(8).hex(),
    "name": f"attached to pid {pid}",
    "kind": 1,
    "startTimeUnixNano": str(now - 1_000_000),
    "endTimeUnixNano": str(now),
}
body = {
    "resourceSpans": [{"resource": {"attributes": attributes}, "scopeSpans": [{"spans": [span]}]}]
}
request = urllib.request.Request(
    endpoint, json.dumps(body).encode(), {"Content-Type": "application/json"}
)
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
with opener.open(request, timeout=10) as answer:
    print(f"exported: HTTP {answer.status}", flush=True)
sys.stdout.flush()
while True:
    time.sleep(3600)
