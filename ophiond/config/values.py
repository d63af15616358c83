"""Value parsers shared by the config file, the environment and the flags: durations, sizes,
listen addresses, and the scalars (``str``, ``int``, ``float``, ``bool``) of a key."""

from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import dataclass
from typing import Any

from ophiond.errors import ConfigError

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")
_SIZE_UNITS = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_duration(text: str | int | float, what: str = "duration") -> float:
    """Seconds from ``250ms``, ``1.5s``, ``2m``, ``12h``, ``7d``, ``1w`` (a bare number is seconds)."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        if text < 0:
            raise ConfigError(f"{what} must not be negative: {text}")
        return float(text)
    match = _DURATION_RE.match(str(text))
    if not match:
        raise ConfigError(
            f"{what}: {text!r} is not a duration",
            hint="use a number and a unit: 250ms, 1.5s, 2m, 12h, 7d, 1w",
        )
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


def parse_size(text: str | int, what: str = "size") -> int:
    """Bytes from ``512MB``, ``20MiB``, ``10GB`` or a bare number of bytes."""
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise ConfigError(f"{what} must not be negative: {text}")
        return text
    match = _SIZE_RE.match(str(text))
    unit = match.group(2).lower() if match else ""
    if not match or unit not in _SIZE_UNITS and unit != "":
        raise ConfigError(
            f"{what}: {text!r} is not a size", hint="use a number and a unit: 512MB, 20MiB, 10GB"
        )
    return int(float(match.group(1)) * _SIZE_UNITS.get(unit, 1))


@dataclass(frozen=True)
class ListenAddress:
    """A host and port to listen on; ``None`` from :func:`parse_listen` means the listener is off."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) is this machine's loopback interface."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # another host name: it may resolve to anything


def parse_listen(text: str, what: str = "listen address") -> ListenAddress | None:
    """``HOST:PORT``, ``[::1]:PORT`` or ``off``. A port of 0 lets the system pick a free one."""
    text = text.strip()
    if text.lower() in ("off", "none", "disabled", ""):
        return None
    match = re.match(r"^\[([^\]]+)\]:(\d+)$", text) or re.match(r"^([^:\[\]]+):(\d+)$", text)
    if not match:
        raise ConfigError(
            f"{what}: {text!r} is not HOST:PORT",
            hint="for example 127.0.0.1:4317, [::1]:4317, 0.0.0.0:4317 or off",
        )
    port = int(match.group(2))
    if port > 65535:
        raise ConfigError(f"{what}: port {port} is out of range (0-65535)")
    return ListenAddress(match.group(1), port)


# TOML has true and false; an environment variable can only spell them.
_BOOLEANS = {
    **dict.fromkeys(("true", "yes", "on", "1"), True),
    **dict.fromkeys(("false", "no", "off", "0"), False),
}


def coerce_scalar(kind: str, name: str, value: Any, where: str) -> Any:
    """``value`` as a field of type ``kind`` (``str``, ``int``, ``float`` or ``bool``)."""
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _BOOLEANS:
            return _BOOLEANS[value.strip().lower()]
        raise ConfigError(f"{where}: {name} must be true or false, not {value!r}")
    if kind == "int":
        if isinstance(value, bool):
            raise ConfigError(f"{where}: {name} must be a whole number, not {value!r}")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: {name} must be a whole number, not {value!r}") from None
    if kind == "float":
        if isinstance(value, bool):
            raise ConfigError(f"{where}: {name} must be a number, not {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: {name} must be a number, not {value!r}") from None
        if not math.isfinite(number):
            raise ConfigError(f"{where}: {name} must be a finite number, not {value!r}")
        return number
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise ConfigError(f"{where}: {name} must be a string, not {value!r}")
    return str(value)
