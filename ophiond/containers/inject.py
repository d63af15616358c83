"""What an injection changes in a container's environment, and the record that undoes it.

Rules (design section 8): a variable the user set is never overridden; the ones that hold a
list (PYTHONPATH, NODE_OPTIONS, JAVA_TOOL_OPTIONS, ...) are extended, keeping the user's part;
``OTEL_RESOURCE_ATTRIBUTES`` gains ophion's keys after the user's, whose values win. Every
variable the injection touched is recorded with its value before, in a label on the new
container, so ``ophion uninstrument`` and ``--force`` start again from the exact original.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# The label that marks an instrumented container and carries what to undo.
LABEL = "io.ophion.instrumentation"
# The resource attribute verification looks for; unique per injection.
ID_ATTRIBUTE = "ophion.instrumentation.id"

_ATTRIBUTE_KEY = re.compile(r"^[A-Za-z0-9_.\-/]+$")


@dataclass(frozen=True)
class Settings:
    """What the user chose for the injection, the same for every language."""

    service_name: str
    endpoint: str
    instrumentation_id: str
    attributes: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class EnvChange:
    """One variable: its value before (None when unset) and after; ``kept`` when the user's
    value stays as it was and the injection's was not applied."""

    name: str
    before: str | None
    after: str | None
    kept: bool = False

    @property
    def changed(self) -> bool:
        return self.before != self.after


def env_dict(env: Sequence[str]) -> dict[str, str]:
    """Docker's ``KEY=VALUE`` list as a mapping (the last of a repeated key wins, as in Docker)."""
    result: dict[str, str] = {}
    for item in env:
        key, sep, value = item.partition("=")
        if sep:
            result[key] = value
    return result


def apply_env(env: Sequence[str], changes: Sequence[EnvChange]) -> list[str]:
    """``env`` with ``changes`` applied in place (order kept; new variables appended)."""
    wanted = {c.name: c.after for c in changes if c.changed}
    result: list[str] = []
    for item in env:
        key = item.partition("=")[0]
        if key in wanted:
            value = wanted.pop(key)
            if value is not None:
                result.append(f"{key}={value}")
        else:
            result.append(item)
    result.extend(f"{k}={v}" for k, v in wanted.items() if v is not None)
    return result


def parse_attributes(items: Sequence[str]) -> dict[str, str]:
    """``--attr KEY=VALUE`` options as a mapping; a malformed one is refused."""
    from ophiond.errors import ContainerError

    result: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not _ATTRIBUTE_KEY.match(key) or "," in value:
            raise ContainerError(
                f"--attr {item!r} is not KEY=VALUE",
                hint="for example --attr deployment.environment=staging (no commas in the value)",
            )
        result[key] = value
    return result


class EnvPlanner:
    """Builds the list of changes against the container's environment as it is."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = dict(env)
        self.changes: list[EnvChange] = []

    def default(self, name: str, value: str) -> None:
        """Set ``name`` unless the user already did."""
        before = self.env.get(name)
        if before is not None:
            self.changes.append(EnvChange(name, before, before, kept=before != value))
        else:
            self.changes.append(EnvChange(name, None, value))

    def extend(self, name: str, value: str, separator: str, first: bool = False) -> None:
        """Add ``value`` to a list variable, before or after what the user put there."""
        before = self.env.get(name)
        if not before:
            after = value
        elif first:
            after = f"{value}{separator}{before}"
        else:
            after = f"{before}{separator}{value}"
        self.changes.append(EnvChange(name, before, after))

    def replace(self, name: str, value: str) -> None:
        """Set ``name`` to a value built from the user's own (as PYTHONPATH is)."""
        self.changes.append(EnvChange(name, self.env.get(name), value))

    def resource_attributes(self, ours: Mapping[str, str]) -> None:
        """Append ophion's resource attributes to the user's; a key the user set keeps its value."""
        before = self.env.get("OTEL_RESOURCE_ATTRIBUTES")
        theirs = {
            part.partition("=")[0].strip() for part in (before or "").split(",") if "=" in part
        }
        added = ",".join(f"{k}={v}" for k, v in ours.items() if k not in theirs)
        after = f"{before},{added}" if before and added else (before or added)
        self.changes.append(EnvChange("OTEL_RESOURCE_ATTRIBUTES", before, after))


def common_env(planner: EnvPlanner, settings: Settings) -> None:
    """The OpenTelemetry SDK settings every language's agent reads."""
    planner.default("OTEL_SERVICE_NAME", settings.service_name)
    planner.default("OTEL_EXPORTER_OTLP_ENDPOINT", settings.endpoint)
    # http/protobuf everywhere: ophiond speaks it on 4318, and in Python gRPC would need a
    # native extension built for the container's own interpreter.
    planner.default("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    for signal in ("TRACES", "METRICS", "LOGS"):
        planner.default(f"OTEL_{signal}_EXPORTER", "otlp")
    planner.resource_attributes({**settings.attributes, ID_ATTRIBUTE: settings.instrumentation_id})


@dataclass(frozen=True)
class Record:
    """The label an instrumented container carries: enough to undo the injection exactly."""

    instrumentation_id: str
    language: str
    bundle: str | None
    volume: str | None
    target: str | None
    env_before: dict[str, str | None]
    service_name: str
    instrumented_at: str
    sidecar: str | None = None

    def to_label(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_labels(cls, labels: Mapping[str, str] | None) -> Record | None:
        """The record in a container's labels, None when it has none (or an unreadable one)."""
        text = (labels or {}).get(LABEL)
        if not text:
            return None
        try:
            data: dict[str, Any] = json.loads(text)
            return cls(**data)
        except (ValueError, TypeError):
            return None


def original_env(env: Sequence[str], record: Record | None) -> list[str]:
    """The container's environment without a previous injection (as it was before it)."""
    if record is None:
        return list(env)
    current = env_dict(env)
    changes = [EnvChange(k, current.get(k), v) for k, v in record.env_before.items()]
    return apply_env(env, changes)
