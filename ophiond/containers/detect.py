"""Which language a running container's application is written in, from what Docker shows.

Signals are read cheapest first:

1. The environment (``Config.Env``, which includes the image's) of the official images:
   ``PYTHON_VERSION`` (python), ``NODE_VERSION`` (node), ``JAVA_VERSION``/``JAVA_HOME``
   (eclipse-temurin, openjdk), ``DOTNET_VERSION``/``ASPNET_VERSION`` (dotnet/runtime,
   dotnet/aspnet), ``GOLANG_VERSION`` (golang), ``PHP_VERSION`` (php).
2. The process list, or the container's command (``Path`` and ``Args``) when there is none.
   Wrappers (shells, tini, dumb-init, gosu, su-exec, entrypoint scripts, ``exec``, ``env``) are
   looked through to the program they run; process supervisors (s6, runit, supervisord) are
   skipped, as their children have lines of their own. The first program that names a runtime
   decides: python, python3, python3.12, and gunicorn/uvicorn/celery, which are Python programs
   whatever they are called through; node, nodejs, npm, npx, yarn, pnpm; java; dotnet; go;
   php, php-fpm, php-cgi, frankenphp. apache2 and httpd mean php only when ``PHP_VERSION`` is
   set: the php images run PHP inside Apache, while plain Apache serves files.
3. Files, through the probe: the main programs (a Go binary's build info, a .NET apphost, a
   script's ``#!`` line), then, as weak evidence, the interpreters where the official images put
   them, when exactly one language has one.

What runs beats what the image says: a program in the process list that names a language wins
over the environment, and the evidence shows both. The environment decides alone only when it
names exactly one language. Anything unsure gives ``language=None`` and all the evidence, so the
caller can ask the user to name the language.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

LANGUAGES: tuple[str, ...] = ("python", "nodejs", "java", "dotnet", "go", "php")

Probe = Callable[[str, int], bytes | None]
"""Reads a file in the container: ``probe(path, limit)`` is up to its first ``limit`` bytes, or
None when it does not exist."""


@dataclass(frozen=True)
class Detection:
    """The language a container runs, and what was seen on the way to it."""

    language: str | None
    """One of LANGUAGES, or None when unsure."""
    evidence: tuple[str, ...]
    """What was seen, one readable line each: ``environment: PYTHON_VERSION=3.12.7``."""
    version: str | None = None
    """The runtime's version when known: from the environment (JAVA_VERSION without its ``jdk-``
    prefix, so ``21.0.5+11``), an executable's name (``3.12`` from python3.12) or a Go binary's
    build info. An executable's version wins over a variable that disagrees with it."""
    executable: str | None = None
    """The main program as the process list shows it (``python3.12``, ``/usr/local/bin/node``),
    or the path of the file that was read when that file decided (``/app/server``); None when
    there was no process list."""


# Variables of the official images, in the order their values are taken as the version
# (dotnet/sdk sets DOTNET_SDK_VERSION as well, which is not the runtime's).
_ENVIRONMENT: tuple[tuple[str, str], ...] = (
    ("PYTHON_VERSION", "python"),
    ("NODE_VERSION", "nodejs"),
    ("JAVA_VERSION", "java"),
    ("JAVA_HOME", "java"),  # a path, not a version
    ("DOTNET_VERSION", "dotnet"),
    ("ASPNET_VERSION", "dotnet"),
    ("ASPNETCORE_VERSION", "dotnet"),  # its name in dotnet/aspnet before 8.0
    ("DOTNET_SDK_VERSION", "dotnet"),
    ("GOLANG_VERSION", "go"),
    ("PHP_VERSION", "php"),
)

