"""``ophion instrument`` and ``ophion uninstrument`` from start to end: look at the container,
plan the injection (everything a dry run prints), then swap, verify, and keep or roll back."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ophiond.containers import detect as detection
from ophiond.containers.agents import Agent, Bundle, Target, agent_for
from ophiond.containers.engine import find_container, processes, read_file, require_running
from ophiond.containers.inject import (
    LABEL,
    EnvChange,
    EnvPlanner,
    Record,
    Settings,
    apply_env,
    common_env,
    env_dict,
    original_env,
)
from ophiond.containers.recreate import (
    PREVIOUS_SUFFIX,
    ContainerSpec,
    Swap,
    current_image_id,
    spec_from_inspect,
)
from ophiond.containers.verify import Arrival, FirstSeen, wait_for_telemetry
from ophiond.errors import ContainerError, RolledBack

# A sidecar (Go) points back at its application with this label.
SIDECAR_LABEL = "io.ophion.sidecar-for"
COMPOSE_SERVICE = "com.docker.compose.service"
# How long a recreated container must keep running to count as started, when nothing is verified.
SETTLE_S = 3.0


@dataclass(frozen=True)
class Request:
    """What the user asked for on the command line."""

    container: str
    language: str | None = None
    service_name: str | None = None
    endpoint: str | None = None
    attributes: Mapping[str, str] = field(default_factory=dict)
    source: Path | None = None
    force: bool = False


@dataclass
class Plan:
    """Everything the injection will do; a dry run prints it and stops here."""

    container: Any
    detection: detection.Detection
    language: str
    agent: Agent
    bundle: Bundle
    settings: Settings
    endpoint_reason: str
    service_reason: str
    changes: list[EnvChange]
    spec: ContainerSpec | None  # None for a sidecar (Go): the application is not recreated
    sidecar: dict[str, Any] | None
    previous: Record | None

    @property
    def name(self) -> str:
        return str(self.container.name)

    @property
    def service_name(self) -> str:
        """The service name the telemetry will carry (the user's OTEL_SERVICE_NAME wins)."""
        for change in self.changes:
            if change.name == "OTEL_SERVICE_NAME" and change.after:
                return change.after
        return self.settings.service_name

    def steps(self) -> list[str]:
        if self.sidecar is not None:
            return [
                f"create the sidecar {self.name}-otel-go (privileged, sharing {self.name}'s "
                "process namespace) and start it",
                "wait for telemetry; on timeout remove the sidecar",
            ]
        assert self.spec is not None
        steps = [
            f"rename {self.name} to {self.name}{PREVIOUS_SUFFIX}, set its restart policy to no",
            f"create the new {self.name} from image {self.spec.config['Image']} with the same "
            "configuration, mounts, networks, labels, restart policy and healthcheck, plus the "
            f"environment above and the read-only volume {self.bundle.volume} at "
            f"{self.bundle.target}",
            f"stop the old {self.name}, start the new one",
            f"wait for telemetry carrying ophion.instrumentation.id={self.settings.instrumentation_id}",
            f"then remove the old container; on failure remove the new one and give {self.name} "
            "back its name, restart policy and running state",
        ]
        return steps


def plan(
    client: Any,
    request: Request,
    listen_http: str | None,
    cache_dir: Path,
    dry_run: bool,
    progress: Callable[[str], None],
) -> Plan:
    """Look at the container and prepare the injection; nothing in the container changes."""
    container = find_container(client, request.container)
    require_running(container)
    refuse_leftover(client, container.name)
    attrs = container.attrs
    previous = Record.from_labels(attrs["Config"].get("Labels"))
    sidecar = find_sidecar(client, container.id)
    if (previous or sidecar) and not request.force:
        what = previous.language if previous else "go"
        since = f" since {previous.instrumented_at}" if previous else ""
        raise ContainerError(
            f"{container.name} is already instrumented by ophion ({what}{since})",
            hint=f"pass --force to redo it, or take it out: ophion uninstrument {container.name}",
        )
    if sidecar is not None:
        raise ContainerError(
            f"{container.name} has an ophion sidecar ({sidecar.name}); --force cannot redo a "
            "sidecar in place",
            hint=f"take it out first: ophion uninstrument {container.name}",
        )
    if request.language is not None and request.language not in detection.LANGUAGES:
        raise ContainerError(
            f"unsupported language {request.language!r}",
            hint="one of: " + ", ".join(detection.LANGUAGES),
        )
    env = original_env(attrs["Config"].get("Env") or [], previous)
    seen = detection.detect(
        {**attrs, "Config": {**attrs["Config"], "Env": env}},
        processes(container),
        lambda path, limit: read_file(container, path, limit),
    )
    language = request.language or seen.language
    if language is None:
        raise ContainerError(
            f"could not tell which language {container.name} runs; seen: "
            + ("; ".join(seen.evidence) or "nothing"),
            hint=f"name it: ophion instrument {container.name} python (one of "
            + ", ".join(detection.LANGUAGES)
            + ")",
        )
    agent = agent_for(language)
    endpoint, endpoint_reason = choose_endpoint(client, attrs, request.endpoint, listen_http)
    service, service_reason = choose_service_name(attrs, request.service_name)
    settings = Settings(service, endpoint, uuid.uuid4().hex[:16], dict(request.attributes))
    target = Target(
        client=client,
        container=container,
        detection=seen,
        env=env_dict(env),
        arch=str(client.api.inspect_image(attrs["Image"]).get("Architecture") or "amd64"),
        cache_dir=cache_dir,
        source=request.source,
        progress=progress,
    )
    bundle = agent.prepare(target, dry_run)
    planner = EnvPlanner(env_dict(env))
    common_env(planner, settings)
    agent.environment(planner, bundle, settings)
    record = Record(
        instrumentation_id=settings.instrumentation_id,
        language=language,
        bundle=bundle.key,
        volume=bundle.volume if bundle.path else None,
        target=bundle.target if bundle.path else None,
        env_before={c.name: c.before for c in planner.changes if c.changed},
        service_name=service,
        instrumented_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )
    spec: ContainerSpec | None = None
    sidecar_body: dict[str, Any] | None = None
    if getattr(agent, "sidecar", False):
        sidecar_env = [f"{c.name}={c.after}" for c in planner.changes if c.after is not None]
        sidecar_body = agent.sidecar_config(  # type: ignore[attr-defined]
            target, bundle, sidecar_env, f"{container.name}-otel-go"
        )
        sidecar_body.setdefault("Labels", {})
        sidecar_body["Labels"].update({SIDECAR_LABEL: container.id, LABEL: record.to_label()})
    else:
        spec = spec_from_inspect(attrs, current_image_id(client, attrs["Config"]["Image"]))
        spec.config["Env"] = apply_env(env, planner.changes)
        spec.config["Labels"] = {**spec.labels, LABEL: record.to_label()}
        mounts = [m for m in spec.mounts if not previous or m.get("Target") != previous.target]
        from ophiond.containers.volume import mount

        spec.config["HostConfig"]["Mounts"] = [*mounts, mount(bundle)]
    return Plan(
        container=container,
        detection=seen,
        language=language,
        agent=agent,
        bundle=bundle,
        settings=settings,
        endpoint_reason=endpoint_reason,
        service_reason=service_reason,
        changes=planner.changes,
        spec=spec,
        sidecar=sidecar_body,
        previous=previous,
    )


def refuse_leftover(client: Any, name: str) -> None:
    """A ``<name>-ophion-previous`` container means an earlier run was cut short: a person must
    decide which of the two is the one to keep before anything else is swapped."""
    import docker.errors

    previous = name + PREVIOUS_SUFFIX
    try:
        client.api.inspect_container(previous)
    except docker.errors.NotFound:
        return
    raise ContainerError(
        f"{previous} exists: an earlier instrument or uninstrument of {name} was interrupted",
        hint=f"if {name} works, remove the old one (docker rm {previous}); otherwise put it back: "
        f"docker rm -f {name} && docker rename {previous} {name} && docker start {name}",
    )


def find_sidecar(client: Any, container_id: str) -> Any | None:
    """The Go sidecar ophion made for this container, if there is one."""
    found = client.containers.list(all=True, filters={"label": f"{SIDECAR_LABEL}={container_id}"})
    return found[0] if found else None


def choose_service_name(attrs: Mapping[str, Any], given: str | None) -> tuple[str, str]:
    """--service-name, else the compose service, else the container's name; and why."""
    if given:
        return given, "given with --service-name"
    compose = (attrs["Config"].get("Labels") or {}).get(COMPOSE_SERVICE)
    if compose:
        return compose, f"the compose service ({COMPOSE_SERVICE})"
    return attrs["Name"].lstrip("/"), "the container's name"


def choose_endpoint(
    client: Any, attrs: Mapping[str, Any], given: str | None, listen_http: str | None
) -> tuple[str, str]:
    """Where the container sends OTLP/HTTP: ophiond's address as the container reaches it."""
    if given:
        return given.rstrip("/"), "given with --endpoint"
    if listen_http is None:
        raise ContainerError(
            "ophiond does not listen for OTLP/HTTP (http_listen is off)",
            hint="start it with --http-listen, or pass --endpoint URL",
        )
    host, _, port = listen_http.rpartition(":")
    host = host.strip("[]")
    mode = str(attrs["HostConfig"].get("NetworkMode") or "default")
    if mode.startswith("container:"):
        other = client.api.inspect_container(mode.partition(":")[2])
        return choose_endpoint(client, other, None, listen_http)
    if mode == "none":
        raise ContainerError(
            f"{attrs['Name'].lstrip('/')} has no network (--network none): it cannot send "
            "telemetry anywhere"
        )
    loopback = host in ("127.0.0.1", "::1", "localhost")
    if mode == "host":
        address = "[::1]" if host == "::1" else "127.0.0.1"
        return (
            f"http://{address}:{port}",
            f"the container uses host networking, so ophiond's {listen_http} is reachable as is",
        )
    networks = attrs.get("NetworkSettings", {}).get("Networks") or {}
    gateways = [(n, s.get("Gateway")) for n, s in networks.items() if s.get("Gateway")]
    if not gateways:
        raise ContainerError(
            f"cannot tell the host's address on {attrs['Name'].lstrip('/')}'s network ({mode})",
            hint="pass --endpoint http://HOST:PORT, an address where the container reaches ophiond",
        )
    network, gateway = gateways[0]
    if loopback:
        raise ContainerError(
            f"ophiond listens for OTLP/HTTP on {listen_http} only, which the container on network "
            f"{network!r} cannot reach (the host is {gateway} there)",
            hint=f"run ophiond with --http-listen {gateway}:{port} (or 0.0.0.0:{port}), or pass "
            "--endpoint",
        )
    if host not in ("0.0.0.0", "::", gateway):
        raise ContainerError(
            f"ophiond listens for OTLP/HTTP on {listen_http}, not on {gateway}, the host's "
            f"address on network {network!r}",
            hint=f"run ophiond with --http-listen {gateway}:{port} or 0.0.0.0:{port}, or pass "
            "--endpoint",
        )
    return (
        f"http://{gateway}:{port}",
        f"the container is on network {network!r}, where the host is {gateway}",
    )


@dataclass(frozen=True)
class Outcome:
    """How an instrumentation ended: the first telemetry, None when not verified."""

    arrival: Arrival | None


def apply(
    client: Any,
    the_plan: Plan,
    first_seen: FirstSeen | None,
    timeout: float,
    progress: Callable[[str], None],
) -> Outcome:
    """Swap (or start the sidecar), verify with ``first_seen`` (the daemon's answer to "has
    telemetry with this id arrived?") unless it is None, then keep or roll back."""
    from ophiond.containers.volume import ensure_volume

    if the_plan.bundle.path is not None:
        ensure_volume(client, the_plan.bundle, the_plan.container.attrs["Image"], progress)
    since = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10)).strftime("%Y-%m-%d %H:%M:%S")
    if the_plan.sidecar is not None:
        return _apply_sidecar(client, the_plan, first_seen, timeout, since, progress)
    assert the_plan.spec is not None
    swap = Swap(client, the_plan.container.attrs, the_plan.spec)
    swap.run(progress)
    with swap.trial():
        if first_seen is None:
            _settle(swap)
            swap.commit()
            return Outcome(None)
        arrival = _wait(first_seen, the_plan, since, timeout, progress, swap.new_state)
        if arrival is None:
            state = swap.new_state()
            if not state.get("Running"):
                raise _stopped(swap, state)
            raise swap.give_up(
                f"no telemetry from {the_plan.name} arrived within {timeout:.0f}s",
                "telemetry comes when the app works (requests, logs) or when its metrics are "
                "exported (every 60s by default): send it traffic, or raise --timeout",
            )
    swap.commit()
    return Outcome(arrival)


