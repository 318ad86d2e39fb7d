from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _ensure_staff_groups(sender, **kwargs):
    from .services import staff_groups_ensure

    staff_groups_ensure()


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Accounts, plans and access"

    def ready(self):
        from billing_portal import stripe_client

        from . import receivers, schema  # noqa: F401 - Stripe event receivers; the API-key scheme for the schema

        stripe_client.configure_globals()

        # Every app's post_migrate, so permissions of apps migrated after this one exist too.
        post_migrate.connect(_ensure_staff_groups, dispatch_uid="accounts.staff_groups")
