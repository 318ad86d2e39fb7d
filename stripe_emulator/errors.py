"""Stripe-shaped API errors."""

from __future__ import annotations

DOC_BASE = "https://stripe.com/docs/error-codes/"


class StripeError(Exception):
    """An error answered in Stripe's JSON shape: ``{"error": {...}}``."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self, request_id: str | None = None) -> dict:
        err: dict = {}
        if self.code:
            err["code"] = self.code
            err["doc_url"] = DOC_BASE + self.code.replace("_", "-")
        err["message"] = self.message
        if self.param:
            err["param"] = self.param
        if request_id:
            err["request_log_url"] = f"https://dashboard.stripe.com/test/logs/{request_id}"
        err["type"] = self.type
        return {"error": err}


def resource_missing(kind: str, obj_id: str, param: str = "id") -> StripeError:
    return StripeError(f"No such {kind}: '{obj_id}'", status=404, code="resource_missing", param=param)


def unknown_param(param: str) -> StripeError:
    return StripeError(f"Received unknown parameter: {param}", code="parameter_unknown", param=param)


def missing_param(param: str) -> StripeError:
    return StripeError(f"Missing required param: {param}.", code="parameter_missing", param=param)


def invalid(message: str, param: str | None = None, code: str | None = None) -> StripeError:
    return StripeError(message, code=code, param=param)


def invalid_integer(param: str, value: object) -> StripeError:
    return StripeError(f"Invalid integer: {value}", code="parameter_invalid_integer", param=param)


def invalid_enum(param: str, allowed: list[str]) -> StripeError:
    choices = allowed[0] if len(allowed) == 1 else ", ".join(allowed[:-1]) + f", or {allowed[-1]}"
    return StripeError(f"Invalid {param}: must be one of {choices}", param=param)


def auth_error(message: str) -> StripeError:
    return StripeError(message, status=401, headers={"WWW-Authenticate": 'Bearer realm="Stripe"'})


def rate_limited() -> StripeError:
    return StripeError(
        "Request rate limit exceeded. Learn more about rate limits here https://stripe.com/docs/rate-limits.",
        status=429,
        code="rate_limit",
    )


def api_error() -> StripeError:
    return StripeError("An unknown error occurred", status=500, type="api_error")


def idempotency_mismatch(key: str) -> StripeError:
    return StripeError(
        "Keys for idempotent requests can only be used with the same parameters they were first used with. "
        f"Try using a key other than '{key}' if you meant to execute a different request.",
        type="idempotency_error",
    )


def unrecognized_url(method: str, path: str) -> StripeError:
    return StripeError(
        f"Unrecognized request URL ({method}: {path}). Please see https://stripe.com/docs or we can help at "
        "https://support.stripe.com/.",
        status=404,
    )
