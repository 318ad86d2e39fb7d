"""Admin pages for plan migrations (issue 12): schedule accounts to move to a published version at a billing
period start (form → preview of each account's start → confirm, the form's key making a double submit one
schedule), list the moves with where each stands, cancel a scheduled one, retry one Stripe refused. The rules
are in accounts/services/plan_migrations.py; these pages only call it."""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db.models import Case, IntegerField, Q, Value, When
from django.shortcuts import get_object_or_404, redirect

from accounts.models import Account, PlanMigration, PricePlanVersion
from accounts.pages import (
    IdempotentForm,
    VersionChoice,
    admin_page,
    form_errors_apply,
    page_number,
    refused_status,
    render_page,
)
from accounts.services.plan_migrations import (
    CHANGE_CUTOFF,
    plan_migration_cancel,
    plan_migration_retry,
    plan_migrations_preview,
    plan_migrations_schedule,
)
from billing_portal import clock

PAGE_SIZE = 50
MAX_LISTED_ACCOUNTS = 1000
STATUS_ORDER = Case(
    When(status=PlanMigration.Status.FAILED, then=Value(0)),
    When(status=PlanMigration.Status.SWITCHING, then=Value(1)),
    When(status=PlanMigration.Status.SCHEDULED, then=Value(2)),
    default=Value(3),
    output_field=IntegerField(),
)


def _published_versions():
    return PricePlanVersion.objects.filter(status=PricePlanVersion.Status.PUBLISHED).select_related("plan")


class ScheduleForm(IdempotentForm):
    to_version = VersionChoice(
        queryset=PricePlanVersion.objects.none(), label="Move to",
        error_messages={"required": "Choose the published version to move to.",
                        "invalid_choice": "Choose one of the published versions."},
    )  # fmt: skip
    who = forms.ChoiceField(
        choices=[("accounts", "These accounts"), ("version", "Every account on a version")], initial="accounts",
        label="Which accounts",
    )  # fmt: skip
    accounts = forms.CharField(
        required=False, label="Accounts (ids or slugs, separated by commas, spaces or lines)",
        widget=forms.Textarea(attrs={"rows": 3}), max_length=20_000,
    )  # fmt: skip
    from_version = VersionChoice(
        queryset=PricePlanVersion.objects.none(), required=False, label="Every account now on",
        error_messages={"invalid_choice": "Choose one of the versions."},
    )  # fmt: skip
    not_before = forms.DateField(
        required=False, label="Not before (optional: the first period start on or after this date)",
        widget=forms.DateInput(attrs={"type": "date"}),
        error_messages={"invalid": "Give a date such as 2027-01-01."},
    )  # fmt: skip
    reason = forms.CharField(required=False, max_length=500, label="Reason (kept in the audit log)")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["to_version"].queryset = _published_versions()
        self.fields["from_version"].queryset = PricePlanVersion.objects.exclude(
            status=PricePlanVersion.Status.DRAFT
        ).select_related("plan")

    def clean(self):
        data = super().clean()
        if data.get("who") == "version":
            if not data.get("from_version"):
                self.add_error("from_version", "Choose the version whose accounts move.")
            return data
        tokens = [t for t in re.split(r"[\s,;]+", data.get("accounts") or "") if t]
        if not tokens:
            self.add_error("accounts", "Name at least one account by its id or slug.")
            return data
        if len(tokens) > MAX_LISTED_ACCOUNTS:
            self.add_error("accounts", f"At most {MAX_LISTED_ACCOUNTS:,} accounts at once (or move a whole version).")
            return data
        ids = [int(t) for t in tokens if t.isascii() and t.isdecimal() and len(t) < 12]
        slugs = [t for t in tokens if not (t.isascii() and t.isdecimal())]
        found = list(Account.objects.filter(Q(pk__in=ids) | Q(slug__in=slugs)).select_related("plan_version"))
        known = {str(a.pk) for a in found} | {a.slug for a in found}
        unknown = [t for t in tokens if t not in known]
        if unknown:
            self.add_error("accounts", f"No account has the id or slug {', '.join(unknown[:10])}.")
        data["account_list"] = found
        return data

    def not_before_instant(self, zone: str) -> dt.datetime | None:
        day = self.cleaned_data.get("not_before")
        return dt.datetime.combine(day, dt.time(), tzinfo=zoneinfo.ZoneInfo(zone)) if day else None


