import datetime as dt
import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from accounts.models import Account, ApiKey, Role, User

pytestmark = pytest.mark.django_db


def test_seed_demo_creates_one_user_per_role_and_is_idempotent(capsys, stripe_emulator):
    call_command("seed_demo", "--json", "--days", "0")
    first = json.loads(capsys.readouterr().out)
    assert {u.role for u in User.objects.all()} == set(Role)
    assert Account.objects.count() == 3 and len(first["api_keys"]) == 3
    call_command("seed_demo", "--json", "--days", "0")
    second = json.loads(capsys.readouterr().out)
    assert Account.objects.count() == 3 and ApiKey.objects.count() == 3 and second["api_keys"] == {}
    assert [login["username"] for login in second["logins"]] == [login["username"] for login in first["logins"]]


def test_seed_demo_printed_key_works(capsys, api_client, stripe_emulator):
    call_command("seed_demo", "--json", "--days", "0")
    keys = json.loads(capsys.readouterr().out)["api_keys"]
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {keys['newco-labs']}")
    assert api_client.get("/api/v1/account").json()["name"] == "NewCo Labs"


def test_seed_demo_with_unknown_plan_fails_cleanly(stripe_emulator):
    with pytest.raises(CommandError, match="No plan 'nope'"):
        call_command("seed_demo", "--plan", "nope")
    assert not Account.objects.exists()


def test_seed_demo_sends_traffic_through_ingestion(capsys, stripe_emulator, frozen_now):
    from resolutions.models import ConversationEvent, DailyUsage, Resolution

    call_command("seed_demo", "--days", "3")
    out = capsys.readouterr().out
    assert "day 3/3" in out and "conversation events sent" in out
    seasonal = Account.objects.get(slug="seasonal-travel")
    assert ConversationEvent.objects.filter(account=seasonal).count() > 100
    resolved = Resolution.objects.filter(account=seasonal, voided_at=None).count()
    assert (
        resolved > 0
        and sum(DailyUsage.objects.filter(account=seasonal).values_list("resolutions", flat=True)) == resolved
    )
    assert Account.objects.get(slug="steady-retail").created_at == frozen_now - dt.timedelta(days=3 + 16)
    from credits.models import CreditPack

    steady_pack = CreditPack.objects.get(account__slug="steady-retail")
    assert (steady_pack.source, steady_pack.status, steady_pack.granted) == ("purchase", "active", 10_000)
    assert steady_pack.stripe_invoice_id.startswith("in_")
    assert CreditPack.objects.get(account__slug="seasonal-travel").source == "promotional"
    assert not Resolution.objects.filter(funding="unfunded", voided_at=None, resolved_at__lte=frozen_now).exists()
    assert Resolution.objects.filter(account__slug="newco-labs", funding="overage").exists()  # it has no pack
