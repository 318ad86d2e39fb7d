"""Admin pages for price plans (issue 12): the plans with their versions, a version's page (terms, Stripe
sync with retry, publish, retire), and the draft editor (tiers and offers as rows, validated as you type
with the same parser the services use, with the price curve beside the current version's).

The rules are in accounts/services/plans.py, accounts/services/stripe_catalog.py and accounts/pricing.py;
these views translate form fields to the parser's terms and back, and call one service."""

from __future__ import annotations

import datetime as dt
import re
import uuid
import zoneinfo
from dataclasses import dataclass, field
from decimal import Decimal

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpResponseNotAllowed
from django.shortcuts import get_object_or_404, redirect
from django.urls import reverse

from accounts.models import PricePlan, PricePlanVersion
from accounts.pages import admin_page, refused_status, render_page
from accounts.pricing import MAX_OFFERS, MAX_TIERS, plan_version_spec_parse
from accounts.selectors import price_plan_list, price_plan_version_usage
from accounts.services import (
    price_plan_version_create,
    price_plan_version_digest,
    price_plan_version_publish,
    price_plan_version_retire,
    price_plan_version_update,
)
from accounts.services.stripe_catalog import price_plan_version_stripe_sync_retry
from billing_portal import clock

from ..price_curve import MAX_LARGEST, largest_period_overage, price_curve_build, terms_from_spec
from ..rating import PriceTerms

EDITOR = "portal/pricing/price_plan_version_edit.html"
FEEDBACK = "portal/pricing/_price_plan_version_feedback.html"
EDITOR_FORM = "portal/pricing/_price_plan_version_form.html"
TIER_FIELDS = ("up_to", "unit_amount_decimal", "flat_amount")
OFFER_FIELDS = ("name", "resolutions", "validity_days", "unit_amount_decimal")
MODES = [("", "One price per resolution"), ("graduated", "Graduated tiers"), ("volume", "Volume tiers")]
_LOCAL_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2})?")


# --- the plans and a version -------------------------------------------------------------------------
@admin_page
def price_plan_list_page(request):
    plans = list(price_plan_list())
    usage = price_plan_version_usage()
    for plan in plans:
        current = plan.current_version()
        plan.rows = [
            {"version": v, "current": current is not None and v.pk == current.pk,
             **usage.get(v.pk, {"accounts": 0, "moving_in": 0})}
            for v in sorted(plan.versions.all(), key=lambda v: -v.number)
        ]  # fmt: skip
        plan.current = current
    return render_page(request, "portal/pricing/price_plans.html", {"plans": plans})


def _version(version_id: int) -> PricePlanVersion:
    return get_object_or_404(
        PricePlanVersion.objects.select_related("plan").prefetch_related("tiers", "offers"), pk=version_id
    )


def _current_published(plan: PricePlan) -> PricePlanVersion | None:
    """The plan's version in force now, else its latest published one (whose effective_from is ahead)."""
    return plan.current_version() or (
        plan.versions.filter(status=PricePlanVersion.Status.PUBLISHED).order_by("-number").first()
    )


def _comparison(version: PricePlanVersion) -> PricePlanVersion | None:
    """The published version a version is drawn beside: its plan's current one (unless it is that one)."""
    current = _current_published(version.plan)
    return current if current is not None and current.pk != version.pk else None


def _largest_overage(request) -> int:
    """The largest account's period overage, which sets the curve's range: measured when a page is drawn and
    carried by the editor's form, so that validating as the admin types does not group the meter windows on
    every keystroke (a forged value only changes the range of the forger's own chart)."""
    posted = request.POST.get("largest_overage", "") if request.method == "POST" else ""
    if posted.isascii() and posted.isdecimal() and len(posted) < 12 and int(posted) <= MAX_LARGEST:
        return int(posted)
    return largest_period_overage(now=clock.now())


def _curve(
    *, draft_terms: PriceTerms | None, draft_label: str, currency: str, other: PricePlanVersion | None, largest: int
):
    curves, note = [], ""
    if draft_terms is not None:
        curves.append(("draft", draft_label, draft_terms))
    if other is not None:
        if other.currency != currency:
            note = f"v{other.number} charges in {other.currency.upper()}, so it is not drawn beside this one."
        else:
            curves.append(("current", f"v{other.number} (published)", PriceTerms.from_version(other)))
    if not curves:
        return None, note
    return price_curve_build(currency=currency, curves=curves, largest_overage=largest), note


