"""Bearer tokens of the TCP API: who may call it, and with which role.

Only SHA-256 hashes are stored, with each token's name, role and creation time, in
``tokens.json`` (mode 0600) in the state directory; a token is shown once, when it is created.
Tokens carry 256 random bits, so a plain hash is enough: a slow password hash protects guessable
secrets, and these are not guessable.

On first start (no ``tokens.json`` yet) the daemon makes the admin token, named ``admin``, and
writes it to ``admin.token`` (mode 0600). An existing ``admin.token`` is never overwritten: its
token is registered instead, which also lets an installer provision a known admin token.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import threading
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ophiond.api import contract
from ophiond.api.contract import Role
from ophiond.api.server import ApiRequest, Route
from ophiond.errors import OphionError, TokenError

if TYPE_CHECKING:
    from ophiond.model import Recorder

log = logging.getLogger(__name__)

ADMIN_TOKEN_NAME = "admin"
TOKEN_PREFIX = "oph_"
# A provisioned admin token shorter than this is refused: it could be guessed.
_MIN_TOKEN_LENGTH = 16
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
ROLE_NAMES = tuple(role.name.lower() for role in Role)


@dataclass(frozen=True)
class TokenRecord:
    """What is kept of a token: never the token itself."""

    name: str
    role: Role
    sha256: str
    created_at: str

    def public(self) -> dict[str, str]:
        """The record as the API shows it (the hash stays in the daemon)."""
        return {"name": self.name, "role": self.role.name.lower(), "created_at": self.created_at}

    def stored(self) -> dict[str, str]:
        """The record as ``tokens.json`` keeps it."""
        return {**self.public(), "sha256": self.sha256}


def new_token() -> str:
    """A fresh token: ``oph_`` and 32 random bytes, URL-safe."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def parse_role(value: Any) -> Role:
    """``read``, ``operate`` or ``admin`` (any case) as a :class:`Role`."""
    if isinstance(value, str) and value.strip().lower() in ROLE_NAMES:
        return Role[value.strip().upper()]
    raise TokenError(f"unknown role {value!r}", hint=f"use one of: {', '.join(ROLE_NAMES)}")


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _write_private(path: Path, text: str, exclusive: bool = False) -> None:
    """Write ``text`` to ``path`` with mode 0600 (atomically, unless ``exclusive``: then the
    file must not exist yet)."""
    if exclusive:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        return
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)  # a leftover .tmp may have had another mode
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class TokenStore:
    """The tokens of one daemon, loaded from ``tokens_file`` and written back on every change."""

    def __init__(self, tokens_file: Path, admin_token_file: Path) -> None:
        self.path = tokens_file
        self.admin_token_file = admin_token_file
        self._lock = threading.Lock()
        self._tokens: dict[str, TokenRecord] = {}
        self._load()

    def _load(self) -> None:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return
        except OSError as e:
            raise TokenError(f"cannot read {self.path}: {e.strerror or e}") from e
        try:
            data = json.loads(text)
            records = [
                TokenRecord(t["name"], parse_role(t["role"]), t["sha256"], t["created_at"])
                for t in data["tokens"]
            ]
        except (ValueError, KeyError, TypeError, OphionError) as e:
            raise TokenError(
                f"{self.path} is damaged ({e})",
                hint="restore it, or remove it and restart: every token but the one in "
                f"{self.admin_token_file.name} is then forgotten",
            ) from e
        self._tokens = {record.name: record for record in records}

    def _save(self) -> None:
        document = {"tokens": [record.stored() for record in self._tokens.values()]}
        _write_private(self.path, json.dumps(document, indent=2) + "\n")

    def ensure_admin_token(self) -> None:
        """On first start, register the admin token, writing ``admin.token`` unless it exists."""
        with self._lock:
            if self.path.exists():
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                token = self.admin_token_file.read_text().strip()
            except FileNotFoundError:
                token = new_token()
                # The file first: if we die before tokens.json is written, the next start
                # registers this same token instead of making another.
                _write_private(self.admin_token_file, token + "\n", exclusive=True)
                log.info("wrote the admin token to %s", self.admin_token_file)
            except OSError as e:
                raise TokenError(f"cannot read {self.admin_token_file}: {e.strerror or e}") from e
            if len(token) < _MIN_TOKEN_LENGTH or any(c.isspace() for c in token):
                raise TokenError(
                    f"{self.admin_token_file} does not hold a usable token "
                    f"(at least {_MIN_TOKEN_LENGTH} characters, no spaces)",
                    hint="remove it; the daemon then writes a new one",
                )
            self._tokens[ADMIN_TOKEN_NAME] = TokenRecord(
                ADMIN_TOKEN_NAME, Role.ADMIN, _digest(token), _now()
            )
            self._save()

    def record_of(self, token: str) -> TokenRecord | None:
        """The record of ``token`` (its name and role), or ``None`` when it is unknown or
        revoked."""
        digest = _digest(token).encode()
        with self._lock:
            records = list(self._tokens.values())
        found = None
        for record in records:  # every record is compared: the time does not tell which matched
            if hmac.compare_digest(digest, record.sha256.encode()):
                found = record
        return found

    def create(self, name: str, role: Role) -> tuple[TokenRecord, str]:
        """A new token named ``name``; the token itself is returned here and never again."""
        if not _NAME_RE.match(name):
            raise TokenError(
                f"{name!r} is not a usable token name",
                hint="use up to 64 letters, digits, '.', '_' or '-', starting with a letter or digit",
            )
        token = new_token()
        with self._lock:
            if name in self._tokens:
                raise TokenError(
                    f"a token named {name!r} exists already",
                    hint=f"choose another name, or revoke it first: ophion token revoke {name}",
                    http_status=HTTPStatus.CONFLICT,
                )
            record = TokenRecord(name, role, _digest(token), _now())
            self._tokens[name] = record
            try:
                self._save()
            except OSError as e:
                del self._tokens[name]
                raise TokenError(f"cannot write {self.path}: {e.strerror or e}") from e
        log.info("API token %r created with the %s role", name, role.name.lower())
        return record, token

    def list(self) -> list[TokenRecord]:
        """Every token's record, oldest first."""
        with self._lock:
            return sorted(self._tokens.values(), key=lambda r: (r.created_at, r.name))

    def revoke(self, name: str) -> None:
        """Forget the token ``name``. The last admin token cannot go."""
        with self._lock:
            record = self._tokens.get(name)
            if record is None:
                raise TokenError(
                    f"no token named {name!r}",
                    hint="ophion token list shows the tokens",
                    http_status=HTTPStatus.NOT_FOUND,
                )
            admins = [r for r in self._tokens.values() if r.role is Role.ADMIN]
            if record.role is Role.ADMIN and len(admins) == 1:
                raise TokenError(
                    f"cannot revoke {name!r}: it is the only admin token",
                    hint="create another admin token first: ophion token create NAME --role admin",
                    http_status=HTTPStatus.CONFLICT,
                )
            del self._tokens[name]
            try:
                self._save()
            except OSError as e:
                self._tokens[name] = record
                raise TokenError(f"cannot write {self.path}: {e.strerror or e}") from e
            if name == ADMIN_TOKEN_NAME:
                # The file would hold a dead token that the CLI keeps sending.
                self.admin_token_file.unlink(missing_ok=True)
        log.info("API token %r revoked", name)


def token_routes(store: TokenStore, audit: Recorder) -> list[Route]:
    """The admin endpoints ``/api/v1/tokens``: create, list, revoke (recorded in ``audit``)."""

    def create(request: ApiRequest) -> dict[str, Any]:
        name = request.body.get("name")
        if not isinstance(name, str) or not name:
            raise TokenError('give the token a name: {"name": ..., "role": ...}')
        record, token = store.create(name, parse_role(request.body.get("role")))
        audit.record(request.caller, "token.create", name, role=record.role.name.lower())
        return {**record.public(), "token": token}

    def list_tokens(_request: ApiRequest) -> dict[str, Any]:
        return {"tokens": [record.public() for record in store.list()]}

    def revoke(request: ApiRequest) -> dict[str, Any]:
        name = request.path_params["name"]
        store.revoke(name)
        audit.record(request.caller, "token.revoke", name)
        return {"revoked": name}

    return [
        Route(contract.TOKEN_CREATE, create),
        Route(contract.TOKENS, list_tokens),
        Route(contract.TOKEN_REVOKE, revoke),
    ]
