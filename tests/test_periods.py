import datetime as dt

from hypothesis import given
from hypothesis import strategies as st

from billing_portal.periods import billing_period

UTC = dt.UTC


def test_periods_follow_the_anchor_day_and_clamp_to_month_end():
    anchor = dt.datetime(2026, 1, 31, 9, 30, tzinfo=UTC)
    assert billing_period(anchor=anchor, instant=dt.datetime(2026, 2, 15, tzinfo=UTC)) == (
        dt.datetime(2026, 1, 31, 9, 30, tzinfo=UTC), dt.datetime(2026, 2, 28, 9, 30, tzinfo=UTC),
    )  # fmt: skip
    assert billing_period(anchor=anchor, instant=dt.datetime(2026, 3, 1, tzinfo=UTC)) == (
        dt.datetime(2026, 2, 28, 9, 30, tzinfo=UTC), dt.datetime(2026, 3, 31, 9, 30, tzinfo=UTC),
    )  # fmt: skip


@given(
    anchor=st.datetimes(min_value=dt.datetime(2020, 1, 1), max_value=dt.datetime(2030, 1, 1), timezones=st.just(UTC)),
    offset=st.timedeltas(min_value=dt.timedelta(0), max_value=dt.timedelta(days=3000)),
)
def test_every_instant_after_the_anchor_falls_in_exactly_one_month_long_period(anchor, offset):
    instant = anchor + offset
    start, end = billing_period(anchor=anchor, instant=instant)
    assert start <= instant < end
    assert 28 <= (end - start).days <= 31
    assert billing_period(anchor=anchor, instant=end)[0] == end  # periods tile: the next starts at this end
