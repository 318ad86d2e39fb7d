"""The sign-in forms of the portal (/login/) and of the admin (/admin/login/): Django's, throttled."""

from __future__ import annotations

from django import forms
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm

from billing_portal.client_address import client_address

from .services.login_throttle import sign_in_attempt_record, sign_in_lockout_get


class SignInThrottled:
    """Refuses a sign-in while its username or client address is locked out (without checking the password),
    and records each attempt's outcome (accounts/services/login_throttle.py)."""

    def clean(self):
        username, password = self.cleaned_data.get("username"), self.cleaned_data.get("password")
        if username is None or not password:
            return super().clean()  # a required-field error: no sign-in was attempted
        address = client_address(self.request) if self.request is not None else None
        lockout = sign_in_lockout_get(username=username, address=address)
        if lockout is not None:
            raise forms.ValidationError(lockout.message(), code="sign_in_locked_out")
        try:
            cleaned = super().clean()
        except forms.ValidationError:
            if getattr(self, "user_cache", None) is not None:
                raise  # the right password of a user who may not sign in here (inactive; not staff, for the admin)
            lockout = sign_in_attempt_record(username=username, address=address, succeeded=False)
            if lockout is not None:  # this failure started a lockout: say so now, not on the next try
                raise forms.ValidationError(lockout.message(), code="sign_in_locked_out") from None
            raise
        sign_in_attempt_record(username=username, address=address, succeeded=True)
        return cleaned


class PortalSignInForm(SignInThrottled, AuthenticationForm):
    pass


class AdminSignInForm(SignInThrottled, AdminAuthenticationForm):
    pass
