"""The customer's resolutions: a filtered, keyset-paginated list (newest first) and the CSV export of everything
the filter matches. Both read through `resolution_list_filtered`, which builds on the API's selector."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re

import django_filters
from django import forms
from django.http import HttpResponse, StreamingHttpResponse
from django.urls import reverse
from django.utils.cache import patch_vary_headers
from django.utils.http import urlencode

from accounts.pages import customer_page, page_number, render_page
from billing_portal.money import format_major

from ..models import Resolution
from ..selectors import (
    DATE_MAX,
    DATE_MIN,
    resolution_export_chunks,
    resolution_list_filtered,
    resolution_page_get,
)

PAGE_SIZE = 50
EXPORT_CHUNK_ROWS = 5000
EXPORT_HEADER = (
    "id", "conversation_id", "kind", "resolved_at_utc", "funding", "pack_id", "amount", "currency", "voided",
    "voided_at_utc", "void_reason",
)  # fmt: skip
FILTER_KEYS = ("from", "to", "kind", "funding", "voided")
_CURSOR = re.compile(r"^(-?\d{1,19})_(\d{1,19})$")
# A spreadsheet runs a cell that starts like a formula; text from outside (conversation ids, reasons) is
# written with a leading apostrophe then (OWASP's advice for CSV files).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class ResolutionFilterForm(forms.Form):
    def clean(self):
        cleaned = super().clean()
        start, end = cleaned.get("from"), cleaned.get("to")
        for key in ("from", "to"):
            value = cleaned.get(key)
            if value is not None and not DATE_MIN <= value <= DATE_MAX:
                self.add_error(key, f"Give a date between {DATE_MIN:%Y} and {DATE_MAX:%Y}.")
        if start and end and start > end:
            self.add_error("to", "The end date is before the start date: pick an end on or after the start.")
        return cleaned


class ResolutionFilter(django_filters.FilterSet):
    """What the customer narrows the list by; dates are days in the account's timezone, as in
    GET /api/v1/resolutions?from=&to=. Filtering itself is the selector's (one rule for page, CSV and API)."""

    date_from = django_filters.DateFilter(
        label="From (day)", widget=forms.DateInput(attrs={"type": "date"}),
        error_messages={"invalid": "Enter the start date as a date, for example 2026-11-01."},
    )  # fmt: skip
    date_to = django_filters.DateFilter(
        label="To (day)", widget=forms.DateInput(attrs={"type": "date"}),
        error_messages={"invalid": "Enter the end date as a date, for example 2026-11-30."},
    )  # fmt: skip
    kind = django_filters.ChoiceFilter(
        label="Kind", choices=Resolution.Kind.choices, empty_label="Any kind",
        error_messages={"invalid_choice": "Pick a kind from the list: confirmed or assumed."},
    )  # fmt: skip
    funding = django_filters.ChoiceFilter(
        label="Paid by", empty_label="Anything",
        choices=[
            (Resolution.Funding.CREDIT, "Credit pack"), (Resolution.Funding.OVERAGE, "Overage"),
            (Resolution.Funding.UNFUNDED, "Not yet funded"),
        ],
        error_messages={"invalid_choice": "Pick what paid for it from the list: credit, overage or not yet funded."},
    )  # fmt: skip
    voided = django_filters.ChoiceFilter(
        label="Voided", empty_label=None, null_label=None,
        choices=[("all", "Voided or not"), ("no", "Not voided"), ("yes", "Voided only")],
        error_messages={"invalid_choice": "Pick voided, not voided, or both."},
    )  # fmt: skip

    class Meta:
        model = Resolution
        fields: list[str] = []
        form = ResolutionFilterForm

    def __init__(self, data=None, *, account, **kwargs):
        super().__init__(data, queryset=Resolution.objects.none(), **kwargs)
        self.account = account

    @classmethod
    def get_filters(cls):
        # The query keys are the API's `from` and `to` (a Python keyword, hence the attribute names).
        filters = super().get_filters()
        renamed = {"date_from": "from", "date_to": "to"}
        return type(filters)((renamed.get(name, name), f) for name, f in filters.items())

    def filter_queryset(self, queryset):
        data = self.form.cleaned_data
        return resolution_list_filtered(
            account=self.account, date_from=data.get("from"), date_to=data.get("to"), kind=data.get("kind") or "",
            funding=data.get("funding") or "", voided=data.get("voided") or "all",
        )  # fmt: skip

    def query(self) -> dict:
        """The filter as query parameters (only those set), for page links and the export."""
        data = self.form.cleaned_data if self.is_valid() else {}
        query = {}
        for key in FILTER_KEYS:
            value = data.get(key)
            if value and not (key == "voided" and value == "all"):
                query[key] = value.isoformat() if isinstance(value, dt.date) else value
        return query


