"""Operations pages for admins (issue 12): what needs attention, meter reports, reconciliation differences
(resolved with a note), the Stripe sync of price versions and the webhook endpoint, the webhook log and the audit
log. Lists are filtered with django-filter and paginated; a filter that cannot be read is explained on the page
(400), never a 500. Actions call one service each: meter_difference_resolve,
price_plan_version_stripe_sync_retry, stripe_webhook_endpoint_retry."""

from __future__ import annotations

import datetime as dt
import json
import re
import zoneinfo

import django_filters
from django import forms
from django.conf import settings
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.core.validators import RegexValidator
from django.db.models import Case, IntegerField, Q, Value, When
from django.shortcuts import get_object_or_404, redirect
from django.utils import dateformat, timezone
from djstripe.models import WebhookEndpoint, WebhookEventTrigger

from accounts.models import Account, AuditLogEntry, PricePlanVersion, StripeSyncStatus
from accounts.pages import IdempotentForm, admin_page, form_errors_apply, page_number, refused_status, render_page
from accounts.services.stripe_catalog import price_plan_version_stripe_sync_retry
from accounts.services.stripe_webhooks import ENABLED_EVENTS, stripe_webhook_endpoint_retry
from billing_portal import clock
from billing_portal.stripe_client import StripeFailure

from ..models import MeterReconciliationDifference, MeterReport
from ..services.reconciliation import meter_difference_resolve

PAGE_SIZE = 50
WEBHOOK_ATTENTION_DAYS = 30
REPORT_ATTENTION_STATES = (MeterReport.State.PENDING, MeterReport.State.SENT)


# --- filters ---------------------------------------------------------------------------------------------------
class AccountField(forms.CharField):
    """An account named by its id or its slug; an unknown one is an error in plain words."""

    def clean(self, value):
        text = (super().clean(value) or "").strip()
        if not text:
            return None
        if text.isascii() and text.isdecimal() and len(text) < 12:
            account = Account.objects.filter(pk=int(text)).first()
        else:
            account = Account.objects.filter(slug=text[:100]).first()
        if account is None:
            raise ValidationError(f"No account has the id or slug “{text[:100]}”.")
        return account


class AccountFilter(django_filters.Filter):
    field_class = AccountField

    def filter(self, qs, value):
        return qs.filter(**{self.field_name: value}) if value is not None else qs


def _day_start(day: dt.date, zone: str) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), tzinfo=zoneinfo.ZoneInfo(zone))


class DateRangeForm(forms.Form):
    """`from` and `to` days (both included) in order, within years a person means."""

    def clean(self):
        data = super().clean()
        for key in ("from", "to"):
            day = data.get(key)
            if day is not None and not 2000 <= day.year <= 2100:
                self.add_error(key, "Give a day between the years 2000 and 2100.")
        if data.get("from") and data.get("to") and data["from"] > data["to"]:
            self.add_error("to", "The end day is before the start day: pick an end on or after the start.")
        return data


def _choice(label: str, choices, empty: str, what: str, **kwargs) -> django_filters.ChoiceFilter:
    return django_filters.ChoiceFilter(
        label=label, choices=choices, empty_label=empty,
        error_messages={"invalid_choice": f"Pick {what} from the list."}, **kwargs,
    )  # fmt: skip


def _account_filter(field_name: str = "account") -> AccountFilter:
    return AccountFilter(field_name=field_name, label="Account (id or slug)", max_length=200, required=False)


class MeterReportFilter(django_filters.FilterSet):
    state = _choice(
        "State", [("waiting", "On its way (waiting or sent)"), *MeterReport.State.choices], "Any state", "a state",
        method="filter_state",
    )  # fmt: skip
    account = _account_filter()

    class Meta:
        model = MeterReport
        fields: list[str] = []

    def filter_state(self, qs, name, value):
        if value == "waiting":
            return qs.filter(state__in=REPORT_ATTENTION_STATES)
        return qs.filter(state=value) if value else qs


class DifferenceFilter(django_filters.FilterSet):
    state = _choice(
        "State", [("open", "Open"), ("resolved", "Resolved")], "Open and resolved", "open or resolved",
        method="filter_state",
    )  # fmt: skip
    account = _account_filter()

    class Meta:
        model = MeterReconciliationDifference
        fields: list[str] = []

    def filter_state(self, qs, name, value):
        return qs.filter(resolved_at__isnull=value == "open") if value else qs


