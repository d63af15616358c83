"""Language detection for ``ophion instrument``: the official images are known from their
environment, what runs beats what the image says, Go binaries are known from their build info,
and anything unsure is said so with the evidence."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ophiond.containers.detect import detect, libc

FIXTURES = Path(__file__).parent / "fixtures" / "inspect"

ELF = b"\x7fELF\x02\x01\x01" + bytes(57)  # a 64-bit little-endian ELF header's first 64 bytes


def _inspect(name: str) -> dict[str, Any]:
    """``docker inspect`` of a container, as saved in tests/fixtures/inspect."""
    document: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return document


def _with_env(inspect: dict[str, Any], *entries: str) -> dict[str, Any]:
    """``inspect`` with more variables in its environment."""
    config = {**inspect["Config"], "Env": [*inspect["Config"]["Env"], *entries]}
    return {**inspect, "Config": config}


class Files:
    """A container's files as the probe sees them, and the paths it was asked for."""

    def __init__(self, files: dict[str, bytes] | None = None) -> None:
        self.files = files or {}
        self.read: list[str] = []

    def __call__(self, path: str, limit: int) -> bytes | None:
        self.read.append(path)
        content = self.files.get(path)
        return None if content is None else content[:limit]


def _go_binary(version: str = "go1.23.4", offset: int = 3 * 1024 * 1024) -> bytes:
    """A Go binary's bytes: the build ID note after the ELF header, the build info ``offset``
    bytes in (Go 1.18+ layout: magic, pointer size, flags, then the version inline at 32)."""
    build_id = b"Jq3vGfZyLw2Ke8pPaH1x/0Wc3nX5m7Tt9Yb6RrVdS"
    note = b"\x04\x00\x00\x00" + len(build_id).to_bytes(4, "little") + b"\x04\x00\x00\x00Go\x00\x00"
    info = b"\xff Go buildinf:\x08\x02" + bytes(16)
    info += bytes([len(version)]) + version.encode() + b"\x20path\tacme.example/inventory\n"
    head = ELF + bytes(0xF9C - len(ELF)) + note + build_id
    return head + bytes(offset - len(head)) + info + bytes(4096)


def _native_binary() -> bytes:
    """A Rust program's bytes: ELF, and no trace of Go or .NET."""
    return (
        ELF + bytes(8192) + b"rust_begin_unwind\x00/rustc/3f5fd8dd41153bc5fdca9427e9e05be2c767ba23"
    )


OFFICIAL_IMAGES = [
    pytest.param(
        "python-3.12-slim", ["python app.py"], "python", "3.12.7", "PYTHON_VERSION=3.12.7"
    ),
    pytest.param("node-20-alpine", ["node server.js"], "nodejs", "20.18.0", "NODE_VERSION=20.18.0"),
    pytest.param(
        "eclipse-temurin-21-jre",
        ["java -jar /opt/app/orders.jar"],
        "java",
        "21.0.5+11",
        "JAVA_VERSION=jdk-21.0.5+11",
    ),
    pytest.param(
        "dotnet-aspnet-8.0", ["dotnet app.dll"], "dotnet", "8.0.11", "DOTNET_VERSION=8.0.11"
    ),
    pytest.param("golang-1.23", ["app"], "go", "1.23.4", "GOLANG_VERSION=1.23.4"),
    pytest.param(
        "php-8.3-apache", ["apache2 -DFOREGROUND"] * 6, "php", "8.3.14", "PHP_VERSION=8.3.14"
    ),
]


@pytest.mark.parametrize(
    ("fixture", "processes", "language", "version", "variable"), OFFICIAL_IMAGES
)
@pytest.mark.parametrize("listed", [True, False], ids=["processes", "no-processes"])
def test_official_images_are_known_from_their_environment(
    fixture: str, processes: list[str], language: str, version: str, variable: str, listed: bool
) -> None:
    files = Files()
    detection = detect(_inspect(fixture), processes if listed else None, files)
    assert (detection.language, detection.version) == (language, version)
    assert f"environment: {variable}" in detection.evidence
    # The cheapest signal decided: no file in the container was read.
    assert files.read == []