# Program names (basename, without the ":" of titles like "php-fpm: master process"); the group
# "v" is the version the name carries, as Debian's python3.12 and php-fpm8.2 do.
_PROGRAMS: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(r"python(?:(?P<v>\d+\.\d+)|\d)?|gunicorn|uvicorn|hypercorn|celery|daphne"),
        "python",
    ),
    (re.compile(r"node|nodejs|npm|npx|yarn|pnpm"), "nodejs"),
    (re.compile(r"java"), "java"),
    (re.compile(r"dotnet"), "dotnet"),
    (re.compile(r"go"), "go"),
    (re.compile(r"php(?:-fpm|-cgi)?(?P<v>\d+(?:\.\d+)?)?|frankenphp"), "php"),
)
_PHP_HOSTS = frozenset({"apache2", "apache2-foreground", "httpd", "httpd-foreground"})
_PYTHON = _PROGRAMS[0][0]

_SHELLS = frozenset({"sh", "bash", "dash", "ash", "zsh", "busybox"})
# Programs that run the command after their options and this many operands (gosu and su-exec
# take the user first), with those of their options that take a value.
_WRAPPERS: dict[str, tuple[int, frozenset[str]]] = {
    "tini": (0, frozenset({"-p", "-e"})),
    "tini-static": (0, frozenset({"-p", "-e"})),
    "docker-init": (0, frozenset({"-p", "-e"})),  # docker run --init: tini under another name
    "dumb-init": (0, frozenset({"-r", "--rewrite"})),
    "catatonit": (0, frozenset()),
    "gosu": (1, frozenset()),
    "su-exec": (1, frozenset()),
    "env": (0, frozenset({"-u", "--unset", "-C", "--chdir"})),
    "exec": (0, frozenset()),
    "nohup": (0, frozenset()),
    "nice": (0, frozenset({"-n"})),
    # The official images' entrypoint scripts end with exec "$@".
    "docker-entrypoint": (0, frozenset()),
    "docker-php-entrypoint": (0, frozenset()),
}
_SUPERVISORS = frozenset({"s6-svscan", "s6-supervise", "runsvdir", "runsv", "supervisord"})

_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_HEAD = 64 * 1024
# Go's build info sits at the start of the data segment, after code and read-only data: a few
# MB into most binaries, and within 16 MiB for all but very large ones.
_WHOLE = 16 * 1024 * 1024
_GO_BUILDINFO = b"\xff Go buildinf:"
# The build ID note the Go linker puts right after the ELF headers (namesz 4, type 4, "Go\0\0"),
# so a Go binary is known from its first page even when its build info is further on.
_GO_NOTE = re.compile(rb"\x04\x00\x00\x00.{4}\x04\x00\x00\x00Go\x00\x00", re.DOTALL)
_INTERPRETERS: dict[str, tuple[str, ...]] = {
    "python": ("/usr/local/bin/python3", "/usr/bin/python3"),
    "nodejs": ("/usr/local/bin/node", "/usr/bin/node"),
    "java": ("/opt/java/openjdk/bin/java", "/usr/bin/java"),
    "dotnet": ("/usr/share/dotnet/dotnet", "/usr/bin/dotnet"),
    "php": ("/usr/local/bin/php", "/usr/bin/php"),
}
# musl's dynamic loader is /lib/ld-musl-<its name for the machine>.so.1.
_MUSL_MACHINES = {"amd64": "x86_64", "arm64": "aarch64", "arm": "armhf", "386": "i386"}