@admin_page
def price_plan_version_page(request, version_id: int):
    version = _version(version_id)
    other = _comparison(version)
    usage = price_plan_version_usage().get(version.pk, {"accounts": 0, "moving_in": 0})
    curve, curve_note = _curve(
        draft_terms=PriceTerms.from_version(version), draft_label=f"v{version.number} ({version.status})",
        currency=version.currency, other=other, largest=_largest_overage(request),
    )  # fmt: skip
    context = {"version": version, "usage": usage, "curve": curve, "curve_note": curve_note, "other": other}
    return render_page(request, "portal/pricing/price_plan_version.html", context)


def _confirm(request, version_id: int, *, action: str, service, done: str):
    version = _version(version_id)
    page = "portal/pricing/price_plan_version_confirm.html"
    # The digest of the terms shown: publishing is refused if the draft changed since this page was drawn.
    digest = request.POST.get("terms_digest", "") if request.method == "POST" else ""
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        digest = price_plan_version_digest(version) if request.method != "POST" else ""
    context = {"version": version, "action": action, "reason": "", "errors": [], "terms_digest": digest}
    if request.method != "POST":
        return render_page(request, page, context)
    if request.POST.get("confirm") != "yes":
        return redirect("staff-price-plan-version", version_id=version.pk)
    reason = (request.POST.get("reason") or "").strip()
    context["reason"] = reason
    if len(reason) > 500:
        context["errors"] = ["Keep the reason under 500 characters."]
        return render_page(request, page, context, status=refused_status(request, 400))
    kwargs = {"expected_digest": request.POST.get("terms_digest")} if action == "publish" else {}
    try:
        service(version=version, actor=request.user, reason=reason, **kwargs)
    except ValidationError as exc:
        context["errors"] = exc.messages
        context["terms_digest"] = price_plan_version_digest(version)  # the terms this page now shows
        return render_page(request, page, context, status=refused_status(request, 409))
    messages.success(request, f"{version.plan.slug} v{version.number} {done}.")
    return redirect("staff-price-plan-version", version_id=version.pk)


@admin_page
def price_plan_version_publish_form(request, version_id: int):
    return _confirm(request, version_id, action="publish", service=price_plan_version_publish,
                    done="is published: its Stripe Prices are being created")  # fmt: skip


@admin_page
def price_plan_version_retire_form(request, version_id: int):
    return _confirm(request, version_id, action="retire", service=price_plan_version_retire,
                    done="is retired")  # fmt: skip


@admin_page
def price_plan_version_sync_retry_form(request, version_id: int):
    version = _version(version_id)
    if request.method != "POST":
        return redirect("staff-price-plan-version", version_id=version.pk)
    try:
        price_plan_version_stripe_sync_retry(version=version, actor=request.user)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, f"The Stripe sync of {version.plan.slug} v{version.number} was queued again.")
    return redirect("staff-price-plan-version", version_id=version.pk)


# --- the draft editor --------------------------------------------------------------------------------
@dataclass
class EditorField:
    name: str
    value: str
    errors: list[str] = field(default_factory=list)

    @property
    def slot(self) -> str:
        return f"err-{self.name}"


@dataclass
class EditorRow:
    prefix: str  # "tier" or "offer"
    index: int
    fields: dict[str, EditorField]
    errors: list[str] = field(default_factory=list)

    @property
    def slot(self) -> str:
        return f"err-{self.prefix}-{self.index}"


@dataclass
class Editor:
    fields: dict[str, EditorField]
    tiers: list[EditorRow]
    offers: list[EditorRow]
    errors: list[str] = field(default_factory=list)  # about the whole version
    tiers_errors: list[str] = field(default_factory=list)
    offers_errors: list[str] = field(default_factory=list)
    focus: str = ""  # the input to focus after a row was added

    @property
    def slots(self) -> list[tuple[str, list[str]]]:
        """Every error slot of the form with its messages, for the out-of-band swap after validation."""
        slots = [(f.slot, f.errors) for f in self.fields.values()]
        slots += [("err-tiers", self.tiers_errors), ("err-offers", self.offers_errors)]
        for row in self.tiers + self.offers:
            slots.append((row.slot, row.errors))
            slots += [(f.slot, f.errors) for f in row.fields.values()]
        return slots

    @property
    def error_count(self) -> int:
        return sum(len(messages) for _, messages in self.slots) + len(self.errors)


