"""Form decoding (``a[b][0][c]=v``), allow-list validation and value coercion."""

from __future__ import annotations

import json
import re
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from pathlib import Path

from . import errors

_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_PART = re.compile(r"\[([^\[\]]*)\]")
SCHEMA_FILE = Path(__file__).resolve().parent / "param_schemas.json"


@lru_cache(maxsize=1)
def schemas() -> dict:
    return json.loads(SCHEMA_FILE.read_text())


def parse_pairs(pairs: list[tuple[str, str]]) -> dict:
    """Decode Stripe/Rack-style form pairs into nested dicts and lists."""
    root: dict = {}
    for key, value in pairs:
        m = _KEY.match(key)
        path = [key] if not m else [m.group(1), *_PART.findall(m.group(2))]
        _set_path(root, path, value)
    return root


def _set_path(container, path: list[str], value: str) -> None:
    for i, part in enumerate(path):
        last = i == len(path) - 1
        if isinstance(container, list):
            if last:
                container.append(value)
                return
            nxt = path[i + 1]
            if not container or not isinstance(container[-1], dict) or nxt in container[-1]:
                container.append({})
            container = container[-1]
            continue
        if last:
            container[part] = value
            return
        want_list = path[i + 1] == ""
        cur = container.get(part)
        if want_list and not isinstance(cur, list):
            container[part] = cur = []
        elif not want_list and not isinstance(cur, dict):
            container[part] = cur = {}
        container = cur
        if want_list:
            # the "" part is consumed by the list branch on the next iteration
            continue


def _fmt(path: str, key: object) -> str:
    return f"{path}[{key}]" if path else str(key)


def _as_list(value, path: str):
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        for k in value:
            if not str(k).isdigit():
                raise errors.unknown_param(_fmt(path, k))
        return [value[k] for k in sorted(value, key=int)]
    return value


def normalize(value, schema, path: str = ""):
    """Validate ``value`` against an allow-list schema; return it with index-dicts turned into lists."""
    if schema is None:
        if isinstance(value, dict):
            value = _as_list(value, path)
            for i, item in enumerate(value):
                if isinstance(item, dict) and item:
                    raise errors.unknown_param(_fmt(_fmt(path, i), next(iter(item))))
        return value
    if isinstance(value, str):
        return value
    if "[]" in schema:
        items = _as_list(value, path)
        if not isinstance(items, list):
            return items
        return [normalize(item, schema["[]"], _fmt(path, i)) for i, item in enumerate(items)]
    if "*" in schema:
        if isinstance(value, dict):
            return {k: normalize(v, schema["*"], _fmt(path, k)) for k, v in value.items()}
        return value
    if not isinstance(value, dict):
        return value
    out = {}
    for k, v in value.items():
        if k not in schema or k == "!":
            raise errors.unknown_param(_fmt(path, k))
        out[k] = normalize(v, schema[k], _fmt(path, k))
    for req in schema.get("!", []):
        if req not in out:
            raise errors.missing_param(_fmt(path, req))
    return out


def validate(endpoint: str, params: dict) -> dict:
    return normalize(params, schemas()[endpoint], "")


# ---------------------------------------------------------------- coercion helpers


def to_int(value, param: str) -> int:
    if isinstance(value, bool):
        raise errors.invalid_integer(param, value)
    if isinstance(value, int):
        return value
    try:
        return int(str(value).strip())
    except ValueError:
        raise errors.invalid_integer(param, value) from None


def to_bool(value, param: str) -> bool:
    if isinstance(value, bool):
        return value
    s = str(value).strip().lower()
    if s in ("true", "1"):
        return True
    if s in ("false", "0", ""):
        return False
    raise errors.StripeError(f"Invalid boolean: {value}", code="parameter_invalid_boolean", param=param)


def to_decimal(value, param: str) -> Decimal:
    try:
        d = Decimal(str(value).strip())
    except InvalidOperation:
        raise errors.StripeError(f"Invalid decimal: {value}", param=param) from None
    if not d.is_finite():
        raise errors.StripeError(f"Invalid decimal: {value}", param=param)
    return d


def decimal_str(d: Decimal) -> str:
    """Format a Decimal the way Stripe renders ``*_decimal`` fields ("2000", "0.05")."""
    s = format(d.normalize(), "f")
    return s if s != "-0" else "0"


def opt_int(params: dict, key: str, default=None):
    return to_int(params[key], key) if params.get(key) not in (None, "") else default


def opt_bool(params: dict, key: str, default=None):
    return to_bool(params[key], key) if key in params else default


def opt_str(params: dict, key: str, default=None):
    v = params.get(key)
    if v is None:
        return default
    if not isinstance(v, str):
        raise errors.StripeError(f"Invalid string: {v}", param=key)
    return v or None


def require(params: dict, key: str):
    if params.get(key) in (None, ""):
        raise errors.missing_param(key)
    return params[key]


def one_of(params: dict, key: str, allowed: list[str], default=None):
    v = params.get(key)
    if v in (None, ""):
        return default
    if v not in allowed:
        raise errors.invalid_enum(key, allowed)
    return v


def apply_metadata(current: dict | None, value) -> dict:
    """Stripe metadata semantics: merge keys; "" unsets a key; metadata="" unsets all."""
    out = dict(current or {})
    if value is None:
        return out
    if value == "":
        return {}
    if not isinstance(value, dict):
        raise errors.StripeError("Invalid hash", param="metadata")
    for k, v in value.items():
        if v in ("", None):
            out.pop(k, None)
        else:
            out[k] = str(v)
    return out
