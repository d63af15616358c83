"""Recreating a container with a changed environment, faithfully, and putting it back on failure.

Docker cannot change a running container's environment, so a change is a swap (as docker
compose and watchtower do it): the old container is renamed and stopped, with restart policy
``no`` so neither a crash nor a reboot starts it again; a new one is made from the old one's
``docker inspect`` with the same configuration, host configuration, networks (with their
aliases), mounts (its anonymous volumes reused by name, or their data would be lost), labels,
restart policy, healthcheck and published ports, plus the change; then it is started. Until
:meth:`Swap.commit`, :meth:`Swap.rollback` restores the old container exactly: it is the same
container, given back its name and its restart policy and started again.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from ophiond.containers.engine import docker_errors, last_log_lines
from ophiond.errors import ContainerError, RolledBack

log = logging.getLogger(__name__)

# What the old container is called while it waits for the new one to prove itself.
PREVIOUS_SUFFIX = "-ophion-previous"


@dataclass
class ContainerSpec:
    """What ``POST /containers/create`` needs to make the container again.

    ``config`` is the create body for the first network; ``more_networks`` are connected
    before the start, because engines before API 1.44 accept one network at create."""

    name: str
    config: dict[str, Any]
    more_networks: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.config.get("Labels") or {})

    @property
    def mounts(self) -> list[dict[str, Any]]:
        return list(self.config["HostConfig"].get("Mounts") or [])


def spec_from_inspect(attrs: Mapping[str, Any], image_tag_id: str | None) -> ContainerSpec:
    """The create body that makes a container configured like the inspected one.

    ``image_tag_id`` is the id the container's image reference resolves to now: when it is the
    container's own image, the reference is kept as the user wrote it (``docker ps`` shows the
    same image); when the tag moved on (a pull since), the container's image id is used, so the
    application does not change version behind the user's back."""
    config = copy.deepcopy(dict(attrs["Config"]))
    image_ref = config.get("Image") or attrs["Image"]
    config["Image"] = image_ref if image_tag_id == attrs["Image"] else attrs["Image"]
    config.pop("MacAddress", None)  # the old container's, per network since API 1.44
    if not _user_hostname(attrs):
        config.pop("Hostname", None)  # Docker's default: the new container's own short id

    host = copy.deepcopy(dict(attrs["HostConfig"]))
    _keep_anonymous_volumes(attrs, host)
    config["HostConfig"] = host

    networks = dict(attrs.get("NetworkSettings", {}).get("Networks") or {})
    mode = str(host.get("NetworkMode") or "default")
    first = mode if mode in networks else next(iter(networks), None)
    # host, none and container:<id> have no endpoint settings to carry over.
    shares = mode in ("host", "none") or mode.startswith("container:")
    endpoints = {} if shares else {n: _endpoint(s, attrs["Id"]) for n, s in networks.items()}
    config["NetworkingConfig"] = {
        "EndpointsConfig": {first: endpoints[first]} if first in endpoints else {}
    }
    more = {name: endpoint for name, endpoint in endpoints.items() if name != first}
    return ContainerSpec(name=attrs["Name"].lstrip("/"), config=config, more_networks=more)


def _user_hostname(attrs: Mapping[str, Any]) -> bool:
    """Docker names a container's host after its short id unless the user chose a name."""
    hostname = str(attrs["Config"].get("Hostname") or "")
    return bool(hostname) and not attrs["Id"].startswith(hostname)


def _endpoint(settings: Mapping[str, Any], old_id: str) -> dict[str, Any]:
    """An endpoint's settings for the new container: aliases without the old container's id
    (Docker adds the short id as an alias by itself), static addresses, links, driver options."""
    aliases = [a for a in settings.get("Aliases") or [] if not old_id.startswith(a)]
    endpoint: dict[str, Any] = {"Aliases": aliases or None}
    for key in ("IPAMConfig", "Links", "DriverOpts", "NetworkID"):
        if settings.get(key):
            endpoint[key] = settings[key]
    return endpoint


def _keep_anonymous_volumes(attrs: Mapping[str, Any], host: dict[str, Any]) -> None:
    """Bind every volume the old container has by name, so an anonymous one is reused rather
    than replaced by a new empty one (``--mount`` volumes without a source likewise)."""
    named = {
        m["Destination"]: m
        for m in attrs.get("Mounts") or []
        if m.get("Type") == "volume" and m.get("Name")
    }
    covered: set[str] = set()
    for mount in host.get("Mounts") or []:
        target = mount.get("Target")
        covered.add(target)
        if mount.get("Type") == "volume" and not mount.get("Source") and target in named:
            mount["Source"] = named[target]["Name"]
    for bind in host.get("Binds") or []:
        parts = bind.split(":")
        if len(parts) >= 2:
            covered.add(parts[1])
    extra = [
        f"{m['Name']}:{dest}" + ("" if m.get("RW", True) else ":ro")
        for dest, m in named.items()
        if dest not in covered
    ]
    if extra:
        host["Binds"] = [*(host.get("Binds") or []), *extra]


def current_image_id(client: Any, reference: str) -> str | None:
    """The id an image reference resolves to now, None if the engine no longer has it."""
    import docker.errors

    try:
        return str(client.api.inspect_image(reference)["Id"])
    except docker.errors.APIError:
        return None