def test_the_process_is_in_the_evidence_and_is_the_executable() -> None:
    detection = detect(_inspect("python-3.12-slim"), ["python app.py"], Files())
    assert detection.executable == "python"
    assert "process: python app.py" in detection.evidence


def test_without_a_process_list_the_evidence_shows_the_command() -> None:
    detection = detect(_inspect("node-20-alpine"), None, Files())
    assert detection.language == "nodejs"
    assert detection.executable is None
    assert "command: docker-entrypoint.sh node server.js" in detection.evidence


def test_the_process_list_wins_over_the_environment() -> None:
    # A node image whose container was started with a Python worker instead of the server.
    processes = ["/usr/local/bin/python3.12 worker.py"]
    detection = detect(_inspect("node-20-alpine"), processes, Files())
    assert detection.language == "python"
    assert detection.version == "3.12"  # from the executable, not NODE_VERSION
    assert detection.executable == "/usr/local/bin/python3.12"
    assert "environment: NODE_VERSION=20.18.0" in detection.evidence
    assert "process: /usr/local/bin/python3.12 worker.py" in detection.evidence


def test_an_executable_of_another_version_than_the_environment_gives_its_version() -> None:
    detection = detect(_inspect("python-3.12-slim"), ["/usr/bin/python3.11 app.py"], Files())
    assert (detection.language, detection.version) == ("python", "3.11")


def test_two_languages_in_the_environment_are_settled_by_the_process_list() -> None:
    inspect = _with_env(
        _inspect("python-3.12-slim"), "NODE_VERSION=20.18.0", "YARN_VERSION=1.22.22"
    )
    detection = detect(inspect, ["/sbin/tini -- node server.js"], Files())
    assert (detection.language, detection.version) == ("nodejs", "20.18.0")
    assert detection.executable == "node"


def test_two_languages_in_the_environment_and_nothing_else_is_unsure() -> None:
    inspect = _with_env(_inspect("python-3.12-slim"), "NODE_VERSION=20.18.0")
    inspect["Path"], inspect["Args"] = "/app/run", []
    detection = detect(inspect, None, Files())
    assert detection.language is None
    assert "environment: PYTHON_VERSION=3.12.7" in detection.evidence
    assert "environment: NODE_VERSION=20.18.0" in detection.evidence


@pytest.mark.parametrize(
    ("processes", "language", "executable"),
    [
        (["/bin/sh -c python app.py"], "python", "python"),
        (["/sbin/tini -- gosu app node index.js"], "nodejs", "node"),
        (
            ["/usr/bin/dumb-init -- /bin/bash /entrypoint.sh", "java -Xmx512m -jar app.jar"],
            "java",
            "java",
        ),
        (["/sbin/docker-init -- su-exec app:app dotnet Billing.dll"], "dotnet", "dotnet"),
        (
            ["/usr/local/bin/python3.12 /usr/local/bin/gunicorn -w 4 app:app"],
            "python",
            "/usr/local/bin/python3.12",
        ),
        (["gunicorn: master [app:app]", "gunicorn: worker [app:app]"], "python", "gunicorn"),
        (["npm start", "sh -c node server.js", "node server.js"], "nodejs", "npm"),
        (
            [
                "/usr/bin/python3 /usr/bin/supervisord -c /etc/supervisor/supervisord.conf",
                "nginx: master process nginx -g daemon off;",
                "php-fpm: master process (/usr/local/etc/php-fpm.conf)",
                "php-fpm: pool www",
            ],
            "php",
            "php-fpm",
        ),
        (
            [
                "s6-svscan -t0 /var/run/s6/services",
                "s6-supervise app",
                "/usr/local/bin/node /srv/main.js",
            ],
            "nodejs",
            "/usr/local/bin/node",
        ),
    ],
)
def test_the_program_behind_wrappers_and_supervisors_decides(
    processes: list[str], language: str, executable: str
) -> None:
    detection = detect(_inspect("alpine-app"), processes, Files())
    assert (detection.language, detection.executable) == (language, executable)
    assert "environment: no language variable" in detection.evidence


def test_apache_is_php_only_in_a_php_image() -> None:
    php = detect(_inspect("php-8.3-apache"), ["apache2 -DFOREGROUND"], Files())
    assert php.language == "php"
    assert "process: apache2 -DFOREGROUND" in php.evidence
    plain = detect(_inspect("alpine-app"), ["httpd -DFOREGROUND"], Files())
    assert plain.language is None
    assert "process: httpd -DFOREGROUND" in plain.evidence


