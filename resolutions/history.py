"""History and audit entries read as sentences ("ana converted 5 seats into 209 credits"), with the current
state of what they changed beside them (a pack's remaining now, not at the time of the entry).

`history_lines` phrases AuditLogEntry rows from their before/after payloads (as the services write them,
see each `audit_log_write` caller) and loads the objects they name in one query per kind, so a page of
history costs the same few queries whatever it holds. An action without its own phrasing still reads as
"<who> <did what> <object>"."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from django.utils import timezone

from accounts.models import AuditLogEntry
from billing_portal.money import format_money
from credits.models import CreditPack, SeatConversion

from .models import Resolution

PACK_TYPE, CONVERSION_TYPE, RESOLUTION_TYPE = "credits.creditpack", "credits.seatconversion", "resolutions.resolution"


@dataclass(frozen=True)
class HistoryLine:
    """One audit entry for people: when (shown in the viewer's zone), the sentence, and, where the entry
    changed something that still exists, how it stands now."""

    created_at: dt.datetime
    sentence: str
    now: str = ""
    entry_id: int = 0


def _who(entry: AuditLogEntry) -> str:
    label = entry.actor_label or "someone"
    if label.startswith("stripe"):
        return "Stripe"
    if label.startswith("system:"):
        return "The billing cycle" if "billing_cycle" in label else "The portal"
    if label.startswith("command:"):
        return f"The {label.split(':', 1)[1]} command"
    return label


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def _pack_now(pack: CreditPack | None) -> str:
    if pack is None:
        return ""
    if pack.status == CreditPack.Status.ACTIVE:
        return f"now {pack.remaining:,} of {pack.granted:,} left, expires {_when(pack.expires_at)}"
    return f"now {pack.get_status_display().lower()}"


def _sentence(entry: AuditLogEntry, packs: dict, conversions: dict, resolutions: dict) -> tuple[str, str]:
    """(sentence, how it stands now) for one entry."""
    who, before, after = _who(entry), entry.before or {}, entry.after or {}
    action, reason = entry.action, entry.reason.strip()
    because = f": {reason}" if reason else ""
    if action == "seat_conversion.confirm":
        seats = int(before.get("seats", 0)) - int(after.get("seats", 0))
        conversion = conversions.get(entry.object_id)
        value = (
            format_money(after["value_minor"], conversion.account.currency)
            if conversion and "value_minor" in after
            else ""
        )
        worth = f" (worth {value}; seats {before.get('seats')} → {after.get('seats')})" if value else ""
        pack = packs.get(str(after.get("pack_id")))
        return (
            f"{who} converted {_plural(seats, 'seat')} into {_plural(int(after.get('credits', 0)), 'credit')}{worth}",
            _pack_now(pack),
        )
    if action == "credit_pack.grant":
        source = after.get("source", "")
        pack = packs.get(entry.object_id)
        if source == CreditPack.Source.SEAT_CONVERSION:
            return (
                f"{who} added the seat conversion's pack of {_plural(int(after.get('granted', 0)), 'credit')}",
                _pack_now(pack),
            )
        kind = {"promotional": "promotional ", "adjustment": "adjustment ", "purchase": ""}.get(source, "")
        return f"{who} granted {int(after.get('granted', 0)):,} {kind}credits{because}", _pack_now(pack)
    if action == "credit_pack.purchase":
        pack = packs.get(entry.object_id)
        amount = format_money(after["amount_minor"], pack.currency) if pack and "amount_minor" in after else ""
        price = f" for {amount}" if amount else ""
        offer = after.get("offer", "an offer")
        return f"{who} bought a pack of {int(after.get('resolutions', 0)):,} credits ({offer}){price}", _pack_now(pack)
    if action in ("credit_pack.activate", "credit_pack.activate_after_cancel"):
        paid_late = " after it had been cancelled" if action.endswith("after_cancel") else ""
        usable = f"{int(after.get('remaining', 0)):,} credits became usable"
        return f"Stripe reported the pack's invoice paid{paid_late}: {usable}", _pack_now(packs.get(entry.object_id))
    if action == "credit_pack.cancel":
        return "Stripe voided the pack's invoice: the pack was cancelled, nothing was charged", ""
    if action == "credit_pack.purchase_failed":
        return f"Stripe refused the pack's invoice{because}", _pack_now(packs.get(entry.object_id))
    if action == "resolution.void":
        resolution = resolutions.get(entry.object_id)
        conversation = resolution.conversation_id if resolution else entry.object_repr.split(" ", 1)[0]
        funding = before.get("funding")
        given_back = {"credit": " (its credit went back to its pack)",
                      "overage": " (its overage is taken back from Stripe's meter)"}.get(funding, "")  # fmt: skip
        return f"{who} voided the resolution of conversation {conversation}{because}{given_back}", ""
    if action == "api_key.create":
        return f"{who} created the API key “{after.get('name', '')}” ({after.get('prefix', '')}…)", ""
    if action == "api_key.revoke":
        return f"{who} revoked the API key {entry.object_repr}{because}", ""
    if action == "account.provision":
        return f"{who} set the account up in Stripe with {_plural(int(after.get('seats', 0)), 'seat')}", ""
    if action == "account.assign_manager":
        return f"{who} changed the account manager{because}", ""
    if action == "billing_period.record":
        return f"Stripe started a billing period, {_day(after.get('start'))} to {_day(after.get('end'))}", ""
    if action == "billing_period.update":
        return f"Stripe moved the billing period's end to {_day(after.get('end'))}", ""
    if action == "account.create":
        return f"{who} created the account", ""
    if action == "account.timezone_change":
        zones = f"from {before.get('timezone', '?')} to {after.get('timezone', '?')}"
        return f"{who} changed the account's timezone {zones}", ""
    if action == "user.create":
        role = str(after.get("role", "")).replace("_", " ")
        return f"{who} added the user {after.get('username', entry.object_repr)} ({role})", ""
    words = action.replace("_", " ").replace(".", ": ")
    return f"{who}: {words} ({entry.object_repr}){because}", ""


def _when(instant: dt.datetime) -> str:
    """An instant in the viewer's timezone (the page's current one), with the zone."""
    local = timezone.localtime(instant)
    return f"{local:%-d %b %Y %H:%M} {local.tzname()}"


def _day(iso: str | None) -> str:
    if not iso:
        return "?"
    try:
        return _when(dt.datetime.fromisoformat(iso))
    except ValueError:
        return iso


def history_lines(*, entries: Iterable[AuditLogEntry]) -> list[HistoryLine]:
    """The entries as sentences, each with the current state of the pack it changed (if any)."""
    entries = list(entries)
    ids = {kind: set() for kind in (PACK_TYPE, CONVERSION_TYPE, RESOLUTION_TYPE)}
    for entry in entries:
        if entry.object_type in ids:
            ids[entry.object_type].add(entry.object_id)
        if entry.action == "seat_conversion.confirm" and (entry.after or {}).get("pack_id"):
            ids[PACK_TYPE].add(str(entry.after["pack_id"]))
    packs = {str(p.pk): p for p in CreditPack.objects.filter(pk__in=_ints(ids[PACK_TYPE]))}
    conversions = {
        str(c.pk): c
        for c in SeatConversion.objects.filter(pk__in=_ints(ids[CONVERSION_TYPE])).select_related("account")
    }
    resolutions = {
        str(r.pk): r
        for r in Resolution.objects.filter(pk__in=_ints(ids[RESOLUTION_TYPE])).only("pk", "conversation_id")
    }
    lines = []
    for entry in entries:
        sentence, now = _sentence(entry, packs, conversions, resolutions)
        lines.append(HistoryLine(created_at=entry.created_at, sentence=sentence, now=now, entry_id=entry.pk))
    return lines


def _ints(values: set[str]) -> list[int]:
    return [int(v) for v in values if v.isdigit()]