def detect(
    inspect: Mapping[str, Any], processes: Sequence[str] | None, probe: Probe | None
) -> Detection:
    """The language of the container ``inspect`` describes (``docker inspect``'s object), from its
    environment, its ``processes`` (``docker top``'s command lines; None when it could not be
    asked) and the files ``probe`` reads (None: read none)."""
    config: Mapping[str, Any] = inspect.get("Config") or {}
    env = _environment(config.get("Env"))
    declared, evidence = _declared(env)
    if processes:
        source, lines = "process", list(processes)
    else:
        evidence.append("process list: " + ("not available" if processes is None else "empty"))
        source, lines = "command", [_command(inspect, config)]
    commands = [(_shorten(line), argv) for line in lines if (argv := _unwrap(line.split()))]
    running = [
        (line, argv[0], found)
        for line, argv in commands
        if (found := _runtime(argv[0], php_host="PHP_VERSION" in env))
    ]
    if running:
        line, program, (language, seen) = running[0]
        others = [f"{source}: {other}" for other, _, found in running if found[0] != language]
        return Detection(
            language,
            _unique([*evidence, f"{source}: {line}", *others]),
            _version(declared.get(language), seen),
            program.rstrip(":") if source == "process" else None,
        )

    evidence += _unique(f"{source}: {line}" for line, _ in commands)[:5]
    main = commands[0][1][0] if commands and source == "process" else None
    if len(declared) == 1:
        (language, version), *_ = declared.items()
        return Detection(language, tuple(evidence), version, main)
    if probe is None:
        return Detection(None, tuple(evidence), executable=main)

    workdir = str(config.get("WorkingDir") or "/")
    for program in _unique(argv[0] for _, argv in commands)[:4]:
        path, compiled, seen, line = _examine(probe, program, env.get("PATH"), workdir)
        evidence.append(line)
        if compiled is not None:
            executable = path if source == "process" else None
            version = _version(declared.get(compiled), seen)
            return Detection(compiled, tuple(evidence), version, executable)
    # Weak evidence: an image may carry an interpreter it does not run, hence exactly one.
    present = {
        language: path
        for language, paths in _INTERPRETERS.items()
        for path in paths
        if probe(path, 4) is not None
    }
    evidence += [f"file: {path} exists" for path in present.values()]
    if len(present) == 1:
        (language,) = present
        return Detection(language, tuple(evidence), declared.get(language), main)
    return Detection(None, tuple(evidence), executable=main)


def libc(probe: Probe, arch: str) -> str:
    """``musl`` when the container has musl's loader for ``arch`` (as Docker names it: amd64,
    arm64), else ``glibc``, also for static images that have neither (glibc builds are the
    default of the agents)."""
    machine = arch.split("/")[0]
    machine = _MUSL_MACHINES.get(machine, machine)
    return "musl" if probe(f"/lib/ld-musl-{machine}.so.1", 4) is not None else "glibc"


def _declared(env: Mapping[str, str]) -> tuple[dict[str, str | None], list[str]]:
    """The languages the environment names, with their versions, and the variables that say so."""
    declared: dict[str, str | None] = {}
    evidence: list[str] = []
    for variable, language in _ENVIRONMENT:
        if variable in env:
            evidence.append(f"environment: {variable}={env[variable]}")
            if declared.get(language) is None and variable != "JAVA_HOME":
                # eclipse-temurin's JAVA_VERSION is "jdk-21.0.5+11": the version is what follows.
                declared[language] = env[variable].removeprefix("jdk-") or None
            declared.setdefault(language, None)
    return declared, evidence or ["environment: no language variable"]


def _environment(entries: Any) -> dict[str, str]:
    """``Config.Env``'s ``NAME=value`` entries as a mapping."""
    env: dict[str, str] = {}
    for entry in entries or []:
        name, _, value = str(entry).partition("=")
        env[name] = value
    return env


def _command(inspect: Mapping[str, Any], config: Mapping[str, Any]) -> str:
    """The command Docker started, joined as ``docker top`` shows it."""
    path = inspect.get("Path")
    if path:
        argv = [path, *(inspect.get("Args") or [])]
    else:
        argv = [*_strings(config.get("Entrypoint")), *_strings(config.get("Cmd"))]
    return " ".join(str(arg) for arg in argv)


def _strings(value: Any) -> list[str]:
    """Entrypoint and Cmd are lists, but a string in old containers."""
    return [value] if isinstance(value, str) else [str(v) for v in value or []]


def _name(program: str) -> str:
    """The name ``program`` is known by: ``/usr/sbin/php-fpm:`` is php-fpm."""
    return posixpath.basename(program).rstrip(":")


