"""Funding reads each account's resolutions on from its FundingProgress mark, in chunks, and never moves
the mark past a resolution that is not due yet."""

import datetime as dt

import pytest

from credits.services import credit_pack_grant
from resolutions.models import FundingProgress, Resolution
from resolutions.services import resolutions_fund
from resolutions.tests.conftest import NOW, event

pytestmark = pytest.mark.django_db
DAY = dt.timedelta(days=1)


def confirm(post_events, conversation, *, minutes_ago):
    answer = event(f"{conversation}-a", conversation, "ai_answer", minutes_ago + 1)
    assert (
        post_events(answer, event(f"{conversation}-b", conversation, "customer_confirmed", minutes_ago)).status_code
        == 202
    )


def test_the_mark_follows_the_funded_resolutions_and_a_second_run_reads_nothing(post_events, account, now):
    for i in range(4):
        confirm(post_events, f"c{i}", minutes_ago=60 - i)
    assert tuple(vars(resolutions_fund(now=NOW)).values()) == (0, 4)
    last = Resolution.objects.order_by("-id").first()
    assert FundingProgress.objects.get(account=account).funded_through_id == last.pk
    assert tuple(vars(resolutions_fund(now=NOW)).values()) == (0, 0)


def test_a_resolution_not_due_yet_holds_the_mark_until_it_is(post_events, account, now):
    confirm(post_events, "early", minutes_ago=30)
    confirm(post_events, "ahead", minutes_ago=-4)  # confirmed 4 minutes ahead of the server's clock
    confirm(post_events, "later", minutes_ago=10)
    ahead = Resolution.objects.get(conversation_id="ahead")
    assert tuple(vars(resolutions_fund(now=NOW)).values()) == (0, 2)  # early and later are due; ahead is not
    assert Resolution.objects.get(pk=ahead.pk).funding == "unfunded"
    assert FundingProgress.objects.get(account=account).funded_through_id == ahead.pk - 1
    assert tuple(vars(resolutions_fund(now=NOW + dt.timedelta(minutes=5))).values()) == (0, 1)
    assert not Resolution.objects.filter(funding="unfunded").exists()
    # The second run reads "later" again (funded already: skipped) and the mark moves past both.
    assert FundingProgress.objects.get(account=account).funded_through_id == Resolution.objects.order_by("-id")[0].pk


def test_chunks_of_several_accounts_fund_everything_once_in_resolved_order(
    post_events, account, other_account, now, monkeypatch, billing_admin, api_client
):
    import resolutions.services.funding as services
    from accounts.services import api_key_create

    monkeypatch.setattr(services, "FUND_CHUNK", 3)
    monkeypatch.setattr(services, "FUND_BATCH", 2)
    pack = credit_pack_grant(account=account, quantity=4, source="adjustment", actor="test", starts_at=NOW - DAY)
    # Written in one order, resolved in another: within a chunk, funding goes by resolved_at.
    for i, minutes_ago in enumerate([20, 50, 40, 10, 30, 60, 5]):
        confirm(post_events, f"c{i}", minutes_ago=minutes_ago)
    _, other_key = api_key_create(account=other_account, name="bot", actor="test")
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {other_key}")
    for i in range(3):
        body = {
            "events": [event(f"o{i}-a", f"o{i}", "ai_answer", 30), event(f"o{i}-b", f"o{i}", "customer_confirmed", 29)]
        }
        assert api_client.post("/api/v1/conversation-events", body, format="json").status_code == 202
    assert tuple(vars(resolutions_fund(now=NOW)).values()) == (4, 6)
    mine = Resolution.objects.filter(account=account).order_by("id")
    # Chunks of 3 in id order: (c0 c1 c2) -> c1 c2 c0 by time, then (c3 c4 c5) -> c5 first; the pack of 4
    # funds the first chunk and the earliest of the second.
    assert [r.conversation_id for r in mine if r.funding == "credit"] == ["c0", "c1", "c2", "c5"]
    assert all(r.credit_pack_id == pack.pk for r in mine if r.funding == "credit")
    assert not Resolution.objects.filter(funding="unfunded").exists()
    assert tuple(vars(resolutions_fund(now=NOW)).values()) == (0, 0)


def test_a_held_mark_does_not_make_later_chunks_read_the_same_rows_again(post_events, account, now, monkeypatch):
    import resolutions.services.funding as services

    monkeypatch.setattr(services, "FUND_CHUNK", 3)
    confirm(post_events, "ahead", minutes_ago=-4)  # first written, not due: the mark stops before it
    for i in range(7):
        confirm(post_events, f"c{i}", minutes_ago=30 - i)
    ahead = Resolution.objects.get(conversation_id="ahead")
    assert tuple(vars(resolutions_fund(now=NOW)).values()) == (0, 7)  # every due one, in one call
    assert FundingProgress.objects.get(account=account).funded_through_id == ahead.pk - 1
    assert tuple(vars(resolutions_fund(now=NOW + dt.timedelta(minutes=5))).values()) == (0, 1)
    assert FundingProgress.objects.get(account=account).funded_through_id == Resolution.objects.order_by("-id")[0].pk
