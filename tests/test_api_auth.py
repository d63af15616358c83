"""The TCP API against a real daemon: bearer tokens and roles, the admin token file, rate
limiting, and the ``ophion`` command over TCP and through the socket."""

from __future__ import annotations

import http.client
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ophion_cli.main import app
from ophiond.api.tcp import RateLimiter
from ophiond.config import load_settings
from ophiond.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent
runner = CliRunner()


def call(
    daemon: Any,
    method: str,
    path: str,
    token: str | None = None,
    body: dict[str, Any] | None = None,
) -> tuple[int, dict[str, Any], http.client.HTTPMessage]:
    """One request to the daemon's TCP API: status, JSON body, headers."""
    host, port = daemon.listen["api_tcp"].rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    payload = None
    if body is not None:
        payload = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    try:
        conn.request(method, path, body=payload, headers=headers)
        response = conn.getresponse()
        document = json.loads(response.read())
    finally:
        conn.close()
    return response.status, document, response.headers


def admin_token(daemon: Any) -> str:
    return (daemon.home / "state" / "admin.token").read_text().strip()


def ophion(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real ``ophion`` entry point in a subprocess, with extra environment variables."""
    return subprocess.run(
        [sys.executable, "-m", "ophion_cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture
def tcp_daemon(daemon_factory: Any) -> Any:
    """A daemon with its TCP API on a free loopback port."""
    return daemon_factory("--api-listen", "127.0.0.1:0")


def test_no_token_or_a_wrong_one_gets_401(tcp_daemon: Any) -> None:
    status, body, headers = call(tcp_daemon, "GET", "/api/v1/status")
    assert status == 401
    assert "bearer token" in body["error"] and "ophion token create" in body["hint"]
    assert headers["WWW-Authenticate"].startswith("Bearer")

    status, body, headers = call(tcp_daemon, "GET", "/api/v1/status", token="oph_not-a-token")
    assert status == 401 and "unknown or revoked" in body["error"]
    assert 'error="invalid_token"' in headers["WWW-Authenticate"]


def test_admin_token_works_over_tcp_and_the_status_shows_the_address(tcp_daemon: Any) -> None:
    status, body, _ = call(tcp_daemon, "GET", "/api/v1/status", token=admin_token(tcp_daemon))
    assert status == 200
    assert body["listen"]["api_tcp"] == tcp_daemon.listen["api_tcp"]
    assert body["listen"]["api"] == str(tcp_daemon.home / "state" / "api.sock")


def test_tcp_api_is_off_by_default(daemon: Any) -> None:
    assert daemon.listen["api_tcp"] is None
    assert daemon.status()["listen"]["api_tcp"] is None


def test_read_token_can_query_but_not_administer(tcp_daemon: Any) -> None:
    admin = admin_token(tcp_daemon)
    status, created, _ = call(
        tcp_daemon, "POST", "/api/v1/tokens", admin, {"name": "dashboards", "role": "read"}
    )
    assert status == 200
    assert created["name"] == "dashboards" and created["role"] == "read"
    read = created["token"]
    assert read.startswith("oph_") and len(read) > 40

    status, body, _ = call(tcp_daemon, "GET", "/api/v1/status", read)
    assert status == 200 and body["pid"] == tcp_daemon.process.pid
    status, body, _ = call(tcp_daemon, "POST", "/api/v1/sql", read, {"sql": "SELECT 41 + 1 AS n"})
    assert status == 200 and body["rows"] == [[42]]

    # A read token can neither operate nor administer: the admin routes answer 403.
    status, body, _ = call(
        tcp_daemon, "POST", "/api/v1/tokens", read, {"name": "mine", "role": "admin"}
    )
    assert status == 403 and "read role" in body["error"] and "needs admin" in body["error"]
    assert call(tcp_daemon, "GET", "/api/v1/tokens", read)[0] == 403
    assert call(tcp_daemon, "DELETE", "/api/v1/tokens/admin", read)[0] == 403

    # The list never shows a token, and tokens.json keeps only hashes.
    status, listed, _ = call(tcp_daemon, "GET", "/api/v1/tokens", admin)
    assert status == 200
    assert [(t["name"], t["role"]) for t in listed["tokens"]] == [
        ("admin", "admin"),
        ("dashboards", "read"),
    ]
    assert read not in json.dumps(listed)
    tokens_file = tcp_daemon.home / "state" / "tokens.json"
    assert read not in tokens_file.read_text() and admin not in tokens_file.read_text()
    assert stat.S_IMODE(tokens_file.stat().st_mode) == 0o600

    # Revoked: refused at once.
    status, body, _ = call(tcp_daemon, "DELETE", "/api/v1/tokens/dashboards", admin)
    assert status == 200 and body == {"revoked": "dashboards"}
    assert call(tcp_daemon, "GET", "/api/v1/status", read)[0] == 401


def test_token_mistakes_are_clear_errors(tcp_daemon: Any) -> None:
    admin = admin_token(tcp_daemon)
    status, body, _ = call(
        tcp_daemon, "POST", "/api/v1/tokens", admin, {"name": "ci", "role": "superuser"}
    )
    assert status == 400 and "unknown role 'superuser'" in body["error"]
    assert "read, operate, admin" in body["hint"]
    assert (
        call(tcp_daemon, "POST", "/api/v1/tokens", admin, {"name": "ci", "role": "read"})[0] == 200
    )
    status, body, _ = call(
        tcp_daemon, "POST", "/api/v1/tokens", admin, {"name": "ci", "role": "operate"}
    )
    assert status == 409 and "exists already" in body["error"]
    status, body, _ = call(tcp_daemon, "DELETE", "/api/v1/tokens/nobody", admin)
    assert status == 404 and "no token named 'nobody'" in body["error"]
    status, body, _ = call(tcp_daemon, "DELETE", "/api/v1/tokens/admin", admin)
    assert status == 409 and "only admin token" in body["error"]
    assert call(tcp_daemon, "GET", "/api/v1/status", admin)[0] == 200


def test_admin_token_file_is_private_and_survives_a_restart(daemon_factory: Any) -> None:
    first = daemon_factory("--api-listen", "127.0.0.1:0")
    token_file = first.home / "state" / "admin.token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    before = token_file.read_text()
    assert before.startswith("oph_")
    assert first.stop() == 0

    second = daemon_factory("--api-listen", "127.0.0.1:0")
    assert token_file.read_text() == before
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert call(second, "GET", "/api/v1/status", before.strip())[0] == 200


def test_rate_limit_answers_429_with_retry_after_then_serves_again(daemon_factory: Any) -> None:
    daemon = daemon_factory(
        "--api-listen",
        "127.0.0.1:0",
        env={"OPHION_API_RATE_LIMIT": "2", "OPHION_API_RATE_BURST": "3"},
    )
    admin = admin_token(daemon)
    answers = [call(daemon, "GET", "/api/v1/status", admin) for _ in range(10)]
    codes = [status for status, _, _ in answers]
    assert codes[:3] == [200, 200, 200]  # the burst
    limited = [(body, headers) for status, body, headers in answers if status == 429]
    assert len(limited) >= 5, codes
    body, headers = limited[0]
    retry_after = int(headers["Retry-After"])
    assert retry_after >= 1
    assert "too many requests" in body["error"] and "retry after" in body["hint"]

    time.sleep(retry_after)
    assert call(daemon, "GET", "/api/v1/status", admin)[0] == 200


@pytest.mark.parametrize(
    ("request_head", "status"),
    [
        (b"POST /api/v1/sql HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n", 400),
        (b"POST /api/v1/sql HTTP/1.1\r\nTransfer-Encoding: chunked\r\n", 411),
        (b"GET /api/v1/status HTTP/1.1\r\nContent-Length: 2\r\n", 400),
    ],
    ids=["two-content-lengths", "chunked", "get-with-a-body"],
)
def test_a_body_the_api_could_misread_is_refused_and_the_connection_closed(
    tcp_daemon: Any, request_head: bytes, status: int
) -> None:
    # Read another way (by a proxy in front, or by us), its body could pass for a request.
    import socket

    host, port = tcp_daemon.listen["api_tcp"].rsplit(":", 1)
    token = admin_token(tcp_daemon).encode()
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(request_head + b"Authorization: Bearer " + token + b"\r\n\r\n{}")
        answer = b""
        while part := sock.recv(65536):  # the daemon closes the connection after refusing
            answer += part
    assert answer.startswith(b"HTTP/1.1 %d " % status), answer[:300]
    assert answer.count(b"HTTP/1.1 ") == 1  # the body was not taken for a second request
    assert call(tcp_daemon, "GET", "/api/v1/status", admin_token(tcp_daemon))[0] == 200


def test_rate_limiter_refills_per_address() -> None:
    now = [100.0]
    limiter = RateLimiter(rate=2, burst=3, clock=lambda: now[0])
    assert [limiter.take("10.0.0.1") for _ in range(3)] == [0, 0, 0]
    assert limiter.take("10.0.0.1") == pytest.approx(0.5)
    assert limiter.take("10.0.0.2") == 0  # another client has its own bucket
    now[0] += 0.5
    assert limiter.take("10.0.0.1") == 0


def test_api_settings_from_the_environment(tmp_path: Path) -> None:
    env = {
        "OPHION_HOME": str(tmp_path),
        "OPHION_API_LISTEN": "127.0.0.1:8080",
        "OPHION_API_RATE_LIMIT": "2.5",
        "OPHION_API_RATE_BURST": "5",
        "OPHION_TOKEN": "not a setting, read by the CLI",
    }
    valid = load_settings(env=env).validate()
    assert str(valid.api_listen) == "127.0.0.1:8080"
    assert (valid.api_rate_limit, valid.api_rate_burst) == (2.5, 5)
    assert load_settings(env={"OPHION_HOME": str(tmp_path)}).validate().api_listen is None
    with pytest.raises(ConfigError, match="api_rate_limit must be a number"):
        load_settings(env={**env, "OPHION_API_RATE_LIMIT": "fast"})
    with pytest.raises(ConfigError, match="api_rate_limit must be positive"):
        load_settings(env={**env, "OPHION_API_RATE_LIMIT": "0"}).validate()


def test_cli_over_tcp_with_and_without_a_token(tcp_daemon: Any, tmp_path: Path) -> None:
    url = f"http://{tcp_daemon.listen['api_tcp']}"
    elsewhere = str(tmp_path / "another-home")  # no admin token file to fall back on

    result = ophion(
        "status", "--json", "--api", url,
        env={"OPHION_TOKEN": admin_token(tcp_daemon), "OPHION_HOME": elsewhere},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["pid"] == tcp_daemon.process.pid

    result = ophion("status", "--json", "--api", url, env={"OPHION_HOME": elsewhere})
    assert result.returncode == 1 and result.stdout == ""
    first = result.stderr.splitlines()[0]
    assert first.startswith("error: the API at") and "needs a token" in first
    assert "OPHION_TOKEN" in first and "Traceback" not in result.stderr

    # The daemon's own user needs no token: the CLI sends the daemon's admin token.
    result = ophion("status", "--json", "--api", url)
    assert result.returncode == 0, result.stderr


def test_cli_says_which_role_is_needed_and_when_nothing_listens(tcp_daemon: Any) -> None:
    url = f"http://{tcp_daemon.listen['api_tcp']}"
    created = runner.invoke(app, ["token", "create", "viewer", "--role", "read", "--json"])
    assert created.exit_code == 0, created.output
    read = json.loads(created.stdout)["token"]

    result = ophion("token", "list", "--api", url, env={"OPHION_TOKEN": read})
    assert result.returncode == 1 and "needs admin" in result.stderr.splitlines()[0]

    port = tcp_daemon.listen["api_tcp"].rsplit(":", 1)[1]
    assert tcp_daemon.stop() == 0
    result = ophion("status", "--api", url)
    assert result.returncode == 1
    assert result.stderr.splitlines()[0] == (
        f"error: ophiond is not running at http://127.0.0.1:{port} (connection refused)"
    )


def test_token_commands_through_the_socket(tcp_daemon: Any) -> None:
    created = runner.invoke(app, ["token", "create", "ci", "--role", "operate"])
    assert created.exit_code == 0, created.output
    token = created.stdout.strip()
    assert token.startswith("oph_") and "\n" not in token  # alone on stdout, for $(...)
    assert "not shown again" in created.stderr
    assert call(tcp_daemon, "GET", "/api/v1/status", token)[0] == 200

    listed = runner.invoke(app, ["token", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    names = {t["name"]: t["role"] for t in json.loads(listed.stdout)["tokens"]}
    assert names == {"admin": "admin", "ci": "operate"}
    table = runner.invoke(app, ["token", "list"])
    assert "ci" in table.stdout and "operate" in table.stdout and token not in table.stdout

    revoked = runner.invoke(app, ["token", "revoke", "ci"])
    assert revoked.exit_code == 0 and "revoked token 'ci'" in revoked.stdout
    assert call(tcp_daemon, "GET", "/api/v1/status", token)[0] == 401

    again = ophion("token", "revoke", "ci")
    assert again.returncode == 1 and "no token named 'ci'" in again.stderr
    assert "Traceback" not in again.stderr


def test_rate_limiter_memory_stays_bounded_and_recent_clients_keep_their_bucket() -> None:

    now = [0.0]
    limiter = RateLimiter(1.0, 2, clock=lambda: now[0])
    limiter.take("busy")
    limiter.take("busy")
    for i in range(25_000):
        limiter.take(f"10.0.{i // 256}.{i % 256}")
        if i % 1000 == 0:
            assert limiter.take("busy") > 0  # seen recently: still limited, never forgotten
    assert len(limiter._buckets) <= 10_000
