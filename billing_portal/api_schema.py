"""The error answers of every API operation, in the schema (drf-spectacular postprocessing hook).

Every answer under /api/ that is not a success has the one shape (billing_portal/api_errors.py). Most error
statuses come from layers every operation shares, not from the view: authentication (401), permissions and
CSRF (403), the URL resolver and object lookups (404), the body size limit (413), the JSON parser (400, 415),
the Idempotency-Key store (409) and the per-key rate limit (429 with Retry-After). This hook documents them on
each operation they can happen to, from what the operation declares (its security, parameters, body, method),
so that a new view is complete without repeating them; a view still declares its own (409 for a state
conflict, 502/503 when it calls Stripe) in its extend_schema, and those are kept as they are.
"""

from __future__ import annotations

ERRORS_REF = {"$ref": "#/components/schemas/Errors"}
ERRORS_SCHEMA = {
    "type": "object",
    "properties": {
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "index": {"type": "integer", "nullable": True},
                    "field": {"type": "string", "nullable": True},
                    "message": {"type": "string"},
                },
                "required": ["field", "index", "message"],
            },
        }
    },
    "required": ["errors"],
}

DESCRIPTIONS = {
    "400": "Bad input: each error names its `field` (and `index` in a batch); nothing was changed.",
    "401": "No credentials, or an unknown or revoked API key.",
    "403": "The caller may not do this (role, account, CSRF token of a session).",
    "404": "No such object for this caller (or not one of theirs), or no such path.",
    "409": "The Idempotency-Key was used with another request body; nothing was changed.",
    "413": "The request body is larger than the API takes (a batch of 1,000 events fits).",
    "415": "The body is not JSON (send Content-Type: application/json).",
    "429": "Too many requests for this API key or user: wait Retry-After seconds.",
}
RETRY_AFTER = {
    "Retry-After": {
        "schema": {"type": "integer", "minimum": 0},
        "description": "Seconds to wait before trying again.",
        "required": True,
    }
}
UNSAFE = {"post", "put", "patch", "delete"}
METHODS = UNSAFE | {"get", "head", "options"}


def _statuses(operation: dict, method: str) -> list[str]:
    parameters = operation.get("parameters", [])
    statuses = []
    authenticated = any(requirement for requirement in operation.get("security", [{}]))
    if "requestBody" in operation or any(p["in"] != "path" for p in parameters):
        statuses.append("400")  # a path parameter of the wrong form is a 404: the URL resolver finds no view
    if authenticated:
        statuses += ["401", "403"]
    if any(p["in"] == "path" for p in parameters):
        statuses.append("404")
    if any(p["in"] == "header" and p["name"] == "Idempotency-Key" for p in parameters):
        statuses.append("409")
    if method in UNSAFE:
        statuses.append("413")  # the size limit applies to any request's body, declared or not
    if "requestBody" in operation:
        statuses.append("415")
    if authenticated:
        statuses.append("429")
    return statuses


def error_responses(result: dict, generator, request, public) -> dict:
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas["Errors"] = ERRORS_SCHEMA
    schemas.pop("Error", None)  # the nested component of api_errors.ERRORS, inlined above
    for path, item in result.get("paths", {}).items():
        if not path.startswith("/api/"):
            continue
        for method, operation in item.items():
            if method not in METHODS:
                continue
            responses = operation.setdefault("responses", {})
            for status in _statuses(operation, method):
                responses.setdefault(status, {"description": DESCRIPTIONS[status]})
            for status, response in responses.items():
                if status.startswith(("4", "5")):
                    response["content"] = {"application/json": {"schema": ERRORS_REF}}
                    if not response.get("description"):
                        response["description"] = DESCRIPTIONS.get(status, "An error, in the one error shape.")
            if "429" in responses:
                responses["429"]["headers"] = RETRY_AFTER
    return result