TOP_FIELDS = (
    "currency", "tiers_mode", "unit_amount_decimal", "inactivity_window", "seat_unit_amount",
    "seat_conversion_unit_amount_decimal", "effective_from",
)  # fmt: skip


def _decimal_text(value: Decimal | None) -> str:
    if value is None:
        return ""
    text = format(value.normalize(), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _window_text(window: dt.timedelta) -> str:
    days, seconds = window.days, window.seconds
    clock_text = f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
    if days and not seconds:
        return f"{days * 24}:00:00" if days == 1 else f"{days} 00:00:00"
    return f"{days} {clock_text}" if days else clock_text


def _local_text(instant: dt.datetime, zone: str) -> str:
    return instant.astimezone(zoneinfo.ZoneInfo(zone)).strftime("%Y-%m-%dT%H:%M")


def _next_month_start() -> dt.datetime:
    """A new draft's default effective_from: the first of next month (a copy keeps its terms, not its date: a
    past date would make the version the one new accounts get the moment it is published)."""
    return (clock.now() + dt.timedelta(days=32)).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _values_from_version(version: PricePlanVersion, zone: str, *, copy: bool = False) -> dict:
    effective_from = max(version.effective_from, _next_month_start()) if copy else version.effective_from
    return {
        "currency": version.currency, "tiers_mode": version.tiers_mode,
        "unit_amount_decimal": _decimal_text(version.unit_amount_decimal),
        "inactivity_window": _window_text(version.inactivity_window),
        "seat_unit_amount": str(version.seat_unit_amount),
        "seat_conversion_unit_amount_decimal": _decimal_text(version.seat_conversion_unit_amount_decimal),
        "effective_from": _local_text(effective_from, zone),
        "tiers": [
            {"up_to": "" if t.up_to is None else str(t.up_to),
             "unit_amount_decimal": _decimal_text(t.unit_amount_decimal),
             "flat_amount": "" if t.flat_amount is None else str(t.flat_amount)}
            for t in version.tiers.all()
        ] or [dict.fromkeys(TIER_FIELDS, "") for _ in range(2)],
        "offers": [
            {"name": o.name, "resolutions": str(o.resolutions), "validity_days": str(o.validity_days),
             "unit_amount_decimal": _decimal_text(o.unit_amount_decimal)}
            for o in version.offers.all()
        ],
    }  # fmt: skip


def _blank_values(zone: str) -> dict:
    start = _next_month_start()
    return {
        "currency": "usd", "tiers_mode": "", "unit_amount_decimal": "", "inactivity_window": "24:00:00",
        "seat_unit_amount": "", "seat_conversion_unit_amount_decimal": "", "effective_from": _local_text(start, zone),
        "tiers": [dict.fromkeys(TIER_FIELDS, "") for _ in range(2)], "offers": [],
    }  # fmt: skip


def _count(post, name: str, limit: int) -> int:
    text = post.get(name, "")
    if not (text.isascii() and text.isdecimal()):
        return 0
    return min(int(text), limit) if len(text) < 6 else limit


def _values_from_post(post) -> dict:
    """The editor's fields as posted (strings), rows included; row counts are capped just above what the
    parser accepts, so it still says "at most 250" and a forged count cannot make us loop."""
    values = {name: post.get(name, "") for name in TOP_FIELDS}
    values["tiers"] = [
        {f: post.get(f"tier-{i}-{f}", "") for f in TIER_FIELDS}
        for i in range(_count(post, "tier_count", MAX_TIERS + 1))
    ]
    values["offers"] = [
        {f: post.get(f"offer-{i}-{f}", "") for f in OFFER_FIELDS}
        for i in range(_count(post, "offer_count", MAX_OFFERS + 1))
    ]
    return values


def _effective_from_term(text: str, zone: str) -> str:
    """A datetime-local value is a wall time in the admin's zone: give the parser that instant with its
    offset. Anything else goes to the parser as typed, which says what is wrong with it."""
    text = text.strip()
    if _LOCAL_DATETIME.fullmatch(text):
        try:
            naive = dt.datetime.fromisoformat(text)
        except ValueError:
            return text
        return naive.replace(tzinfo=zoneinfo.ZoneInfo(zone)).isoformat()
    return text


def _terms(values: dict, zone: str) -> dict:
    """The parser's terms from the editor's values: tiers only for a tiered price, the one price only for
    a per-resolution price (so switching modes does not leave the other's fields in the way)."""
    terms = {name: values[name] for name in TOP_FIELDS}
    terms["effective_from"] = _effective_from_term(values["effective_from"], zone)
    if terms["tiers_mode"]:
        terms["unit_amount_decimal"] = ""
        terms["tiers"] = values["tiers"]
    terms["offers"] = values["offers"]
    return terms


def _editor(values: dict, errors: dict[str, list[str]] | None = None) -> Editor:
    errors = dict(errors or {})
    fields = {name: EditorField(name, values[name], errors.pop(name, [])) for name in TOP_FIELDS}

    def rows(prefix: str, key: str, names: tuple[str, ...]) -> list[EditorRow]:
        out = []
        for i, row in enumerate(values[key]):
            row_fields = {
                f: EditorField(f"{prefix}-{i}-{f}", row.get(f, ""), errors.pop(f"{key}[{i}].{f}", [])) for f in names
            }
            out.append(EditorRow(prefix, i, row_fields, errors.pop(f"{key}[{i}]", [])))
        return out

    editor = Editor(
        fields=fields, tiers=rows("tier", "tiers", TIER_FIELDS), offers=rows("offer", "offers", OFFER_FIELDS)
    )
    editor.tiers_errors = errors.pop("tiers", [])
    editor.offers_errors = errors.pop("offers", [])
    # Whatever is left names no field on the form (the whole version, or rows beyond the cap).
    editor.errors = [m for messages in errors.values() for m in messages]
    return editor


def _validate(values: dict, zone: str):
    """(spec or None, errors by parser field) — the parser the services use, nothing else."""
    try:
        return plan_version_spec_parse(_terms(values, zone)), {}
    except ValidationError as exc:
        return None, exc.message_dict


def _editor_context(request, *, plan: PricePlan, draft: PricePlanVersion | None, values: dict, errors=None):
    """The editor with `values`; `errors` (by parser field) shown beside their fields, or none yet (None).
    The curve is drawn whenever the values parse."""
    spec, _ = _validate(values, request.user.viewing_timezone)
    other = _comparison(draft) if draft is not None else _current_published(plan)
    largest = _largest_overage(request)
    curve, note = _curve(
        draft_terms=terms_from_spec(spec) if spec is not None else None, draft_label="This draft",
        currency=spec.currency if spec is not None else (other.currency if other else "usd"), other=other,
        largest=largest,
    )  # fmt: skip
    if spec is None:
        note = "Fix the terms above to see this draft's curve. " + note
    return {
        "plan": plan, "draft": draft, "editor": _editor(values, errors), "modes": MODES, "curve": curve,
        "curve_note": note.strip(), "other": other, "zone": request.user.viewing_timezone, "largest": largest,
        "form_key": _form_key(request), "terms_digest": _terms_digest(request, draft),
        "action_url": reverse("staff-price-plan-version-edit", args=[draft.pk]) if draft
        else reverse("staff-price-plan-version-new", args=[plan.pk]),
        "validate_url": reverse("staff-price-plan-version-validate", args=[plan.pk]),
    }  # fmt: skip


def _terms_digest(request, draft: PricePlanVersion | None) -> str:
    """The digest of the draft as the editor was opened (carried through row changes): a save is refused if
    the draft changed since, say in another tab."""
    if draft is None:
        return ""
    posted = request.POST.get("terms_digest", "") if request.method == "POST" else ""
    return posted if re.fullmatch(r"[0-9a-f]{64}", posted) else price_plan_version_digest(draft)


def _form_key(request) -> str:
    """The key a new draft's form carries from when it was first drawn (kept through row changes)."""
    posted = request.POST.get("idempotency_key", "") if request.method == "POST" else ""
    return posted if re.fullmatch(r"[0-9a-f]{32}", posted) else uuid.uuid4().hex


def _row_action(values: dict, action: str) -> str:
    """Apply an add/remove-row button to `values`; returns the id of the input to focus."""
    for prefix, key, names, limit in (("tier", "tiers", TIER_FIELDS, MAX_TIERS), ("offer", "offers", OFFER_FIELDS,
                                                                                 MAX_OFFERS)):  # fmt: skip
        if action == f"add_{prefix}" and len(values[key]) < limit:
            values[key].append(dict.fromkeys(names, ""))
            return f"id_{prefix}-{len(values[key]) - 1}-{names[0]}"
        if action.startswith(f"remove_{prefix}:"):
            index = action.split(":", 1)[1]
            if index.isascii() and index.isdecimal() and int(index) < len(values[key]):
                del values[key][int(index)]
            return ""
    return ""


def _editor_page(request, *, plan: PricePlan, draft: PricePlanVersion | None, initial: dict):
    if request.method != "POST":
        context = _editor_context(request, plan=plan, draft=draft, values=initial)
        return render_page(request, EDITOR, context)
    values = _values_from_post(request.POST)
    action = request.POST.get("action", "save")
    if action != "save":
        focus = _row_action(values, action)
        context = _editor_context(request, plan=plan, draft=draft, values=values)
        context["editor"].focus = focus
        return render_page(request, EDITOR, context, partial=EDITOR_FORM)
    zone = request.user.viewing_timezone
    spec, errors = _validate(values, zone)
    if spec is not None:
        try:
            if draft is None:
                # The form's key is stored with the draft: a double click or resubmit finds the first draft.
                saved = price_plan_version_create(
                    plan=plan, spec=spec, actor=request.user, idempotency_key=_form_key(request)
                )
            else:
                saved = price_plan_version_update(
                    version=draft, spec=spec, actor=request.user, expected_digest=request.POST.get("terms_digest")
                )
        except ValidationError as exc:
            errors = exc.message_dict if hasattr(exc, "error_dict") else {"__all__": exc.messages}
        else:
            messages.success(request, f"Draft {plan.slug} v{saved.number} saved.")
            return redirect("staff-price-plan-version", version_id=saved.pk)
    context = _editor_context(request, plan=plan, draft=draft, values=values, errors=errors)
    return render_page(request, EDITOR, context, status=refused_status(request, 400))


@admin_page
def price_plan_version_new(request, plan_id: int):
    """A new draft of a plan: a copy of its current version's terms (or `?copy=<version id>`, or `?copy=none`
    for a blank one)."""
    plan = get_object_or_404(PricePlan, pk=plan_id)
    zone = request.user.viewing_timezone
    source = plan.current_version()
    copy = request.GET.get("copy", "")
    if copy == "none":
        source = None
    elif copy.isascii() and copy.isdecimal() and len(copy) < 12:
        source = plan.versions.filter(pk=int(copy)).first() or source
    initial = _values_from_version(source, zone, copy=True) if source is not None else _blank_values(zone)
    return _editor_page(request, plan=plan, draft=None, initial=initial)


@admin_page
def price_plan_version_edit(request, draft_id: int):
    draft = _version(draft_id)
    if draft.status != PricePlanVersion.Status.DRAFT:
        messages.error(request, f"{draft.plan.slug} v{draft.number} is {draft.status}: only a draft can be edited.")
        return redirect("staff-price-plan-version", version_id=draft.pk)
    return _editor_page(
        request, plan=draft.plan, draft=draft, initial=_values_from_version(draft, request.user.viewing_timezone)
    )


@admin_page
def price_plan_version_validate(request, plan_id: int):
    """htmx, as the admin types: the errors beside each field (out-of-band) and the price curve, from the
    same parser the save uses. Nothing is written."""
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    plan = get_object_or_404(PricePlan, pk=plan_id)
    draft = None
    draft_id = request.POST.get("draft_id", "")
    if draft_id.isascii() and draft_id.isdecimal() and len(draft_id) < 12:
        draft = plan.versions.filter(pk=int(draft_id)).first()
    values = _values_from_post(request.POST)
    _, errors = _validate(values, request.user.viewing_timezone)
    context = _editor_context(request, plan=plan, draft=draft, values=values, errors=errors)
    return render_page(request, FEEDBACK, context)
