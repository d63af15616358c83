"""OTLP values (AnyValue, KeyValue lists) -> JSON-ready Python values and their JSON text.

The decoder's hot path reads every attribute through here, so the common case is shaped for
speed (see decode.py's notes): one dict per attribute list with the fewest reads
(:func:`attribute_values`), encoded by the json module's C encoder built once
(:data:`encode_chunks`). Values past the ingest limits take :class:`ValueBounds`, the slow path,
which only records that may be past a limit ever reach.
"""

from __future__ import annotations

import base64
import json
import json.encoder
import math
from collections.abc import Callable, Iterable
from typing import Any

from ophiond.model import IngestLimits
from ophiond.otlp.limits import MAX_NESTING, NESTED_MARKER, cut_bytes, cut_text

# A log body's ``body_type``, by the AnyValue field that is set.
BODY_TYPES = {
    "string_value": "string",
    "int_value": "int",
    "double_value": "double",
    "bool_value": "bool",
    "array_value": "array",
    "kvlist_value": "kvlist",
    "bytes_value": "bytes",
}


class TooDeep(Exception):
    """A value nests arrays or kvlists past MAX_NESTING: the record takes the slow path."""


def any_value(value: Any, depth: int = 0) -> Any:
    """An OTLP AnyValue as a JSON-ready Python value (bytes become base64 text).

    ``depth`` is the number of arrays and kvlists around ``value``; one more past
    :data:`MAX_NESTING` raises :class:`TooDeep`.
    """
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "int_value":
        return value.int_value
    if kind == "double_value":
        return json_double(value.double_value)
    if kind == "bool_value":
        return value.bool_value
    if kind == "array_value":
        if depth >= MAX_NESTING:
            raise TooDeep
        return [any_value(v, depth + 1) for v in value.array_value.values]
    if kind == "kvlist_value":
        if depth >= MAX_NESTING:
            raise TooDeep
        return {kv.key: any_value(kv.value, depth + 1) for kv in value.kvlist_value.values}
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    return None


def json_double(x: float) -> float | str:
    # JSON has no NaN or Infinity; keep them as the strings DuckDB's JSON functions understand.
    return x if math.isfinite(x) else str(x)


_json_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)

# ``_json_encoder.encode`` builds a new C encoder on every call, which costs more than encoding
# a record's handful of attributes; this is the same C encoder with the same settings, built
# once. ``c_make_encoder`` is not public API, hence the fallback; circular-reference checks
# are off (``None``) because values decoded from protobuf are trees. tests/test_decode_fast.py
# holds the stored text against ``json.dumps`` with these settings, for every kind of value.
_make_c_encoder = getattr(json.encoder, "c_make_encoder", None)
encode_chunks: Callable[[Any, int], Iterable[str]] = (
    _make_c_encoder(
        None,
        _json_encoder.default,
        json.encoder.encode_basestring,  # what JSONEncoder picks when ensure_ascii is off
        None,
        _json_encoder.key_separator,
        _json_encoder.item_separator,
        _json_encoder.sort_keys,
        _json_encoder.skipkeys,
        _json_encoder.allow_nan,
    )
    if _make_c_encoder is not None
    else lambda value, _level: (_json_encoder.encode(value),)
)


def to_json(value: Any) -> str:
    """JSON text of a JSON-ready value: the same text as ``_json_encoder.encode(value)``."""
    return "".join(encode_chunks(value, 0))


def attribute_values(key_values: Iterable[Any]) -> dict[str, Any]:
    """A KeyValue list as a dict of JSON-ready values (a repeated key: last value, first place).

    Same result as ``any_value`` per value, but most values are non-empty strings or integers:
    a oneof member that is not the one set reads as '' or 0, so a truthy ``string_value`` or
    ``int_value`` is the value itself, and only the rest ('' and 0 included) asks which kind
    it is. This saves a WhichOneof call and a function call on nearly every attribute.
    """
    return {
        kv.key: ((value := kv.value).string_value or value.int_value or any_value(value))
        for kv in key_values
    }


def attributes_json(key_values: Iterable[Any], fits: int) -> str | None:
    """A KeyValue list as JSON object text; ``None`` when a value may be past a limit (it nests
    too deep, or the text is longer than ``fits``), for the caller to use :class:`ValueBounds`."""
    try:
        text = "".join(encode_chunks(attribute_values(key_values), 0))
    except TooDeep:
        return None
    return text if len(text) <= fits else None


def shown(key: str) -> str:
    """An attribute key or a name as a message shows it (either can be as long as a value)."""
    return repr(key) if len(key) <= 60 else repr(key[:60] + "…")


