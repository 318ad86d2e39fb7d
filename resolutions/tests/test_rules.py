"""Every rule of DESIGN §3.1, on the pure evaluator; and the permutation/duplication property."""

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resolutions.rules import EventFact, Outcome, conversation_evaluate

T0 = dt.datetime(2026, 11, 1, 9, 0, tzinfo=dt.UTC)
W = dt.timedelta(hours=24)
LATER = T0 + dt.timedelta(days=10)


def at(minutes):
    return T0 + dt.timedelta(minutes=minutes)


def ev(minutes, type_, event_id=None):
    return EventFact(at(minutes), type_, event_id or f"{type_}-{minutes}")


def outcome(*events, now=LATER):
    return conversation_evaluate(events, window=W, now=now)


def test_confirmation_after_an_answer_resolves_at_that_moment():
    assert outcome(ev(0, "ai_answer"), ev(5, "customer_confirmed")) == Outcome("resolved", "confirmed", at(5))


def test_silence_for_the_window_after_the_last_answer_is_an_assumed_resolution():
    assert outcome(ev(0, "ai_answer")) == Outcome("resolved", "assumed", T0 + W)


def test_before_the_window_elapses_it_is_awaiting():
    assert outcome(ev(0, "ai_answer"), now=at(60)) == Outcome("awaiting", window_ends_at=T0 + W)


def test_a_later_answer_extends_the_window():
    assert outcome(ev(0, "ai_answer"), ev(600, "ai_answer")) == Outcome("resolved", "assumed", at(600) + W)


def test_a_reply_restarts_the_wait_and_only_the_next_answer_opens_a_window():
    assert outcome(ev(0, "ai_answer"), ev(10, "customer_reply")) == Outcome("open")
    assert outcome(ev(0, "ai_answer"), ev(10, "customer_reply"), ev(20, "ai_answer")) == Outcome(
        "resolved", "assumed", at(20) + W
    )


def test_a_confirmation_counts_only_after_an_answer():
    assert outcome(ev(0, "customer_confirmed")) == Outcome("open")
    # after a reply, a confirmation needs the next answer first
    assert outcome(ev(0, "ai_answer"), ev(10, "customer_reply"), ev(20, "customer_confirmed")) == Outcome("open")
    assert outcome(
        ev(0, "ai_answer"), ev(10, "customer_reply"), ev(20, "customer_confirmed"), ev(30, "ai_answer"),
        ev(40, "customer_confirmed"),
    ) == Outcome("resolved", "confirmed", at(40))  # fmt: skip


def test_a_handoff_before_resolution_escalates_whatever_follows():
    assert outcome(ev(0, "ai_answer"), ev(5, "handoff"), ev(6, "ai_answer"), ev(7, "customer_confirmed")) == Outcome(
        "escalated", escalated_at=at(5)
    )


def test_events_after_the_resolution_change_nothing():
    resolved = Outcome("resolved", "confirmed", at(5))
    assert outcome(ev(0, "ai_answer"), ev(5, "customer_confirmed"), ev(6, "handoff")) == resolved
    assert outcome(ev(0, "ai_answer"), ev(5, "customer_confirmed"), ev(9, "customer_confirmed")) == resolved
    # a handoff after the window elapsed comes after the assumed resolution
    assert outcome(ev(0, "ai_answer"), ev(24 * 60 + 1, "handoff")) == Outcome("resolved", "assumed", T0 + W)


def test_a_confirmation_after_the_window_comes_after_the_assumed_resolution():
    assert outcome(ev(0, "ai_answer"), ev(24 * 60 + 30, "customer_confirmed")) == Outcome("resolved", "assumed", T0 + W)


def test_same_instant_handoff_wins_over_confirmation():
    assert outcome(ev(0, "ai_answer"), ev(5, "customer_confirmed"), ev(5, "handoff")) == Outcome(
        "escalated", escalated_at=at(5)
    )


def test_out_of_order_input_is_evaluated_by_occurred_at():
    assert outcome(ev(5, "customer_confirmed"), ev(3, "handoff"), ev(0, "ai_answer")) == Outcome(
        "escalated", escalated_at=at(3)
    )


TYPES = ["ai_answer", "customer_confirmed", "customer_reply", "handoff"]
event_strategy = st.builds(
    lambda minutes, type_, n: EventFact(at(minutes), type_, f"e{n}"),
    st.integers(min_value=0, max_value=3 * 24 * 60),
    st.sampled_from(TYPES),
    st.integers(min_value=0, max_value=10_000),
)


@settings(max_examples=300)
@given(
    events=st.lists(event_strategy, min_size=1, max_size=12, unique_by=lambda e: e.event_id),
    data=st.data(),
    now_minutes=st.integers(min_value=0, max_value=5 * 24 * 60),
)
def test_any_permutation_and_duplication_gives_the_same_outcome(events, data, now_minutes):
    now = at(now_minutes)
    expected = conversation_evaluate(events, window=W, now=now)
    duplicated = events + data.draw(st.lists(st.sampled_from(events), max_size=6))
    shuffled = data.draw(st.permutations(duplicated))
    assert conversation_evaluate(shuffled, window=W, now=now) == expected
    if expected.kind == "assumed":  # only an elapsed window (by now, or by a later event) assumes a resolution
        assert expected.resolved_at <= max([now, *(e.occurred_at for e in events)])


@pytest.mark.parametrize("now_offset", [W - dt.timedelta(seconds=1), W])
def test_window_boundary(now_offset):
    result = outcome(ev(0, "ai_answer"), now=T0 + now_offset)
    assert result.status == ("resolved" if now_offset == W else "awaiting")