class Swap:
    """Old container out, new container in, reversible until :meth:`commit`."""

    def __init__(self, client: Any, old: Mapping[str, Any], spec: ContainerSpec) -> None:
        self.client = client
        self.old = old
        self.spec = spec
        self.old_id = str(old["Id"])
        self.old_name = spec.name
        self.old_restart = dict(old["HostConfig"].get("RestartPolicy") or {"Name": "no"})
        self.new_id: str | None = None
        # A stopped container (uninstrument allows one) is recreated stopped.
        self.was_running = bool(old.get("State", {}).get("Running"))
        self._renamed = False

    @property
    def previous_name(self) -> str:
        return self.old_name + PREVIOUS_SUFFIX

    def run(self, on_step: Callable[[str], None] = lambda _s: None) -> str:
        """Create the new container, stop the old one, start the new one; return the new id.

        Any failure puts the old container back before the error is raised."""
        api = self.client.api
        try:
            on_step(f"rename {self.old_name} to {self.previous_name}")
            with docker_errors(f"renaming {self.old_name}"):
                api.rename(self.old_id, self.previous_name)
            self._renamed = True
            on_step(f"create the new {self.old_name}")
            with docker_errors(f"creating the new {self.old_name}"):
                created = api.create_container_from_config(self.spec.config, name=self.old_name)
            self.new_id = str(created["Id"])
            for network, endpoint in self.spec.more_networks.items():
                with docker_errors(f"connecting the new {self.old_name} to {network}"):
                    api.connect_container_to_network(
                        self.new_id,
                        network,
                        aliases=endpoint.get("Aliases"),
                        links=endpoint.get("Links"),
                        ipv4_address=(endpoint.get("IPAMConfig") or {}).get("IPv4Address"),
                        ipv6_address=(endpoint.get("IPAMConfig") or {}).get("IPv6Address"),
                        driver_opt=endpoint.get("DriverOpts"),
                    )
            on_step(f"stop the old {self.old_name} (kept, restart policy no)")
            with docker_errors(f"stopping the old {self.old_name}"):
                api.update_container(self.old_id, restart_policy={"Name": "no"})
                if self.was_running:
                    api.stop(self.old_id, timeout=self._stop_timeout())
            if self.was_running:
                on_step(f"start the new {self.old_name}")
                with docker_errors(f"starting the new {self.old_name}"):
                    api.start(self.new_id)
        except BaseException:
            self.rollback()
            raise
        return self.new_id

    def _stop_timeout(self) -> int:
        configured = self.old["Config"].get("StopTimeout")
        return int(configured) if configured is not None else 10

    def new_state(self) -> dict[str, Any]:
        """The new container's State from the engine (running, exit code, health)."""
        assert self.new_id is not None
        with docker_errors(f"inspecting the new {self.old_name}"):
            state: dict[str, Any] = self.client.api.inspect_container(self.new_id)["State"]
        return state

    def new_logs(self, lines: int = 20) -> list[str]:
        return last_log_lines(self.client, self.new_id, lines) if self.new_id else []

    def give_up(self, reason: str, hint: str) -> RolledBack:
        """Roll back; the error to raise, with the new container's last log lines."""
        logs = self.new_logs()
        self.rollback()
        return RolledBack(f"{reason}; the original container is back", hint, logs)

    @contextmanager
    def trial(self) -> Iterator[None]:
        """While the new container proves itself: any failure (Ctrl-C too) rolls back."""
        try:
            yield
        except BaseException:
            if self.new_id is not None:
                self.rollback()
            raise

    def commit(self) -> None:
        """The new container proved itself: remove the old one (its volumes stay)."""
        import docker.errors

        try:
            self.client.api.remove_container(self.old_id, v=False, force=True)
        except docker.errors.APIError as e:
            raise ContainerError(
                f"the new {self.old_name} runs, but the old container could not be removed: "
                f"{e.explanation}",
                hint=f"remove it yourself: docker rm {self.previous_name}",
            ) from e

    def rollback(self) -> None:
        """Put the old container back exactly: its name, its restart policy, running."""
        import docker.errors

        api = self.client.api
        problems: list[str] = []
        if self.new_id is not None:
            try:
                api.remove_container(self.new_id, v=False, force=True)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as e:
                problems.append(f"removing the new container: {e.explanation}")
            self.new_id = None
        steps: list[tuple[str, Callable[[], Any]]] = []
        if self._renamed:
            steps.append(("renaming it back", lambda: api.rename(self.old_id, self.old_name)))
        steps.append(
            (
                "restoring its restart policy",
                lambda: api.update_container(self.old_id, restart_policy=self.old_restart),
            )
        )
        if self.was_running:
            steps.append(("starting it", lambda: api.start(self.old_id)))
        for doing, step in steps:
            try:
                step()
            except docker.errors.APIError as e:
                problems.append(f"{doing}: {e.explanation}")
        self._renamed = False
        if problems:
            raise ContainerError(
                f"putting the old {self.old_name} back failed: " + "; ".join(problems),
                hint=f"look at docker ps -a; the original container is {self.old_id[:12]}",
            )
