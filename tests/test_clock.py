import datetime as dt

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from billing_portal import clock


def test_frozen_blocks_nest_and_unwind():
    outer = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    inner = dt.datetime(2026, 6, 1, 9, 30, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    with clock.frozen(outer):
        assert clock.now() == outer
        with clock.frozen(inner):
            assert clock.now() == inner and clock.now().tzinfo == dt.UTC
        assert clock.now() == outer
    assert abs((clock.now() - dt.datetime.now(dt.UTC)).total_seconds()) < 5


def test_frozen_time_is_seen_by_other_threads():
    import threading

    seen = []
    with clock.frozen(dt.datetime(2030, 1, 1, tzinfo=dt.UTC)):
        thread = threading.Thread(target=lambda: seen.append(clock.now()))
        thread.start()
        thread.join()
    assert seen == [dt.datetime(2030, 1, 1, tzinfo=dt.UTC)]


def test_the_setting_freezes_the_whole_process(settings):
    settings.BILLING_CLOCK_NOW = "2027-03-04T05:06:07+00:00"
    assert clock.now() == dt.datetime(2027, 3, 4, 5, 6, 7, tzinfo=dt.UTC)


@pytest.mark.parametrize(("value", "words"), [("tomorrow", "not an ISO 8601"), ("2026-11-02T10:00:00", "no timezone")])
def test_parse_instant_explains_bad_input(value, words):
    with pytest.raises(ValueError, match=words):
        clock.parse_instant(value)


def test_naive_datetimes_cannot_freeze_the_clock():
    with pytest.raises(ValueError, match="timezone-aware"), clock.frozen(dt.datetime(2026, 1, 1)):
        pass


@pytest.mark.django_db
def test_commands_take_now_and_reject_a_bad_one(stripe_emulator):
    from accounts.models import AuditLogEntry

    call_command("seed_demo", "--now", "2026-10-01T08:00:00Z", "--json", "--days", "0")
    assert AuditLogEntry.objects.filter(action="user.create").first().created_at == dt.datetime(
        2026, 10, 1, 8, tzinfo=dt.UTC
    )
    with pytest.raises(CommandError, match="no timezone"):
        call_command("seed_demo", "--now", "2026-10-01T08:00:00")