def _unwrap(argv: list[str]) -> list[str]:
    """The command a chain of wrappers runs (``/sbin/tini -- gosu app node x`` runs ``node x``);
    empty for a process supervisor, whose programs have lines of their own."""
    while argv:
        name = _name(argv[0])
        operand = next((arg for arg in argv[1:] if not arg.startswith("-")), "")
        # supervisord is a Python program: its line starts with the interpreter.
        if name in _SUPERVISORS or (_PYTHON.fullmatch(name) and _name(operand) in _SUPERVISORS):
            return []
        if name in _SHELLS:
            operands, valued = 0, frozenset({"-o"})
        elif name in _WRAPPERS:
            operands, valued = _WRAPPERS[name]
        elif name.endswith("entrypoint.sh"):
            operands, valued = 0, frozenset()
        else:
            return argv
        i = 1
        while i < len(argv) and (argv[i].startswith("-") or (name == "env" and "=" in argv[i])):
            if argv[i] == "--":
                i += 1
                break
            i += 2 if argv[i] in valued else 1
        argv = argv[i + operands :]
    return argv


def _runtime(program: str, php_host: bool) -> tuple[str, str | None] | None:
    """The language ``program`` runs and the version its name carries, if it names one."""
    name = _name(program)
    for pattern, language in _PROGRAMS:
        if match := pattern.fullmatch(name):
            return language, match.groupdict().get("v")
    return ("php", None) if php_host and name in _PHP_HOSTS else None


def _examine(
    probe: Probe, program: str, path_variable: str | None, workdir: str
) -> tuple[str, str | None, str | None, str]:
    """What the file ``program`` runs is: its path, language, version and a line of evidence."""
    if program.startswith("/"):
        paths = [program]
    elif "/" in program:
        paths = [posixpath.normpath(posixpath.join(workdir, program))]
    else:  # looked up in PATH, as execvp does
        paths = [
            posixpath.join(d, program) for d in (path_variable or _DEFAULT_PATH).split(":") if d
        ]
    for path in paths:
        head = probe(path, _HEAD)
        if head is not None:
            break
    else:
        return program, None, None, f"file: {program} not found"
    if head.startswith(b"#!"):
        line = head[2:].split(b"\n", 1)[0].decode(errors="replace").strip()
        argv = _unwrap(line.split())  # "#!/usr/bin/env python3" runs python3
        found = _runtime(argv[0], php_host=False) if argv else None
        language, version = found if found else (None, None)
        return path, language, version, f"file: {path} starts with #!{line}"
    if not head.startswith(b"\x7fELF"):
        return path, None, None, f"file: {path} is neither an ELF executable nor a script"
    data = head if _GO_BUILDINFO in head else (probe(path, _WHOLE) or head)
    if _GO_BUILDINFO in data or b".go.buildinfo" in data or _GO_NOTE.search(head):
        version = _go_version(data)
        built = f" built with go{version}" if version else ""
        return path, "go", version, f"file: {path} is a Go binary{built}"
    # A .NET apphost (framework-dependent or self-contained) loads the runtime through hostfxr.
    if b"libhostfxr.so" in data:
        return path, "dotnet", None, f"file: {path} is a .NET application host"
    return path, None, None, f"file: {path} is an ELF executable without Go build info"


def _go_version(data: bytes) -> str | None:
    """The Go version in a binary's build info (Go 1.18+ stores it inline after a 32-byte
    header: flag 2, then a length-prefixed "go1.23.4")."""
    start = data.find(_GO_BUILDINFO)
    if start < 0 or len(data) < start + 33 or not data[start + 15] & 2:
        return None
    length = data[start + 32]
    version = data[start + 33 : start + 33 + length].decode("ascii", errors="replace")
    # Lengths past 127 would be multi-byte varints; a version is never that long.
    return version[2:] if length < 0x80 and version.startswith("go") else None


def _version(declared: str | None, seen: str | None) -> str | None:
    """The environment's version, unless the executable names another one (python3.11 runs in an
    image whose PYTHON_VERSION is 3.12.7 when the app uses the distribution's Python)."""
    if declared and seen and declared.split(".")[: seen.count(".") + 1] != seen.split("."):
        return seen
    return declared or seen


def _shorten(line: str) -> str:
    """A command line short enough for one line of evidence (a JVM's classpath is not)."""
    return line if len(line) <= 200 else line[:199] + "…"


def _unique(lines: Iterable[str]) -> tuple[str, ...]:
    """``lines`` without repeats, in order (a web server has many identical workers)."""
    return tuple(dict.fromkeys(lines))
