"""Time-driven behaviour: subscription period rollover and automatic invoice finalization.

Called before every API request (and after the emulated clock moves), so moving the frozen clock past
a period end produces the renewal invoice the way Stripe would: a ``subscription_cycle`` draft with the
ended period's metered usage and the next period's licensed quantities, finalized and charged one hour
after it was created. Finalization re-reads the metered usage (Stripe's finalization grace period), so
usage reported for the ended period during that hour is billed. A clock jump of more than an hour past a
period end creates and finalizes the draft in the same call, counting the events stored by then.
"""

from __future__ import annotations

from .core import Ctx, render
from .invoicing import attach_pending_items, finalize_and_collect, new_invoice, save_new, subscription_lines
from .pricing import add_interval

MAX_ROLLS = 240  # safety bound per subscription per call


def advance(ctx: Ctx) -> None:
    store, now = ctx.store, ctx.now()
    for sub in store.all("subscription", newest_first=False):
        for _ in range(MAX_ROLLS):
            if sub["status"] not in ("active", "trialing", "past_due") or now < sub["current_period_end"]:
                break
            _roll(ctx, sub)
    for inv in store.all("invoice", newest_first=False):
        due = inv.get("automatically_finalizes_at")
        if inv["status"] == "draft" and inv["auto_advance"] and due is not None and due <= now:
            finalize_and_collect(ctx, inv)


def _roll(ctx: Ctx, sub: dict) -> None:
    store = ctx.store
    start, end = sub["current_period_start"], sub["current_period_end"]
    interval = sub["_interval"]
    next_end = add_interval(end, interval["interval"], interval["interval_count"])
    cancel = sub["cancel_at_period_end"] or (sub["cancel_at"] is not None and sub["cancel_at"] <= end)
    was_trial = sub["status"] == "trialing"
    before = render(store, "subscription", sub)
    customer = store.get("customer", sub["customer"])
    inv = new_invoice(
        ctx,
        customer,
        subscription=sub,
        billing_reason="subscription_cycle",
        collection_method=sub["collection_method"],
        auto_advance=True,
        currency=sub["currency"],
        created=end,
        period=(start, end),
        days_until_due=sub["days_until_due"],
    )
    lines = subscription_lines(
        store,
        sub,
        usage_period=(start, end),
        licensed_period=None if cancel else (end, next_end),
        invoice_id=inv["id"],
    )
    if was_trial:  # usage during a trial is free
        lines = [ln for ln in lines if ln["period"]["start"] != start or ln["period"]["end"] != end]
    inv["_lines"] = lines
    attach_pending_items(ctx, inv, sub["id"])
    if cancel:
        sub["status"] = "canceled"
        sub["ended_at"] = end
        sub["canceled_at"] = sub["canceled_at"] or end
        sub["cancellation_details"]["reason"] = (
            sub["cancellation_details"]["reason"] or "cancellation_requested"
        )
    else:
        sub["current_period_start"], sub["current_period_end"] = end, next_end
        for item_id in sub["_items"]:
            item = store.get("subscription_item", item_id)
            item["current_period_start"], item["current_period_end"] = end, next_end
        if was_trial:
            sub["status"] = "active"
    if inv["_lines"]:
        sub["latest_invoice"] = inv["id"]
    after = render(store, "subscription", sub)
    previous = {k: v for k, v in before.items() if after.get(k) != v}
    ctx.emit(
        "customer.subscription.deleted" if cancel else "customer.subscription.updated",
        "subscription",
        sub,
        previous,
    )
    if inv["_lines"]:
        save_new(ctx, inv)
