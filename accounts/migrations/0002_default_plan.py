"""The default plan of DESIGN §4 (see accounts/defaults.py)."""

from django.db import migrations

from accounts.defaults import default_plan_ensure


def create_default_plan(apps, schema_editor):
    default_plan_ensure(
        apps.get_model("accounts", "PricePlan"),
        apps.get_model("accounts", "PricePlanVersion"),
        apps.get_model("accounts", "CreditPackOffer"),
    )


class Migration(migrations.Migration):
    dependencies = [("accounts", "0001_initial")]

    operations = [migrations.RunPython(create_default_plan, migrations.RunPython.noop)]