def _schedule_kwargs(form: ScheduleForm, request) -> dict:
    data = form.cleaned_data
    kwargs = {
        "to_version": data["to_version"], "actor": request.user, "batch_key": data["idempotency_key"],
        "not_before": form.not_before_instant(request.user.viewing_timezone),
        "reason": data.get("reason") or "",
    }  # fmt: skip
    if data.get("who") == "version":
        kwargs["from_version"] = data["from_version"]
    else:
        kwargs["accounts"] = data["account_list"]
    return kwargs


def _preview(form: ScheduleForm, request) -> list:
    """Each account's start (or why it cannot move), as scheduling would decide now; nothing is written."""
    kwargs = _schedule_kwargs(form, request)
    for key in ("actor", "batch_key", "reason"):
        kwargs.pop(key)
    return sorted(plan_migrations_preview(**kwargs), key=lambda p: p.account.name.lower())


@admin_page
def plan_migration_list(request):
    status = request.GET.get("status", "")
    moves = PlanMigration.objects.select_related("account", "from_version__plan", "to_version__plan", "created_by")
    if status in PlanMigration.Status.values:
        moves = moves.filter(status=status)
    else:
        status = ""
    moves = moves.annotate(rank=STATUS_ORDER).order_by("rank", "effective_at", "account__name", "pk")
    page = Paginator(moves, PAGE_SIZE).get_page(page_number(request.GET.get("page")))
    now = clock.now()
    context = {
        "page": page, "status": status, "statuses": PlanMigration.Status.choices, "now": now,
        "cancel_until": CHANGE_CUTOFF, "cancellable": {m.pk for m in page if m.status == "failed" or (
            m.status == "scheduled" and m.effective_at - now > CHANGE_CUTOFF)},
    }  # fmt: skip
    return render_page(request, "portal/pricing/plan_migrations.html", context)


@admin_page
def plan_migration_new(request):
    if request.method != "POST":
        initial = {}
        version = request.GET.get("version", "")
        if version.isascii() and version.isdecimal() and len(version) < 12:
            initial["to_version"] = _published_versions().filter(pk=int(version)).first()
        form = ScheduleForm(initial=initial)
        return render_page(request, "portal/pricing/plan_migration_new.html", {"form": form, "step": "form"})
    form = ScheduleForm(request.POST)
    step = request.POST.get("step", "preview")
    if not form.is_valid():
        return render_page(request, "portal/pricing/plan_migration_new.html", {"form": form, "step": "form"},
                           status=refused_status(request, 400))  # fmt: skip
    if step != "confirm":
        rows = _preview(form, request)
        context = {"form": form, "step": "preview", "rows": rows, "movable": sum(1 for r in rows if not r.skip)}
        return render_page(request, "portal/pricing/plan_migration_new.html", context)
    try:
        result = plan_migrations_schedule(**_schedule_kwargs(form, request))
    except ValidationError as exc:
        form_errors_apply(form, exc)
        return render_page(request, "portal/pricing/plan_migration_new.html", {"form": form, "step": "form"},
                           status=refused_status(request, 400))  # fmt: skip
    text = f"{len(result.scheduled)} account(s) scheduled to move to {form.cleaned_data['to_version']}."
    if result.skipped:
        text += f" {len(result.skipped)} skipped: " + "; ".join(f"{a.name} ({why})" for a, why in result.skipped[:5])
    messages.success(request, text)
    return redirect("staff-plan-migrations")


def _act(request, migration_id: int, action, done: str):
    migration = get_object_or_404(PlanMigration.objects.select_related("account", "to_version__plan"), pk=migration_id)
    if request.method != "POST":
        return render_page(request, "portal/pricing/plan_migration_confirm.html",
                           {"migration": migration, "action": done})  # fmt: skip
    if request.POST.get("confirm") != "yes":
        return redirect("staff-plan-migrations")
    try:
        action(migration=migration, actor=request.user)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, f"The move of {migration.account.name} to {migration.to_version} was {done}.")
    return redirect("staff-plan-migrations")


@admin_page
def plan_migration_cancel_form(request, migration_id: int):
    return _act(request, migration_id, plan_migration_cancel, "cancelled")


@admin_page
def plan_migration_retry_form(request, migration_id: int):
    return _act(request, migration_id, plan_migration_retry, "sent to Stripe again")
