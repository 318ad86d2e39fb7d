"""Shared plumbing for resource handlers: routing table, rendering, expansion, lists."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from . import errors
from .params import opt_int, to_int
from .store import Store

Handler = Callable[..., dict]


@dataclass
class Route:
    method: str
    regex: re.Pattern
    endpoint: str
    handler: Handler
    mutating: bool


ROUTES: list[Route] = []
RENDERERS: dict[str, Callable[[Store, dict], dict]] = {}
# ID prefix -> (kind, human name used in "No such ..." messages)
PREFIXES = [
    ("cus_", "customer", "customer"),
    ("prod_", "product", "product"),
    ("price_", "price", "price"),
    ("sub_", "subscription", "subscription"),
    ("si_", "subscription_item", "subscription item"),
    ("ii_", "invoiceitem", "invoiceitem"),
    ("in_", "invoice", "invoice"),
    ("mtr_", "billing.meter", "billing meter"),
    ("we_", "webhook_endpoint", "webhook endpoint"),
    ("evt_", "event", "event"),
]
HUMAN = {kind: human for _, kind, human in PREFIXES}


def route(method: str, pattern: str, endpoint: str, *, mutating: bool | None = None):
    """Register ``handler(ctx, params, **path_groups) -> dict`` for ``METHOD /path``."""

    def deco(fn: Handler) -> Handler:
        regex = re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern) + "$")
        ROUTES.append(Route(method, regex, endpoint, fn, method != "GET" if mutating is None else mutating))
        return fn

    return deco


def renderer(kind: str):
    def deco(fn):
        RENDERERS[kind] = fn
        return fn

    return deco


def public(rec: dict) -> dict:
    """A deep copy of a stored record without private ("_"-prefixed) keys."""
    return {k: copy.deepcopy(v) for k, v in rec.items() if not k.startswith("_")}


def render(store: Store, kind: str, rec: dict) -> dict:
    fn = RENDERERS.get(kind)
    return fn(store, rec) if fn else public(rec)


@dataclass
class Ctx:
    store: Store
    request_id: str | None = None
    idempotency_key: str | None = None
    events: list[dict] = field(default_factory=list)

    def now(self) -> int:
        return self.store.now()

    def emit(self, event_type: str, kind: str, rec: dict, previous: dict | None = None) -> dict:
        event = self.store.record_event(
            event_type,
            render(self.store, kind, rec),
            previous_attributes=previous,
            request_id=self.request_id,
            idempotency_key=self.idempotency_key,
        )
        self.events.append(event)
        return event

    def load(self, kind: str, obj_id, param: str = "id", *, allow_deleted: bool = False) -> dict:
        rec = self.store.get(kind, obj_id) if isinstance(obj_id, str) else None
        if rec is None or (rec.get("deleted") and not allow_deleted):
            raise errors.resource_missing(HUMAN.get(kind, kind), str(obj_id), param)
        return rec


# ---------------------------------------------------------------------- expansion


def _lookup(store: Store, value: str) -> dict | None:
    for prefix, kind, _ in PREFIXES:
        if value.startswith(prefix):
            rec = store.get(kind, value)
            return render(store, kind, rec) if rec else None
    return None


def expand(store: Store, obj: dict, paths) -> dict:
    """Apply ``expand[]`` paths; paths that cannot be expanded are ignored."""
    if isinstance(paths, str):
        paths = [paths]
    for path in paths or []:
        if isinstance(path, str) and path:
            _expand(store, obj, path.split("."))
    return obj


def _expand(store: Store, obj, parts: list[str]) -> None:
    if not parts or not isinstance(obj, dict):
        return
    key, rest = parts[0], parts[1:]
    if key == "tiers" and obj.get("object") == "price":
        rec = store.get("price", obj.get("id"))
        if rec is not None:
            obj["tiers"] = copy.deepcopy(rec.get("_tiers"))
        return
    value = obj.get(key)
    if isinstance(value, str):
        full = _lookup(store, value)
        if full is not None:
            obj[key] = value = full
    if isinstance(value, dict):
        _expand(store, value, rest)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            if isinstance(item, str):
                full = _lookup(store, item)
                if full is not None:
                    value[i] = item = full
            _expand(store, item, rest)


# ---------------------------------------------------------------------- lists


def filter_range(items: list[dict], params: dict, key: str, field_name: str | None = None) -> list[dict]:
    """Filter on ``created``-style params: an integer or a dict of gt/gte/lt/lte."""
    spec = params.get(key)
    if spec in (None, ""):
        return items
    field_name = field_name or key
    if not isinstance(spec, dict):
        exact = to_int(spec, key)
        return [i for i in items if i.get(field_name) == exact]
    ops = {op: to_int(v, f"{key}[{op}]") for op, v in spec.items() if v not in (None, "")}
    out = []
    for item in items:
        v = item.get(field_name)
        if v is None:
            continue
        if "gt" in ops and not v > ops["gt"]:
            continue
        if "gte" in ops and not v >= ops["gte"]:
            continue
        if "lt" in ops and not v < ops["lt"]:
            continue
        if "lte" in ops and not v <= ops["lte"]:
            continue
        out.append(item)
    return out


def paginate(
    items: list,
    params: dict,
    url: str,
    kind: str | None = None,
    render_fn: Callable[[dict], dict] | None = None,
) -> dict:
    """Cursor pagination over ``items`` (already in Stripe's order, newest first)."""
    limit = opt_int(params, "limit", 10)
    if not 1 <= limit <= 100:
        raise errors.StripeError("Invalid limit: must be between 1 and 100", param="limit")
    ids = [i.get("id") for i in items]
    after, before = params.get("starting_after"), params.get("ending_before")
    if after:
        if after not in ids:
            raise errors.resource_missing(HUMAN.get(kind or "", "object"), after, "starting_after")
        window = items[ids.index(after) + 1 :]
        page, has_more = window[:limit], len(window) > limit
    elif before:
        if before not in ids:
            raise errors.resource_missing(HUMAN.get(kind or "", "object"), before, "ending_before")
        window = items[: ids.index(before)]
        page, has_more = window[-limit:], len(window) > limit
    else:
        page, has_more = items[:limit], len(items) > limit
    render_fn = render_fn or public
    return {"object": "list", "data": [render_fn(rec) for rec in page], "has_more": has_more, "url": url}


def list_object(data: list, url: str, total_count: int | None = None) -> dict:
    out = {"object": "list", "data": data, "has_more": False, "url": url}
    if total_count is not None:
        out["total_count"] = total_count
    return out
