"""Sections: the tables of config.toml (``[alerting]``), each read into a dataclass.

A table is as strict as the flat settings: an unknown key or a value of the wrong type is a
:class:`ConfigError` naming ``table.key``; ``OPHION_<TABLE>__<KEY>`` sets one key of it.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import typing
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeGuard, TypeVar, cast

from ophiond.config.values import coerce_scalar
from ophiond.errors import ConfigError

V_co = TypeVar("V_co", covariant=True)
T = TypeVar("T")


class Section(Protocol[V_co]):
    """A table of config.toml: a dataclass with a docstring under every field, like
    :class:`~ophiond.config.Settings`, and a ``validate`` that parses it into what its engine
    uses.

    Fields are ``str``, ``int``, ``float`` or ``bool`` (durations and sizes are strings that
    ``validate`` parses, naming the key as ``table.key``), another such dataclass (a sub-table,
    ``[table.sub]``) or a list of them (an array of tables, ``[[table.items]]``). Every field of
    a section and of its sub-tables has a default, since the table may be absent; a dataclass
    in a list may have required fields.
    """

    def validate(self) -> V_co: ...


def config_sections() -> dict[str, type[Section[Any]]]:
    """The tables config.toml may hold, by name: an engine with settings adds its line here.

    Its section class lives in a light module of its own (dataclasses and the parsers of
    ``ophiond.config``), imported in this function so that it may import from ``ophiond.config``
    and so that importing ``ophiond.config`` stays cheap. No engine has settings yet.
    """
    return {}


def default_sections() -> dict[type[Any], Any]:
    """Every section with its defaults, by class: the tables of a config.toml that has none."""
    return {cls: cls() for cls in config_sections().values()}


@dataclass(frozen=True)
class _TableField:
    name: str
    kind: str  # str, int, float, bool; "table" (a sub-table) or "tables" (an array of tables)
    table: type[Any] | None  # the dataclass of a sub-table or of each item of an array
    required: bool


_SCALARS = {str: "str", int: "int", float: "float", bool: "bool"}
_NAME_RE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")  # no "__": it separates env parts


_TABLE_FIELDS: dict[type[Any], dict[str, _TableField]] = {}


def _is_table_class(hint: object) -> TypeGuard[type[Any]]:
    return isinstance(hint, type) and dataclasses.is_dataclass(hint)


def _table_fields(cls: type[Any]) -> dict[str, _TableField]:
    """The keys of a table read into the dataclass ``cls``; a TypeError for a class that
    cannot be one (a mistake in ophiond, found by the first test that loads it)."""
    if cls in _TABLE_FIELDS:
        return _TABLE_FIELDS[cls]
    if not _is_table_class(cls):
        raise TypeError(f"{cls.__name__} is not a dataclass, so it cannot be a config table")
    hints = typing.get_type_hints(cls)
    fields: dict[str, _TableField] = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if not _NAME_RE.match(f.name):
            raise TypeError(f"{cls.__name__}.{f.name}: a config key is lower_case, without '__'")
        hint = hints[f.name]
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        args = typing.get_args(hint)
        if hint in _SCALARS:
            fields[f.name] = _TableField(f.name, _SCALARS[hint], None, required)
        elif _is_table_class(hint):
            _table_fields(hint)
            fields[f.name] = _TableField(f.name, "table", hint, required)
        elif typing.get_origin(hint) is list and len(args) == 1 and _is_table_class(args[0]):
            _table_fields(args[0])
            fields[f.name] = _TableField(f.name, "tables", args[0], required)
        else:
            raise TypeError(
                f"{cls.__name__}.{f.name}: a config key is str, int, float, bool, a dataclass "
                f"or a list of dataclasses, not {hint}"
            )
    _TABLE_FIELDS[cls] = fields
    return fields


def read_table(cls: type[T], data: Mapping[str, Any], name: str, where: str) -> T:
    """The dataclass ``cls`` from a TOML table, as strict as the flat settings: an unknown key
    or a value of the wrong type is a :class:`ConfigError` naming ``name.key`` and ``where``.

    For the sections of config.toml, and for files of their own (rules, playbooks) that are
    one table at the top, such as a dataclass with a ``rules: list[Rule]`` field.
    """
    fields = _table_fields(cls)
    values: dict[str, Any] = {}
    for key, value in data.items():
        spec = fields.get(key)
        if spec is None:
            raise _unknown_table_key(key, name, fields, where)
        values[key] = _read_value(spec, value, f"{name}.{key}", where)
    missing = [f.name for f in fields.values() if f.required and f.name not in values]
    if missing:
        raise ConfigError(f"{where}: {name} needs {', '.join(missing)}")
    return cls(**values)


def _read_value(spec: _TableField, value: Any, dotted: str, where: str) -> Any:
    if spec.kind == "table":
        assert spec.table is not None
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: {dotted} must be a table ([{dotted}]), not {value!r}")
        return read_table(spec.table, value, dotted, where)
    if spec.kind == "tables":
        assert spec.table is not None
        if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
            raise ConfigError(
                f"{where}: {dotted} must be an array of tables ([[{dotted}]]), not {value!r}"
            )
        return [
            read_table(spec.table, item, f"{dotted}[{i}]", where) for i, item in enumerate(value)
        ]
    return coerce_scalar(spec.kind, dotted, value, where)


def set_from_env(table: T, name: str, path: list[str], text: str, where: str) -> T:
    """``table`` with the key at ``path`` (below sub-tables) set from an environment variable."""
    key, rest = path[0], path[1:]
    fields = _table_fields(type(table))
    spec = fields.get(key)
    dotted = f"{name}.{key}"
    if spec is None:
        raise _unknown_table_key(key, name, fields, where)
    if spec.kind == "table" and rest:
        value = set_from_env(getattr(table, key), dotted, rest, text, where)
    elif spec.kind == "table":
        raise ConfigError(
            f"{where}: {dotted} is a table", hint="set one of its keys, OPHION_<TABLE>__<KEY>"
        )
    elif spec.kind == "tables":
        raise ConfigError(f"{where}: {dotted} is an array of tables", hint="set it in config.toml")
    elif rest:
        raise ConfigError(f"{where}: {dotted} is not a table, it has no {rest[0]!r}")
    else:
        value = coerce_scalar(spec.kind, dotted, text, where)
    return cast(T, dataclasses.replace(cast(Any, table), **{key: value}))


def _unknown_table_key(
    key: str, name: str, fields: Mapping[str, _TableField], where: str
) -> ConfigError:
    close = difflib.get_close_matches(key, list(fields), n=1)
    hint = (
        f"did you mean '{name}.{close[0]}'?"
        if close
        else f"[{name}] has {', '.join(fields) or 'no keys'}"
    )
    return ConfigError(f"{where}: unknown setting '{name}.{key}'", hint=hint)


def unknown_table(key: str, known: Mapping[str, type[Any]], where: str) -> ConfigError:
    """The error for a table ``[key]`` that is none of the ``known`` sections."""
    close = difflib.get_close_matches(key, list(known), n=1)
    tables = ", ".join(f"[{name}]" for name in known) or "none, this ophiond reads no tables"
    hint = (f"did you mean [{close[0]}]? " if close else "") + f"known tables: {tables}"
    return ConfigError(f"{where}: unknown table [{key}]", hint=hint)


def check_sections(sections: Mapping[str, type[Any]], setting_names: Collection[str]) -> None:
    """A TypeError for a section list that is a mistake in ophiond: a bad name (or the name of
    one of the flat ``setting_names``), a class without ``validate`` or one that cannot be a table."""
    for name, cls in sections.items():
        if not _NAME_RE.match(name) or name in setting_names:
            raise TypeError(f"config section name {name!r}: lower_case, not a flat setting")
        if not callable(getattr(cls, "validate", None)):
            raise TypeError(f"config section {cls.__name__} has no validate()")
        _table_fields(cls)
    if len(set(sections.values())) < len(sections):
        raise TypeError("a config section class is listed under two names")