WEBHOOK_STATUSES = [
    ("processed", "Processed"),
    ("failed", "Not processed (an error, or refused)"),
    ("invalid", "Failed validation"),
]


class WebhookFilter(django_filters.FilterSet):
    type = django_filters.CharFilter(
        label="Event type (e.g. invoice.paid, or invoice. for all invoice events)", method="filter_type",
        max_length=250,
        validators=[RegexValidator(r"^\s*[a-z0-9_.]*\s*$", "An event type has only small letters, digits, dots and "
                                   "underscores, for example invoice.paid.")],
    )  # fmt: skip
    status = _choice("Status", WEBHOOK_STATUSES, "Any status", "a status", method="filter_status")

    class Meta:
        model = WebhookEventTrigger
        fields: list[str] = []

    def filter_type(self, qs, name, value):
        value = value.strip()
        if not value:
            return qs
        prefix = value.endswith(".")
        # A delivery whose processing failed has no Event row (rolled back): its type is only in the body. The
        # regex finds candidates (a "type" may also be nested); the body's own top-level type decides.
        pattern = r'"type":\s*"' + re.escape(value) + (r'[a-z0-9_.]*"' if prefix else '"')
        candidates = WebhookEventTrigger.objects.filter(event__isnull=True, body__regex=pattern)
        in_body = [
            pk for pk, body in candidates.values_list("pk", "body").iterator()
            if (_body_fields(body)[0].startswith(value) if prefix else _body_fields(body)[0] == value)
        ]  # fmt: skip
        by_event = Q(event__type__startswith=value) if prefix else Q(event__type=value)
        return qs.filter(by_event | Q(pk__in=in_body))

    def filter_status(self, qs, name, value):
        if value == "processed":
            return qs.filter(processed=True)
        if value == "failed":
            return qs.filter(processed=False)
        if value == "invalid":
            return qs.filter(valid=False)
        return qs


class AuditFilter(django_filters.FilterSet):
    actor = django_filters.CharFilter(
        label="Actor (user name, or part of it)", field_name="actor_label", lookup_expr="icontains", max_length=200
    )
    account = _account_filter()
    action = django_filters.ChoiceFilter(
        label="Action", empty_label="Any action", choices=[],
        error_messages={"invalid_choice": "Pick an action from the list."},
    )  # fmt: skip
    date_from = django_filters.DateFilter(
        label="From (day)", method="filter_from", widget=forms.DateInput(attrs={"type": "date"}),
        error_messages={"invalid": "Give the start day as a date, for example 2026-11-01."},
    )  # fmt: skip
    date_to = django_filters.DateFilter(
        label="To (day)", method="filter_to", widget=forms.DateInput(attrs={"type": "date"}),
        error_messages={"invalid": "Give the end day as a date, for example 2026-11-30."},
    )  # fmt: skip

    class Meta:
        model = AuditLogEntry
        fields: list[str] = []
        form = DateRangeForm

    def __init__(self, data=None, *, zone: str, **kwargs):
        super().__init__(data, **kwargs)
        self.zone = zone
        actions = AuditLogEntry.objects.order_by("action").values_list("action", flat=True).distinct()
        self.filters["action"].extra["choices"] = [(a, a) for a in actions]

    @classmethod
    def get_filters(cls):
        filters = super().get_filters()  # the query keys are `from` and `to` (a Python keyword)
        renamed = {"date_from": "from", "date_to": "to"}
        return type(filters)((renamed.get(name, name), f) for name, f in filters.items())

    def filter_from(self, qs, name, value):
        return qs.filter(created_at__gte=_day_start(value, self.zone))

    def filter_to(self, qs, name, value):
        return qs.filter(created_at__lt=_day_start(value + dt.timedelta(days=1), self.zone))


def _list_page(request, filterset, template: str, context: dict, *, order: tuple):
    """The filtered, paginated list, or (the filter unreadable) its errors with nothing listed, as a 400."""
    query = request.GET.copy()
    query.pop("page", None)
    context = {**context, "filterset": filterset, "form": filterset.form, "query": query.urlencode(), "page": None,
               "filtered": any(v for k, v in request.GET.items() if k != "page")}  # fmt: skip
    if not filterset.is_valid():
        return render_page(request, template, context, status=refused_status(request, 400))
    rows = filterset.qs.order_by(*order)
    context["page"] = Paginator(rows, PAGE_SIZE).get_page(page_number(request.GET.get("page")))
    context["shown"] = True  # the filter was read: the list (perhaps empty, then saying so) is shown
    return render_page(request, template, context)