def _wait(
    first_seen: FirstSeen,
    the_plan: Plan,
    since: str,
    timeout: float,
    progress: Callable[[str], None],
    state: Callable[[], Mapping[str, Any]],
) -> Arrival | None:
    """Telemetry from the injection, None on timeout or when the container it runs in (its
    ``state``) stopped."""
    progress(f"waiting up to {timeout:.0f}s for telemetry from {the_plan.name}")
    return wait_for_telemetry(
        first_seen,
        the_plan.settings.instrumentation_id,
        since,
        timeout,
        lambda: bool(state().get("Running")),
    )


def _stopped(swap: Swap, state: Mapping[str, Any]) -> RolledBack:
    return swap.give_up(
        f"the new {swap.old_name} stopped (exit code {state.get('ExitCode')})",
        "its last log lines are below; --dry-run shows the injected environment",
    )


def _settle(swap: Swap) -> None:
    """Without verification, at least check the new container keeps running for a moment."""
    deadline = time.monotonic() + SETTLE_S
    while time.monotonic() < deadline:
        state = swap.new_state()
        if not state.get("Running"):
            raise _stopped(swap, state)
        time.sleep(0.5)


def _apply_sidecar(
    client: Any,
    the_plan: Plan,
    first_seen: FirstSeen | None,
    timeout: float,
    since: str,
    progress: Callable[[str], None],
) -> Outcome:
    from ophiond.containers.engine import docker_errors, last_log_lines

    assert the_plan.sidecar is not None
    name = f"{the_plan.name}-otel-go"
    progress(f"create and start the sidecar {name}")
    with docker_errors(f"creating the sidecar {name}"):
        sidecar_id = client.api.create_container_from_config(the_plan.sidecar, name=name)["Id"]
    try:
        with docker_errors(f"starting the sidecar {name}"):
            client.api.start(sidecar_id)
        if first_seen is None:
            return Outcome(None)
        arrival = _wait(
            first_seen,
            the_plan,
            since,
            timeout,
            progress,
            lambda: client.api.inspect_container(sidecar_id)["State"],
        )
        if arrival is None:
            raise RolledBack(
                f"no telemetry from {the_plan.name} arrived within {timeout:.0f}s; the sidecar "
                "is removed",
                "the sidecar's last log lines are below",
                last_log_lines(client, sidecar_id),
            )
    except BaseException:
        client.api.remove_container(sidecar_id, force=True)
        raise
    return Outcome(arrival)


