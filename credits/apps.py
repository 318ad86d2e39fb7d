from django.apps import AppConfig


class CreditsConfig(AppConfig):
    name = "credits"
    verbose_name = "Credit packs"

    def ready(self):
        from . import receivers  # noqa: F401 - Stripe invoice events activate purchased packs