# --- the index: what needs attention ---------------------------------------------------------------------------
def _webhooks_unrecovered(since: dt.datetime) -> int:
    """Deliveries since `since` that were not processed and whose event no later delivery processed (Stripe
    delivers a failed event again: one that went through the second time needs no one)."""
    failed = [
        event_id or _body_fields(body)[1]
        for event_id, body in WebhookEventTrigger.objects.filter(processed=False, created__gte=since)
        .values_list("event_id", "body")
        .iterator()
    ]
    recovered = set(
        WebhookEventTrigger.objects.filter(processed=True, event_id__in={e for e in failed if e}).values_list(
            "event_id", flat=True
        )
    )
    return sum(1 for event_id in failed if not event_id or event_id not in recovered)


@admin_page
def ops_index(request):
    since = clock.now() - dt.timedelta(days=WEBHOOK_ATTENTION_DAYS)
    reports = MeterReport.objects
    items = [
        ("Meter reports waiting to reach Stripe (pending or sent)", "staff-ops-meter-reports", "state=waiting",
         reports.filter(state__in=REPORT_ATTENTION_STATES).count(), "None are waiting."),
        ("Meter reports rejected by Stripe", "staff-ops-meter-reports", "state=rejected",
         reports.filter(state=MeterReport.State.REJECTED).count(), "None were rejected."),
        ("Changes too late for the meter (need a credit note or invoice item)", "staff-ops-meter-reports",
         "state=adjustment", reports.filter(state=MeterReport.State.ADJUSTMENT).count(), "None."),
        ("Open reconciliation differences", "staff-ops-reconciliation", "state=open",
         MeterReconciliationDifference.objects.filter(resolved_at__isnull=True).count(), "The figures agree."),
        ("Price versions whose Stripe sync failed", "staff-ops-stripe-sync", "",
         PricePlanVersion.objects.filter(stripe_sync_status=StripeSyncStatus.FAILED).count(), "None failed."),
        (f"Webhook deliveries not processed and not delivered again since (last {WEBHOOK_ATTENTION_DAYS} days)",
         "staff-ops-webhooks", "status=failed", _webhooks_unrecovered(since), "None."),
    ]  # fmt: skip
    keys = ("label", "url_name", "query", "count", "calm")
    context = {"items": [dict(zip(keys, item, strict=True)) for item in items]}
    return render_page(request, "portal/ops/index.html", context)


# --- meter reports ---------------------------------------------------------------------------------------------
REPORT_ORDER = Case(
    When(state=MeterReport.State.REJECTED, then=Value(0)),
    When(state=MeterReport.State.ADJUSTMENT, then=Value(1)),
    When(state=MeterReport.State.SENT, then=Value(2)),
    When(state=MeterReport.State.PENDING, then=Value(3)),
    default=Value(4),
    output_field=IntegerField(),
)


@admin_page
def ops_meter_reports(request):
    reports = MeterReport.objects.select_related("account", "window").annotate(rank=REPORT_ORDER)
    filterset = MeterReportFilter(request.GET, queryset=reports)
    return _list_page(request, filterset, "portal/ops/meter_reports.html", {}, order=("rank", "-created_at", "-pk"))


# --- reconciliation differences --------------------------------------------------------------------------------
@admin_page
def ops_reconciliation(request):
    rows = MeterReconciliationDifference.objects.select_related("account", "resolved_by").annotate(
        rank=Case(When(resolved_at__isnull=True, then=Value(0)), default=Value(1), output_field=IntegerField())
    )
    filterset = DifferenceFilter(request.GET, queryset=rows)
    return _list_page(request, filterset, "portal/ops/reconciliation.html", {},
                      order=("rank", "-period_start", "-pk"))  # fmt: skip