@dataclass
class Removal:
    """What ``ophion uninstrument`` will undo."""

    container: Any
    record: Record
    spec: ContainerSpec | None
    sidecar: Any | None


def plan_removal(client: Any, name: str) -> Removal:
    """Find what ophion injected into the container; refuse when it injected nothing."""
    container = find_container(client, name)
    refuse_leftover(client, container.name)
    sidecar = find_sidecar(client, container.id)
    if sidecar is not None:
        record = Record.from_labels(sidecar.attrs["Config"].get("Labels"))
        if record is None:
            raise ContainerError(
                f"the sidecar {sidecar.name} has no readable {LABEL} label",
                hint=f"remove it yourself: docker rm -f {sidecar.name}",
            )
        return Removal(container, record, None, sidecar)
    attrs = container.attrs
    record = Record.from_labels(attrs["Config"].get("Labels"))
    if record is None:
        raise ContainerError(
            f"{container.name} is not instrumented by ophion (it has no {LABEL} label)",
        )
    spec = spec_from_inspect(attrs, current_image_id(client, attrs["Config"]["Image"]))
    spec.config["Env"] = original_env(attrs["Config"].get("Env") or [], record)
    spec.config["Labels"] = {k: v for k, v in spec.labels.items() if k != LABEL}
    spec.config["HostConfig"]["Mounts"] = [
        m for m in spec.mounts if m.get("Target") != record.target
    ] or None
    return Removal(container, record, spec, None)


def remove(client: Any, removal: Removal, progress: Callable[[str], None]) -> None:
    """Recreate the container as it was before the injection (or remove the Go sidecar)."""
    if removal.sidecar is not None:
        progress(f"remove the sidecar {removal.sidecar.name}")
        removal.sidecar.remove(force=True)
        return
    assert removal.spec is not None
    swap = Swap(client, removal.container.attrs, removal.spec)
    swap.run(progress)
    if swap.was_running:
        with swap.trial():
            _settle(swap)
    swap.commit()
