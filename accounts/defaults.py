"""The default plan of DESIGN §4, shared by the data migration and by tests that empty the database.

fin-standard v1: $0.99 per resolution, 24 h window, an annual pack of 10,000 resolutions at $0.90,
seats at $39 a month, seat spend converting at $0.90 per credit.
"""

import datetime as dt
from decimal import Decimal

EFFECTIVE_FROM = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def default_plan_ensure(PricePlan, PricePlanVersion, CreditPackOffer) -> None:  # noqa: N803 - model classes
    """Create fin-standard v1 unless the plan exists. Takes the model classes so that a migration can
    pass its historical models."""
    plan, created = PricePlan.objects.get_or_create(
        slug="fin-standard",
        defaults={
            "name": "Fin Standard",
            "description": "Pay per resolved conversation, with annual credit packs.",
            "created_at": EFFECTIVE_FROM,
        },
    )
    if not created:
        return
    version = PricePlanVersion.objects.create(
        plan=plan,
        number=1,
        status="published",
        currency="usd",
        unit_amount_decimal=Decimal("99"),
        tiers_mode="",
        inactivity_window=dt.timedelta(hours=24),
        seat_unit_amount=3900,
        seat_conversion_unit_amount_decimal=Decimal("90"),
        effective_from=EFFECTIVE_FROM,
        created_at=EFFECTIVE_FROM,
        published_at=EFFECTIVE_FROM,
    )
    CreditPackOffer.objects.create(
        version=version,
        name="Annual 10,000 resolutions",
        resolutions=10_000,
        validity_days=365,
        unit_amount_decimal=Decimal("90"),
    )