def _cursor_text(position: tuple[dt.datetime, int]) -> str:
    at, pk = position
    micros = int(at.timestamp()) * 1_000_000 + at.microsecond
    return f"{micros}_{pk}"


def _cursor_parse(text: str | None) -> tuple[dt.datetime, int] | None:
    match = _CURSOR.match(text or "")
    if not match:
        return None
    try:
        at = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=int(match[1]))
    except OverflowError:
        return None
    return at, int(match[2])


@customer_page
def resolution_list_page(request):
    account = request.account
    filterset = ResolutionFilter(request.GET, account=account)
    context = {"account": account, "filterset": filterset, "form": filterset.form, "page": None, "notice": ""}
    if filterset.is_valid():
        older, newer = request.GET.get("older"), request.GET.get("newer")
        older_than, newer_than = _cursor_parse(older), _cursor_parse(newer)
        number = page_number(request.GET.get("page"))
        if (older and older_than is None) or (newer and newer_than is None):
            context["notice"] = "That page link was damaged, so this is the first page."
            number = 1
        elif older_than is None and newer_than is None:
            number = 1
        page = resolution_page_get(
            resolutions=filterset.qs, size=PAGE_SIZE, older_than=older_than, newer_than=newer_than
        )
        if page.newer is None:
            number = 1
        query = filterset.query()
        base = reverse("customer-resolutions")
        context.update({
            "page": page, "page_number": number, "query": query,
            "older_url": f"{base}?{urlencode({**query, 'older': _cursor_text(page.older), 'page': number + 1})}"
            if page.older else "",
            "newer_url": f"{base}?{urlencode({**query, 'newer': _cursor_text(page.newer), 'page': max(number - 1, 1)})}"
            if page.newer else "",
            "export_url": f"{reverse('customer-resolutions-csv')}?{urlencode(query)}" if query
            else reverse("customer-resolutions-csv"),
            "filtered": bool(query),
        })  # fmt: skip
    htmx = getattr(request, "htmx", None)
    # A history restore (back button, cache miss) must get the whole page, not the fragment.
    partial = None if htmx and htmx.history_restore_request else "portal/_resolution_results.html"
    response = render_page(request, "portal/resolutions.html", context, partial=partial)
    patch_vary_headers(response, ("HX-Request",))
    return response


def _spreadsheet_safe(text: str) -> str:
    return "'" + text if text.startswith(_FORMULA_START) else text


def _utc(instant: dt.datetime | None) -> str:
    """ISO 8601 in UTC with a Z. Both database paths return UTC datetimes; another zone is converted."""
    if instant is None:
        return ""
    if instant.tzinfo is not dt.UTC:
        instant = instant.astimezone(dt.UTC)
    return instant.isoformat()[:-6] + "Z"


def _csv_chunks(resolutions, currency: str):
    """The file, a chunk of rows at a time: each chunk is written to a small buffer and handed to the server,
    so the process holds one chunk, never the whole export."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(EXPORT_HEADER)
    upper = currency.upper()
    amounts: dict[int, str] = {}  # an export repeats few amounts (0, the unit price, a tier's shares)

    def amount_text(amount_minor: int) -> str:
        text = amounts.get(amount_minor)
        if text is None:
            text = format_major(amount_minor, currency)
            if len(amounts) < 10_000:
                amounts[amount_minor] = text
        return text

    for chunk in resolution_export_chunks(resolutions=resolutions, chunk_size=EXPORT_CHUNK_ROWS):
        writer.writerows(
            (
                pk, _spreadsheet_safe(conversation_id), kind, _utc(resolved_at), funding,
                pack_id or "", amount_text(amount_minor), upper, "yes" if voided_at else "no", _utc(voided_at),
                _spreadsheet_safe(void_reason) if void_reason else "",
            )
            for resolved_at, pk, conversation_id, kind, funding, pack_id, amount_minor, voided_at, void_reason in chunk
        )  # fmt: skip
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    if buffer.tell():
        yield buffer.getvalue()


@customer_page
def resolution_export_csv(request):
    """Every resolution the filter matches, as CSV (viewers may export too). Streamed: a million rows are
    never in memory at once."""
    account = request.account
    filterset = ResolutionFilter(request.GET, account=account)
    if not filterset.is_valid():
        problems = "; ".join(m for errors in filterset.errors.values() for m in errors)
        return HttpResponse(f"Nothing exported: {problems}\n", status=400, content_type="text/plain; charset=utf-8")
    data = filterset.form.cleaned_data
    start = data["from"].isoformat() if data.get("from") else "first"
    end = data["to"].isoformat() if data.get("to") else "latest"
    filename = f"resolutions-{account.slug}-{start}-to-{end}-times-utc.csv"
    response = StreamingHttpResponse(
        _csv_chunks(filterset.qs, account.currency), content_type="text/csv; charset=utf-8"
    )
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["Cache-Control"] = "private, no-store"
    return response
