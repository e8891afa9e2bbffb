"""A small TOML writer for the value types recipes and run records use.

Supports str, bool, int, float, lists of scalars, nested tables and arrays of tables. (Reading uses
the standard library's ``tomllib``.)
"""

from __future__ import annotations

import json
import math
from typing import Any


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # JSON string escapes are valid TOML basic strings
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_scalar(x) for x in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_scalar(x)}" for k, x in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} to TOML: {value!r}")


def _key(key: str) -> str:
    if key and all(c.isalnum() or c in "-_" for c in key):
        return key
    return json.dumps(key)


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and len(value) > 0 and all(isinstance(x, dict) for x in value)


def _write_table(lines: list[str], table: dict, prefix: str) -> None:
    nested = []
    for key, value in table.items():
        if value is None:
            continue
        if isinstance(value, dict) or _is_table_array(value):
            nested.append((key, value))
        else:
            lines.append(f"{_key(key)} = {_scalar(value)}")
    for key, value in nested:
        name = f"{prefix}.{_key(key)}" if prefix else _key(key)
        if isinstance(value, dict):
            lines.append("")
            lines.append(f"[{name}]")
            _write_table(lines, value, name)
        else:
            for item in value:
                lines.append("")
                lines.append(f"[[{name}]]")
                _write_table(lines, item, name)


def dumps_toml(data: dict) -> str:
    """Serialise ``data`` as TOML text."""
    lines: list[str] = []
    _write_table(lines, data, "")
    return "\n".join(lines).lstrip("\n") + "\n"
