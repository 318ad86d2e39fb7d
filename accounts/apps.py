from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _ensure_staff_groups(sender, **kwargs):
    from django.apps import apps

    # post_migrate is sent once per app; the permissions of every app exist only after the last one.
    if sender is not list(apps.get_app_configs())[-1]:
        return
    from .services import staff_groups_ensure

    staff_groups_ensure()


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Accounts, plans and access"

    def ready(self):
        from billing_portal import stripe_client

        from . import receivers, schema  # noqa: F401 - Stripe event receivers; the API-key scheme for the schema

        stripe_client.configure_globals()

        post_migrate.connect(_ensure_staff_groups, dispatch_uid="accounts.staff_groups")