class ResolveForm(IdempotentForm):
    # The two figures the admin read: a run that changed them since makes the service refuse.
    portal = forms.IntegerField(
        widget=forms.HiddenInput, error_messages={"invalid": "Reload the page and resolve again."}
    )
    stripe = forms.IntegerField(
        widget=forms.HiddenInput, error_messages={"invalid": "Reload the page and resolve again."}
    )
    note = forms.CharField(
        label="Note (why these figures are accepted; kept in the audit log)", max_length=2000,
        widget=forms.Textarea(attrs={"rows": 3}),
        error_messages={"required": "Write a note saying why these figures are accepted."},
    )  # fmt: skip

    @property
    def stale(self) -> bool:
        """A hidden field is missing or altered: the page that drew the form is out of date."""
        return any(field.errors for field in self.hidden_fields())


@admin_page
def ops_difference_resolve(request, difference_id: int):
    difference = get_object_or_404(
        MeterReconciliationDifference.objects.select_related("account", "resolved_by"), pk=difference_id
    )
    form = ResolveForm(
        request.POST if request.method == "POST" else None,
        initial={"portal": difference.portal, "stripe": difference.stripe},
    )
    context = {"difference": difference, "form": form}
    if request.method != "POST":
        return render_page(request, "portal/ops/difference_resolve.html", context)
    if not form.is_valid():
        return render_page(request, "portal/ops/difference_resolve.html", context, status=refused_status(request, 400))
    try:
        meter_difference_resolve(
            difference=difference, actor=request.user, note=form.cleaned_data["note"],
            key=form.cleaned_data["idempotency_key"],
            figures=(form.cleaned_data["portal"], form.cleaned_data["stripe"]),
        )  # fmt: skip
    except ValidationError as exc:
        form_errors_apply(form, exc)
        return render_page(request, "portal/ops/difference_resolve.html", context, status=refused_status(request, 400))
    start = timezone.localtime(difference.period_start)
    messages.success(
        request, f"The difference of {difference.account.name} (period from {start.day} {start:%b %Y}) is "
        "resolved: reconciliation accepts these figures and will open a new difference only if they change.",
    )  # fmt: skip
    return redirect("staff-ops-reconciliation")


# --- Stripe sync: price versions and the webhook endpoint ------------------------------------------------------
SYNC_ORDER = Case(
    When(stripe_sync_status=StripeSyncStatus.FAILED, then=Value(0)),
    When(stripe_sync_status=StripeSyncStatus.PENDING, then=Value(1)),
    default=Value(2),
    output_field=IntegerField(),
)


@admin_page
def ops_stripe_sync(request):
    versions = (
        PricePlanVersion.objects.exclude(status=PricePlanVersion.Status.DRAFT)  # a draft has no Stripe Prices
        .select_related("plan")
        .prefetch_related("offers")
        .annotate(rank=SYNC_ORDER)
        .order_by("rank", "plan__slug", "-number")
    )
    page = Paginator(versions, PAGE_SIZE).get_page(page_number(request.GET.get("page")))
    endpoints = list(WebhookEndpoint.objects.order_by("-created"))
    context = {
        "page": page, "endpoints": endpoints, "enabled_events": ENABLED_EVENTS,
        "base_url": settings.PORTAL_BASE_URL.rstrip("/"), "api_base": settings.STRIPE_API_BASE,
        "expected": [e for e in endpoints if e.url.startswith(settings.PORTAL_BASE_URL.rstrip("/") + "/")],
    }  # fmt: skip
    return render_page(request, "portal/ops/stripe_sync.html", context)


@admin_page
def ops_version_sync_retry(request, version_id: int):
    version = get_object_or_404(PricePlanVersion.objects.select_related("plan"), pk=version_id)
    if request.method != "POST":
        return redirect("staff-ops-stripe-sync")
    was = version.stripe_sync_status
    try:
        price_plan_version_stripe_sync_retry(version=version, actor=request.user)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        if was == StripeSyncStatus.PENDING:
            messages.info(request, f"The Stripe sync of {version.plan.slug} v{version.number} is already queued.")
        else:
            messages.success(request, f"The Stripe sync of {version.plan.slug} v{version.number} is queued again.")
    return redirect("staff-ops-stripe-sync")


