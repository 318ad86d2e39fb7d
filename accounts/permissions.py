from rest_framework.permissions import BasePermission

from .models import Role


class IsCustomer(BasePermission):
    """A customer user, or an API key; either acts for exactly one account."""

    message = "This endpoint is for customer accounts."

    def has_permission(self, request, view):
        return bool(request.user and getattr(request.user, "account_id", None))


class IsCustomerBillingAdmin(BasePermission):
    message = "Only a billing admin of the account can do this."

    def has_permission(self, request, view):
        return getattr(request.user, "role", None) == Role.CUSTOMER_BILLING_ADMIN


class IsStaffRole(BasePermission):
    message = "This endpoint is for account managers and admins."

    def has_permission(self, request, view):
        return getattr(request.user, "role", None) in (Role.ACCOUNT_MANAGER, Role.ADMIN)


class IsAdminRole(BasePermission):
    """Pricing and finance: price plans and versions, simulations, migrations, operations (DESIGN §2)."""

    message = "This endpoint is for admins (pricing and finance)."

    def has_permission(self, request, view):
        return getattr(request.user, "role", None) == Role.ADMIN
