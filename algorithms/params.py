"""Parameter schemas (plain JSON-schema-like dicts) and their validation.

A schema maps each parameter name to a spec dict with the keys ``type`` (``"number"``,
``"integer"``, ``"boolean"`` or ``"string"``), ``default``, ``description`` and, where they apply,
``minimum``, ``maximum``, ``exclusiveMinimum``, ``exclusiveMaximum`` and ``enum``. ``"number"``
parameters may be ``null`` only when their default is ``None`` (meaning "off").
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

ParamValue = float | int | bool | str | None
ParamSpec = dict[str, Any]
ParamSchema = dict[str, ParamSpec]


class InvalidParameters(ValueError):
    """Raised when parameters do not satisfy a schema; ``errors`` maps field -> message."""

    def __init__(self, errors: Mapping[str, str], algorithm: str | None = None) -> None:
        self.errors: dict[str, str] = dict(errors)
        self.algorithm = algorithm
        where = f" for {algorithm}" if algorithm else ""
        detail = "; ".join(f"{k}: {v}" for k, v in sorted(self.errors.items()))
        super().__init__(f"invalid parameters{where}: {detail}")


def _check_value(name: str, spec: ParamSpec, value: object) -> tuple[ParamValue, str | None]:
    kind = spec["type"]
    if value is None:
        if spec.get("default", 0) is None:
            return None, None
        return None, "must not be null"
    if kind == "boolean":
        if not isinstance(value, bool):
            return None, f"must be a boolean, got {type(value).__name__}"
        return value, None
    if kind == "string":
        if not isinstance(value, str):
            return None, f"must be a string, got {type(value).__name__}"
        allowed = spec.get("enum")
        if allowed is not None and value not in allowed:
            return None, f"must be one of {list(allowed)}, got {value!r}"
        return value, None
    if kind == "integer":
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None, f"must be an integer, got {type(value).__name__}"
        if isinstance(value, float):
            if not value.is_integer():
                return None, f"must be an integer, got {value!r}"
            value = int(value)
        num: float | int = value
    elif kind == "number":
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None, f"must be a number, got {type(value).__name__}"
        num = float(value)
        if not math.isfinite(num):
            return None, f"must be finite, got {value!r}"
    else:  # pragma: no cover - schema error, not a caller error
        raise ValueError(f"unknown type {kind!r} in schema of {name}")
    lo = spec.get("minimum")
    hi = spec.get("maximum")
    xlo = spec.get("exclusiveMinimum")
    xhi = spec.get("exclusiveMaximum")
    if lo is not None and num < lo:
        return None, f"must be >= {lo}, got {num!r}"
    if hi is not None and num > hi:
        return None, f"must be <= {hi}, got {num!r}"
    if xlo is not None and num <= xlo:
        return None, f"must be > {xlo}, got {num!r}"
    if xhi is not None and num >= xhi:
        return None, f"must be < {xhi}, got {num!r}"
    return num, None


def validate_against(
    schema: ParamSchema, params: Mapping[str, object] | None, algorithm: str | None = None
) -> dict[str, ParamValue]:
    """Validate ``params`` against ``schema`` and fill in defaults.

    Unknown names, wrong types and out-of-range values are all reported at once, one message per
    field, in :class:`InvalidParameters`. Integers given for ``number`` fields become floats;
    integral floats given for ``integer`` fields become ints.
    """
    given = dict(params or {})
    errors: dict[str, str] = {}
    out: dict[str, ParamValue] = {}
    for key in given:
        if not isinstance(key, str) or key not in schema:
            errors[str(key)] = "unknown parameter"
    for name, spec in schema.items():
        if name in given:
            value, err = _check_value(name, spec, given[name])
            if err is not None:
                errors[name] = err
            else:
                out[name] = value
        else:
            out[name] = spec.get("default")
    if errors:
        raise InvalidParameters(errors, algorithm)
    return out


def to_json_schema(schema: ParamSchema, title: str | None = None) -> dict[str, Any]:
    """A standard JSON Schema (draft 2020-12 style) object for a parameter schema."""
    props: dict[str, Any] = {}
    for name, spec in schema.items():
        prop = {k: v for k, v in spec.items() if k != "type"}
        prop["type"] = [spec["type"], "null"] if spec.get("default", 0) is None else spec["type"]
        props[name] = prop
    out: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": False}
    if title:
        out["title"] = title
    return out


def as_float(value: ParamValue) -> float:
    """Narrow a validated value to ``float``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"expected a number, got {value!r}")
    return float(value)


def as_int(value: ParamValue) -> int:
    """Narrow a validated value to ``int``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {value!r}")
    return value


def as_str(value: ParamValue) -> str:
    """Narrow a validated value to ``str``."""
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {value!r}")
    return value


def as_optional_float(value: ParamValue) -> float | None:
    """Narrow a validated value to ``float | None``."""
    return None if value is None else as_float(value)
