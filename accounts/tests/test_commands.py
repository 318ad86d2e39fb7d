import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from accounts.models import Account, ApiKey, Role, User

pytestmark = pytest.mark.django_db


def test_seed_demo_creates_one_user_per_role_and_is_idempotent(capsys, stripe_emulator):
    call_command("seed_demo", "--json")
    first = json.loads(capsys.readouterr().out)
    assert {u.role for u in User.objects.all()} == set(Role)
    assert Account.objects.count() == 3 and len(first["api_keys"]) == 3
    call_command("seed_demo", "--json")
    second = json.loads(capsys.readouterr().out)
    assert Account.objects.count() == 3 and ApiKey.objects.count() == 3 and second["api_keys"] == {}
    assert [login["username"] for login in second["logins"]] == [login["username"] for login in first["logins"]]


def test_seed_demo_printed_key_works(capsys, api_client, stripe_emulator):
    call_command("seed_demo", "--json")
    keys = json.loads(capsys.readouterr().out)["api_keys"]
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {keys['newco-labs']}")
    assert api_client.get("/api/v1/account").json()["name"] == "NewCo Labs"


def test_seed_demo_with_unknown_plan_fails_cleanly(stripe_emulator):
    with pytest.raises(CommandError, match="No plan 'nope'"):
        call_command("seed_demo", "--plan", "nope")
    assert not Account.objects.exists()