@admin_page
def ops_webhook_endpoint_retry(request):
    if request.method != "POST":
        return redirect("staff-ops-stripe-sync")
    try:
        endpoint = stripe_webhook_endpoint_retry(actor=request.user)
    except StripeFailure as exc:
        messages.error(request, f"Stripe did not answer as expected, nothing was changed: {exc}")
    except ValidationError as exc:  # another registration is running
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, f"The webhook endpoint {endpoint.id} is registered in Stripe for {endpoint.url}.")
    return redirect("staff-ops-stripe-sync")


# --- the webhook log -------------------------------------------------------------------------------------------
def _body_fields(text: str) -> tuple[str, str, dt.datetime | None]:
    """The type, id and creation time Stripe put in a delivery's body (all a failed one has: no Event row)."""
    try:
        body = json.loads(text or "{}")
    except (ValueError, RecursionError):
        return "", "", None
    if not isinstance(body, dict):
        return "", "", None
    created = body.get("created")
    try:
        when = dt.datetime.fromtimestamp(int(created), tz=dt.UTC) if created is not None else None
    except (TypeError, ValueError, OverflowError, OSError):
        when = None
    return str(body.get("type") or "")[:250], str(body.get("id") or "")[:255], when


@admin_page
def ops_webhooks(request):
    triggers = WebhookEventTrigger.objects.select_related("event", "webhook_endpoint")
    filterset = WebhookFilter(request.GET, queryset=triggers)
    response = _list_page(request, filterset, "portal/ops/webhooks.html", {}, order=("-created", "-pk"))
    page = response.context_data["page"]
    if page is not None:
        rows = list(page.object_list)
        for trigger in rows:
            body_type, body_id, body_created = _body_fields(trigger.body)
            trigger.type_shown = trigger.event.type if trigger.event else body_type
            trigger.event_shown = trigger.event_id or body_id
            trigger.created_shown = trigger.event.created if trigger.event else body_created
        unprocessed = {t.event_shown for t in rows if not t.processed and t.event_shown}
        later = {}  # event id -> when a later delivery of it was processed
        for event_id, created in (
            WebhookEventTrigger.objects.filter(event_id__in=unprocessed, processed=True)
            .order_by("created")
            .values_list("event_id", "created")
        ):
            later.setdefault(event_id, created)
        for trigger in rows:
            shown = later.get(trigger.event_shown)
            trigger.processed_later = shown if shown and shown >= trigger.created else None
        response.context_data["rows"] = rows
    return response


# --- the audit log ---------------------------------------------------------------------------------------------
ISO_INSTANT = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?([+-]\d{2}:\d{2}|Z)$")


def _shown(value) -> str:
    """One recorded value for a person: text as it is, an instant in the viewer's zone, nothing as a dash,
    lists and objects as compact JSON."""
    if value is None or value == "":
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str) and ISO_INSTANT.match(value):
        try:
            return dateformat.format(timezone.localtime(dt.datetime.fromisoformat(value)), "j M Y H:i:s T")
        except ValueError:
            return value
    if isinstance(value, str | int | float):
        return str(value)
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def _changes(before, after) -> list[dict]:
    """Before and after as rows of (what, before, after, changed): one row per key of either object, those that
    changed first, then by name (jsonb keeps no order); a value that is not an object is one row."""
    if before in (None, {}, []) and after in (None, {}, []):
        return []
    if isinstance(before, dict | type(None)) and isinstance(after, dict | type(None)):
        before, after = before or {}, after or {}
        rows = [
            {"what": key.replace("_", " "), "before": _shown(before.get(key)) if key in before else "",
             "after": _shown(after.get(key)) if key in after else "",
             "changed": key in before and key in after and before[key] != after[key]}
            for key in sorted({*before, *after})
        ]  # fmt: skip
        return sorted(rows, key=lambda row: not row["changed"])
    return [{"what": "value", "before": _shown(before), "after": _shown(after), "changed": before != after}]


@admin_page
def ops_audit(request):
    entries = AuditLogEntry.objects.select_related("actor", "account")
    filterset = AuditFilter(request.GET, queryset=entries, zone=request.user.viewing_timezone)
    response = _list_page(request, filterset, "portal/ops/audit.html", {"zone": request.user.viewing_timezone},
                          order=("-created_at", "-pk"))  # fmt: skip
    page = response.context_data["page"]
    if page is not None:
        rows = list(page.object_list)
        for entry in rows:
            entry.changes = _changes(entry.before, entry.after)
        response.context_data["rows"] = rows
    return response
