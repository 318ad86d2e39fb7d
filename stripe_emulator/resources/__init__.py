"""Resource handlers. ``load_all()`` imports every module so their routes register in ``core.ROUTES``."""


def load_all() -> None:
    from . import account, billing, catalog, customers, events, invoices, subscription_items, subscriptions  # noqa: F401