class ValueBounds:
    """Reading the values of one request within its :class:`IngestLimits`: the slow path.

    A record whose attribute JSON text is at most :attr:`fits` characters long and does not
    nest too deep is within the limits (a character takes at most 4 UTF-8 bytes, and base64
    text is longer than its bytes); only the others are read again here, value by value, and
    what is cut is noted for the client.
    """

    def __init__(self, limits: IngestLimits, note: Callable[[str], None]) -> None:
        self.limits = limits
        self.note = note  # tells the client (decode.py's problem list)
        self.fits = min(limits.attribute_value_size, limits.attributes_size) // 4
        self.body_fits = limits.log_body_size // 4

    def attributes(
        self, key_values: Iterable[Any], dropped: int, what: str = "attribute"
    ) -> tuple[dict[str, Any], str, int]:
        """(values, JSON text, dropped count) of a KeyValue list, cut where past a limit."""
        try:
            values = attribute_values(key_values)
            text = to_json(values)
        except TooDeep:
            return self.cut_attributes(key_values, dropped, what)
        if len(text) > self.fits:
            return self.cut_attributes(key_values, dropped, what)
        return values, text, dropped

    def cut_attributes(
        self, key_values: Iterable[Any], dropped: int, what: str = "attribute"
    ) -> tuple[dict[str, Any], str, int]:
        """:meth:`attributes` for a list known to be long or deep.

        Each value is cut to ``attribute_value_size``; then, when the whole is still past
        ``attributes_size``, the attributes that do not fit are dropped (each one that
        fits is kept, in order) and counted in ``dropped``, as an SDK drops attributes past
        its count limit.
        """
        size = self.limits.attribute_value_size
        cuts: dict[str, None] = {}  # the reasons, once each, in order
        values = {
            kv.key: self.value(kv.value, size, f"{what} {shown(kv.key)}", cuts, 0)
            for kv in key_values
        }
        for reason in cuts:  # once per record, however many of its values were cut
            self.note(reason)
        text = to_json(values)
        budget = self.limits.attributes_size
        if len(text) * 4 <= budget or len(text.encode()) <= budget:
            return values, text, dropped
        kept: dict[str, Any] = {}
        used = 1  # the braces, less the comma the first entry does not have
        for key, value in values.items():
            entry = len(to_json({key: value}).encode()) - 1  # "key":value plus a comma
            if used + entry <= budget:
                kept[key] = value
                used += entry
            else:
                dropped += 1
        self.note(f"{what}s past {budget} bytes dropped (max_attributes_size)")
        return kept, to_json(kept), dropped

    def cut_attributes_json(
        self, key_values: Iterable[Any], dropped: int, what: str = "attribute"
    ) -> tuple[str, int]:
        """(JSON text, dropped count) of :meth:`cut_attributes`."""
        _, text, dropped = self.cut_attributes(key_values, dropped, what)
        return text, dropped

    @staticmethod
    def value(value: Any, size: int | None, what: str, cuts: dict[str, None], depth: int) -> Any:
        """:func:`any_value`, with strings and bytes cut to ``size`` bytes (``None``: not cut)
        and arrays and kvlists past :data:`MAX_NESTING` replaced by the marker; the reasons
        for what was cut (``what`` names the value) are added to ``cuts``."""
        kind = value.WhichOneof("value")
        cut: str | None = None
        if kind == "string_value":
            text = value.string_value
            if size is None or len(text) * 4 <= size:
                return text
            cut = cut_text(text, size)
            if cut is None:
                return text
        elif kind == "bytes_value" and size is not None:
            cut = cut_bytes(value.bytes_value, size)
        elif kind in ("array_value", "kvlist_value") and depth >= MAX_NESTING:
            cuts[f"{what} nested deeper than {MAX_NESTING} levels; cut"] = None
            return NESTED_MARKER
        elif kind == "array_value":
            return [
                ValueBounds.value(v, size, what, cuts, depth + 1) for v in value.array_value.values
            ]
        elif kind == "kvlist_value":
            return {
                kv.key: ValueBounds.value(kv.value, size, what, cuts, depth + 1)
                for kv in value.kvlist_value.values
            }
        if cut is None:
            return any_value(value)
        cuts[f"{what} longer than {size} bytes; cut (max_attribute_value_size)"] = None
        return cut

    def body(self, value: Any) -> tuple[str | None, str | None]:
        """(text, type) of a log body that is not a non-empty string, cut where past a limit.

        A structured body past ``log_body_size`` keeps its JSON text, cut, as a string body:
        cut JSON would not parse as the kvlist or array it was.
        """
        kind = value.WhichOneof("value")
        if kind is None:
            return None, None
        if kind == "string_value":
            return value.string_value, "string"
        try:
            text = to_json(any_value(value))
        except TooDeep:
            cuts: dict[str, None] = {}
            text = to_json(self.value(value, None, "log body", cuts, 0))
            for reason in cuts:
                self.note(reason)
        if len(text) > self.body_fits:
            cut = cut_text(text, self.limits.log_body_size)
            if cut is not None:
                self._note_body()
                return cut, "string"
        return text, BODY_TYPES[kind]

    def body_text(self, text: str) -> str:
        """A string log body longer than :attr:`body_fits` characters, cut if past the limit."""
        cut = cut_text(text, self.limits.log_body_size)
        if cut is None:
            return text
        self._note_body()
        return cut

    def _note_body(self) -> None:
        size = self.limits.log_body_size
        self.note(f"log body longer than {size} bytes; cut (max_log_body_size)")
