"""API authentication: `Authorization: Bearer <account API key>` acts for that key's account."""

from __future__ import annotations

from dataclasses import dataclass

from django.utils.decorators import method_decorator
from django.views.decorators.debug import sensitive_variables
from rest_framework import authentication, exceptions

from .models import Account, ApiKey
from .services import api_key_authenticate


@dataclass(frozen=True)
class ApiKeyPrincipal:
    """The caller of a request made with an API key: the account's integration, not a person."""

    api_key: ApiKey

    is_authenticated = True
    is_staff = False
    is_active = True
    role = None

    @property
    def account(self) -> Account:
        return self.api_key.account

    @property
    def account_id(self) -> int:
        return self.api_key.account_id

    def get_username(self) -> str:
        return f"api_key:{self.api_key.prefix}"

    def __str__(self) -> str:
        return self.get_username()


class ApiKeyAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    @method_decorator(sensitive_variables())  # no local in an error report: they hold the key
    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        scheme, _, raw_key = header.partition(" ")
        if scheme != self.keyword:
            return None
        api_key = api_key_authenticate(raw_key.strip())
        if api_key is None:
            raise exceptions.AuthenticationFailed("Unknown or revoked API key.")
        return ApiKeyPrincipal(api_key), api_key

    def authenticate_header(self, request):
        return self.keyword  # makes DRF answer 401 (not 403) with WWW-Authenticate: Bearer
