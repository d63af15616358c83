"""The API's contract: one definition of each endpoint, checked the same on both sides, and the
daemon's errors raised by the client as the same classes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO, RunningDaemon

from ophiond.api import contract
from ophiond.api.contract import TraceQuery
from ophiond.errors import InvalidParameter, NotFound, QueryError, SqlRefused


def test_the_server_checks_what_the_client_would_and_names_the_parameter(
    daemon: RunningDaemon,
) -> None:
    # Past the client's own check (a script, another client): the daemon refuses the same way.
    with pytest.raises(InvalidParameter) as refused:
        daemon.api._call(contract.TRACES, {"status": "maybe", "since": "1h"})
    assert refused.value.param == "status"
    assert refused.value.message == "status must be ok or error, not 'maybe'"
    with pytest.raises(InvalidParameter) as client_side:
        TraceQuery(status="maybe").check()
    assert (client_side.value.message, client_side.value.hint) == (
        refused.value.message,
        refused.value.hint,
    )


def test_the_daemons_errors_come_back_as_their_own_classes_with_their_hints(
    daemon: RunningDaemon,
) -> None:
    with pytest.raises(NotFound) as missing:
        daemon.api.trace("f" * 32)
    assert missing.value.hint and "ophion traces" in missing.value.hint
    with pytest.raises(SqlRefused):
        daemon.api.sql(contract.SqlRequest("SELECT * FROM checkpoint()"))
    with pytest.raises(QueryError):
        daemon.api.sql(contract.SqlRequest("SELECT no_such_column FROM spans"))


def test_every_endpoint_is_served_and_has_a_client_method() -> None:
    from ophiond.api.client import ApiClient

    endpoints = {
        name: value
        for name, value in vars(contract).items()
        if isinstance(value, contract.Endpoint)
    }
    # The daemon's routes, as it builds them, cover exactly the contract's endpoints.
    code = (
        "import json, types\n"
        "from ophiond.daemon import Daemon\n"
        "d = Daemon.__new__(Daemon)\n"
        "for name in ('tokens', 'partitions', 'feed', 'audit'): setattr(d, name, None)\n"
        "d.settings = types.SimpleNamespace(sql_timeout=30)\n"
        "print(json.dumps(sorted([r.endpoint.method, r.endpoint.path] for r in d._routes())))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
    ).stdout
    served = {tuple(pair) for pair in json.loads(out)}
    assert served == {(e.method, e.path) for e in endpoints.values()}
    # One client method per endpoint (named after it, or saying what it does).
    methods = {name for name in vars(ApiClient) if not name.startswith("_")}
    assert {
        "status",
        "services",
        "traces",
        "trace",
        "logs",
        "follow_logs",
        "metrics",
        "metric",
        "service_map",
        "sql",
        "first_seen",
        "tokens",
        "create_token",
        "revoke_token",
        "audit",
    } <= methods