def test_a_distroless_go_binary_is_known_from_its_build_info() -> None:
    files = Files({"/app/server": _go_binary()})
    detection = detect(_inspect("distroless-go"), ["/app/server"], files)
    assert (detection.language, detection.version) == ("go", "1.23.4")
    assert detection.executable == "/app/server"
    assert "process: /app/server" in detection.evidence
    assert "file: /app/server is a Go binary built with go1.23.4" in detection.evidence


def test_a_go_binary_is_found_from_the_command_without_a_process_list() -> None:
    files = Files({"/app/server": _go_binary()})
    detection = detect(_inspect("distroless-go"), None, files)
    assert detection.language == "go"
    assert "command: /app/server" in detection.evidence


def test_a_relative_program_is_found_in_the_working_directory() -> None:
    files = Files({"/app/server": _go_binary()})
    detection = detect(_inspect("alpine-app"), ["./server --listen :7000"], files)
    assert (detection.language, detection.executable) == ("go", "/app/server")


def test_a_go_binary_larger_than_what_is_read_is_known_from_its_build_id_note() -> None:
    files = Files({"/app/server": _go_binary(offset=20 * 1024 * 1024)})
    detection = detect(_inspect("distroless-go"), ["/app/server"], files)
    assert (detection.language, detection.version) == ("go", None)


def test_a_dotnet_apphost_is_dotnet() -> None:
    apphost = ELF + bytes(4096) + b"libhostfxr.so\x00DOTNET_ROOT\x00"
    detection = detect(_inspect("alpine-app"), ["/app/Billing"], Files({"/app/Billing": apphost}))
    assert detection.language == "dotnet"
    assert "file: /app/Billing is a .NET application host" in detection.evidence


def test_a_script_is_known_from_its_interpreter_line() -> None:
    files = Files({"/app/run": b"#!/usr/bin/env python3\nimport relay\nrelay.main()\n"})
    detection = detect(_inspect("alpine-app"), ["/app/run"], files)
    assert detection.language == "python"
    assert "file: /app/run starts with #!/usr/bin/env python3" in detection.evidence


def test_an_unknown_native_program_is_unsure_and_says_what_was_seen() -> None:
    files = Files({"/app/run": _native_binary(), "/lib/ld-musl-x86_64.so.1": ELF})
    detection = detect(_inspect("alpine-app"), ["/app/run"], files)
    assert detection.language is None
    assert detection.evidence == (
        "environment: no language variable",
        "process: /app/run",
        "file: /app/run is an ELF executable without Go build info",
    )


def test_one_interpreter_in_the_image_is_weak_evidence() -> None:
    files = Files({"/app/run": b"#!/bin/sh\nexec relay\n", "/usr/local/bin/node": ELF})
    detection = detect(_inspect("alpine-app"), None, files)
    assert detection.language == "nodejs"
    assert "file: /usr/local/bin/node exists" in detection.evidence


def test_two_interpreters_in_the_image_are_unsure() -> None:
    files = Files({"/usr/local/bin/node": ELF, "/usr/bin/python3": ELF})
    detection = detect(_inspect("alpine-app"), None, files)
    assert detection.language is None
    assert "file: /usr/local/bin/node exists" in detection.evidence
    assert "file: /usr/bin/python3 exists" in detection.evidence


@pytest.mark.parametrize(
    ("files", "arch", "expected"),
    [
        ({"/lib/ld-musl-x86_64.so.1": ELF}, "amd64", "musl"),
        ({"/lib/ld-musl-aarch64.so.1": ELF}, "arm64", "musl"),
        (
            {"/lib64/ld-linux-x86-64.so.2": ELF, "/lib/x86_64-linux-gnu/libc.so.6": ELF},
            "amd64",
            "glibc",
        ),
        ({}, "arm64", "glibc"),  # a static image (distroless/static) has no loader at all
    ],
)
def test_libc(files: dict[str, bytes], arch: str, expected: str) -> None:
    assert libc(Files(files), arch) == expected
